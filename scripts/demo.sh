#!/usr/bin/env bash
# The demo: build certgate, bootstrap a development PKI, start an echo upstream, certgate on
# the embedded store and Envoy 1.40 in front, then print curl commands to try.
# Ctrl-C stops everything. DEMO_SMOKE=1 runs the curls itself and exits (used by the tests).
# DEMO_MODE=module runs certgate inside Envoy instead (the dynamic module libcertgate_envoy.so
# and envoy/module.yaml): no certgate server, the same answers.
# Ports can be changed with DEMO_PORT, UPSTREAM_PORT, ENVOY_ADMIN_PORT, GRPC_PORT, ADMIN_PORT,
# ADMIN_API_PORT (the admin gRPC API the remote CLI calls; ext_authz mode only).
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_PORT=${DEMO_PORT:-8443}
UPSTREAM_PORT=${UPSTREAM_PORT:-8080}
ENVOY_ADMIN_PORT=${ENVOY_ADMIN_PORT:-9902}
GRPC_PORT=${GRPC_PORT:-9001}
ADMIN_PORT=${ADMIN_PORT:-9901}
ADMIN_API_PORT=${ADMIN_API_PORT:-9443}
SMOKE=${DEMO_SMOKE:-0}
MODE=${DEMO_MODE:-ext_authz}
case $MODE in ext_authz | module) ;; *) echo "DEMO_MODE is ext_authz or module" >&2; exit 2 ;; esac
PKI=demo-pki

bash scripts/setup.sh >/dev/null
if [ "$SMOKE" = 1 ]; then
  # --all-targets: the same feature set as the test build, so nothing is rebuilt.
  profile=debug; cargo build --quiet --all-targets
  if [ "$MODE" = module ]; then cargo build --quiet -p certgate-envoy; fi
else
  profile=release; echo "building certgate (release)…"; cargo build --release --quiet
  if [ "$MODE" = module ]; then cargo build --release --quiet -p certgate-envoy; fi
fi
CERTGATE="$PWD/target/$profile/certgate"

"$CERTGATE" bootstrap --out-dir "$PKI" --force \
  --grpc-listen "127.0.0.1:$GRPC_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --admin-api-listen "127.0.0.1:$ADMIN_API_PORT" >/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

python3 scripts/echo-upstream.py "$UPSTREAM_PORT" & pids+=($!)
render() {
  sed -e "s|{{LISTEN_PORT}}|$DEMO_PORT|; s|{{ENVOY_ADMIN_PORT}}|$ENVOY_ADMIN_PORT|" \
      -e "s|{{SERVER_CERT}}|$PWD/$PKI/server.pem|; s|{{SERVER_KEY}}|$PWD/$PKI/server-key.pem|" \
      -e "s|{{CA_BUNDLE}}|$PWD/$PKI/ca.pem|; s|{{TRUST_CHAIN_VERIFICATION}}|VERIFY_TRUST_CHAIN|" \
      -e "s|{{CERTGATE_ADDRESS}}|socket_address: {address: 127.0.0.1, port_value: $GRPC_PORT}|" \
      -e "s|{{UPSTREAM_PORT}}|$UPSTREAM_PORT|; s|{{INCLUDE_PEER_CERTIFICATE}}|true|" \
      -e "s|{{FORWARD_CLIENT_CERT_DETAILS}}|SANITIZE|; s|{{NORMALIZE_PATH}}|true|" \
      -e "s|{{CERTGATE_CONFIG}}|$PWD/$PKI/certgate.yaml|; s|{{MODULE_OPTIONS}}||" \
      -e "s|{{ESCAPED_SLASHES_ACTION}}|UNESCAPE_AND_REDIRECT|" -e "s|{{OTLP_PORT}}|4317|" -e "s|{{TRACE_SAMPLING}}|0|" \
      -e "s|{{ADMIN_ROUTE_CONTEXT}}|{policy: admin}|" "$1" >"$PKI/envoy.yaml"
}
if [ "$MODE" = module ]; then
  # certgate runs inside Envoy: its logs are in envoy.log, its admin port is the module's.
  render envoy/module.yaml
  export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$PWD/target/$profile"
  : >"$PKI/certgate.log"
else
  "$CERTGATE" --log-format text serve --config "$PKI/certgate.yaml" 2>"$PKI/certgate.log" & pids+=($!)
  render envoy/front-proxy.yaml
fi
.venv/bin/envoy -c "$PKI/envoy.yaml" --concurrency 1 --log-level warn --disable-hot-restart \
  >"$PKI/envoy-access.log" 2>"$PKI/envoy.log" & pids+=($!)

for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null &&
     curl -sf "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready" >/dev/null; then ready=1; break; fi
  sleep 0.2
done
if [ "${ready:-0}" != 1 ]; then
  echo "demo did not start; logs:" >&2; tail -20 "$PKI/certgate.log" "$PKI/envoy.log" >&2; exit 1
fi

C="curl -s --cacert $PKI/ca.pem"
ADMIN="--cert $PKI/admin.pem --key $PKI/admin-key.pem"

# Envoy connects to certgate on the first request; wait until a request goes all the way
# through (a cold first check on a busy machine can exceed Envoy's 0.5s ext_authz timeout).
for _ in $(seq 1 50); do
  [ "$($C $ADMIN -o /dev/null -w '%{http_code}' "https://localhost:$DEMO_PORT/healthz")" != 503 ] && break
  sleep 0.2
done
WORKER="--cert $PKI/worker.pem --key $PKI/worker-key.pem"
URL="https://localhost:$DEMO_PORT"
CG="$CERTGATE principal --config $PKI/certgate.yaml"
# The same commands through the admin API, as an operator on another machine runs them: the
# operator's client certificate instead of the configuration and the store.
REMOTE="--server https://localhost:$ADMIN_API_PORT --cacert $PKI/ca.pem --client-cert $PKI/operator.pem --client-key $PKI/operator-key.pem"

if [ "$SMOKE" = 1 ]; then
  status() { $C -o /dev/null -w '%{http_code}' "$@"; }
  expect() { local want=$1 what=$2; shift 2; local got; got=$(status "$@")
    if [ "$got" = "$want" ]; then echo "ok   $what → $got"; else echo "FAIL $what → $got (want $want)"; fail=1; fi; }
  fail=0
  expect 200 "admin GET /api/hello" $ADMIN "$URL/api/hello"
  expect 200 "worker GET /api/jobs" $WORKER "$URL/api/jobs"
  expect 403 "worker GET /admin/users" $WORKER "$URL/admin/users"
  expect 401 "no certificate" "$URL/api/hello"
  $CG suspend worker-1@example.com --reason "demo: compromised laptop" >/dev/null
  sleep 2.5   # the store cache TTL in the bootstrapped config is 2s
  expect 401 "suspended worker" $WORKER "$URL/api/jobs"
  $CG activate worker-1@example.com >/dev/null
  sleep 2.5
  expect 200 "re-activated worker" $WORKER "$URL/api/jobs"
  if [ "$MODE" = ext_authz ]; then
    # shellcheck disable=SC2086
    "$CERTGATE" principal suspend worker-1@example.com --reason "demo: remote suspension" $REMOTE >/dev/null
    sleep 2.5
    expect 401 "worker suspended through the admin API" $WORKER "$URL/api/jobs"
    # shellcheck disable=SC2086
    "$CERTGATE" principal activate worker-1@example.com $REMOTE >/dev/null
  fi
  exit "$fail"
fi

cat <<EOT

certgate demo is running ($MODE mode): Envoy on $URL, certgate admin :$ADMIN_PORT.
Logs: $PKI/certgate.log, $PKI/envoy.log, access log $PKI/envoy-access.log.  Try (from $(pwd)):

  # allowed: the echo upstream shows the identity headers certgate added
  $C $ADMIN $URL/api/hello

  # no client certificate: 401 no_client_certificate
  $C $URL/api/hello

  # the worker on an admin route: 403 (policy 'admin' admits 7-day admin certificates only)
  $C $WORKER $URL/admin/users

  # suspend the worker, and within 2s its requests get 401 principal_suspended
  $CG suspend worker-1@example.com --reason "Compromised credentials detected"
  $C $WORKER $URL/api/jobs
  $CG activate worker-1@example.com

  # the same suspension from an operator's laptop, through the admin API (mTLS, no store access)
  $CERTGATE principal suspend worker-1@example.com --reason "Compromised credentials detected" $REMOTE
  $C $WORKER $URL/api/jobs
  $CERTGATE principal activate worker-1@example.com $REMOTE

  # dry-run a decision, and the metrics
  $CERTGATE check --config $PKI/certgate.yaml --cert $PKI/worker.pem --path /admin/users --policy admin
  curl -s http://127.0.0.1:$ADMIN_PORT/metrics | grep certgate_decisions_total

Press Ctrl-C to stop.
EOT
wait
