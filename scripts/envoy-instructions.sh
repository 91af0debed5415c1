#!/usr/bin/env bash
# Instructions per request through Envoy 1.40 (--concurrency 1) under callgrind: a number that
# does not move with the load on a shared machine, for before/after comparisons of the module's
# per-request cost. The listener and routes are envoy/bench/front-proxy.yaml's, as
# `cargo xtask bench envoy` renders them; CONFIG is one of
#   none        no authorization filter, XFCC sanitized (the bench's `none` row)
#   none-xfcc   no authorization filter, Envoy writing XFCC with the certificate (SANITIZE_SET)
#   module      certgate as the dynamic module (SANITIZE_SET, the bench's `certgate-module` row)
#   trivial-module  module/examples/trivial_module.rs, a module deciding nothing (SANITIZE_SET,
#               the bench's `trivial-module` row; cargo build --release -p certgate-envoy
#               --example trivial_module)
#   trivial     ext_authz gRPC to examples/trivial_authz.rs (the bench's `trivial` row)
#   certgate    ext_authz gRPC to `certgate serve` over TCP (the bench's `certgate` row)
# REQUESTS keep-alive requests (curl, one connection, the bench's admin certificate and path)
# are counted after WARMUP others; the callgrind profile stays in OUT for callgrind_annotate.
# IDENTITY=headers_only|metadata_only sets certgate's `response.identity` (certgate, module);
# RESPONSE adds other `response:` entries, e.g. RESPONSE='identity_headers: [principal, roles],
# remove_identity_headers: when_sent'. TRIVIAL_ARGS are the trivial server's flags
# (`--identity-headers`: it answers with certgate's six identity headers and one removal;
# `--answer=PARTS` with chosen parts, see examples/trivial_authz.rs).
# MEASURE=authz (trivial, certgate) counts the ext_authz server's instructions per check
# instead, with Envoy run natively: one process under callgrind at a time, so neither figure
# includes the other's slowdown.
# Usage: scripts/envoy-instructions.sh CONFIG [OUT]   (binaries from RELEASE_DIR, default
# target/release; needs a release build:
#   cargo build --release --bin certgate --example upstream --example trivial_authz
#   cargo build --release -p certgate-envoy   (the module: a separate command, as cargo
#     reports no bin `certgate` in certgate-envoy when the two are combined))
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: $0 none|none-xfcc|module|trivial-module|trivial|certgate [OUT]}
measure=${MEASURE:-envoy}
out=${2:-$(mktemp -d /tmp/envoy-instructions.XXXXXX)}
requests=${REQUESTS:-2000}
warmup=${WARMUP:-200}
release=${RELEASE_DIR:-${CARGO_TARGET_DIR:-target}/release}
envoy=${ENVOY_BIN:-.venv/bin/envoy}
if ! nm -D "$envoy" >/dev/null 2>&1; then
  envoy=$("$(dirname "$envoy")/python3" -c \
    'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
fi
mkdir -p "$out"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listen=$(port) admin=$(port) upstream=$(port) grpc=$(port) certgate_admin=$(port)

"$release/certgate" bootstrap --out-dir "$out/pki" --grpc-listen "127.0.0.1:$grpc" \
  --admin-listen "127.0.0.1:$certgate_admin" >/dev/null
response=${IDENTITY:+identity: $IDENTITY}
[ -n "${RESPONSE:-}" ] && response=${response:+$response, }$RESPONSE
[ -n "$response" ] && printf '\nresponse: {%s}\n' "$response" >>"$out/pki/certgate.yaml"

filter="" route="" fccd=SANITIZE modules=$release
case $config in
  none) ;;
  none-xfcc) fccd=SANITIZE_SET ;;
  module) filter=envoy/bench/module.yaml route=envoy/bench/module-route.yaml fccd=SANITIZE_SET ;;
  trivial-module) filter=envoy/bench/trivial-module.yaml fccd=SANITIZE_SET modules=$release/examples ;;
  trivial | certgate) filter=envoy/bench/ext_authz.yaml ;;
  *) echo "unknown CONFIG $config" >&2; exit 2 ;;
esac
case $measure:$config in
  envoy:* | authz:trivial | authz:certgate) ;;
  *) echo "MEASURE=$measure: envoy, or authz with trivial|certgate" >&2; exit 2 ;;
esac
# Each {{AUTHZ_FILTER}} / {{ROUTE_FILTER_CONFIG}} line becomes its fragment at that indentation.
fragment() { [ -n "$2" ] && grep -v -e '^\s*#' -e '^\s*$' "$2" | sed "s/^/$1/"; true; }
while IFS= read -r line; do
  indent=${line%%[![:space:]]*}
  case ${line#"$indent"} in
    '{{AUTHZ_FILTER}}') fragment "$indent" "$filter" ;;
    '{{ROUTE_FILTER_CONFIG}}') fragment "$indent" "$route" ;;
    *) printf '%s\n' "$line" ;;
  esac
done <envoy/bench/front-proxy.yaml | sed \
  -e "s|{{LISTEN_PORT}}|$listen|; s|{{ENVOY_ADMIN_PORT}}|$admin|; s|{{UPSTREAM_PORT}}|$upstream|" \
  -e "s|{{SERVER_CERT}}|$out/pki/server.pem|; s|{{SERVER_KEY}}|$out/pki/server-key.pem|" \
  -e "s|{{CA_BUNDLE}}|$out/pki/ca.pem|; s|{{FORWARD_CLIENT_CERT_DETAILS}}|$fccd|" \
  -e "s|{{AUTHZ_ADDRESS}}|socket_address: {address: 127.0.0.1, port_value: $grpc}|" \
  -e "s|{{CERTGATE_CONFIG}}|$out/pki/certgate.yaml|" >"$out/envoy.yaml"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$release/examples/upstream" "127.0.0.1:$upstream" >"$out/upstream.log" 2>&1 &
pids+=($!)
callgrind=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out")
# The process measured runs under callgrind. Run in the background, so `exec` keeps $! the
# process itself, which callgrind_control addresses.
wrap() { if [ "$measure" = "$1" ]; then exec "${callgrind[@]}" "${@:2}"; else exec "${@:2}"; fi; }
authz=()
case $config in
  trivial) authz=("$release/examples/trivial_authz" "127.0.0.1:$grpc" ${TRIVIAL_ARGS:-}) ;;
  certgate) authz=("$release/certgate" serve --config "$out/pki/certgate.yaml") ;;
esac
if [ ${#authz[@]} -gt 0 ]; then
  wrap authz "${authz[@]}" >"$out/authz.log" 2>&1 &
  authz_pid=$!
  pids+=($authz_pid)
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$grpc") 2>/dev/null && break
    sleep 0.5
  done
fi
ENVOY_DYNAMIC_MODULES_SEARCH_PATH=$modules wrap envoy "$envoy" --concurrency 1 --log-level warn \
  --disable-hot-restart -c "$out/envoy.yaml" >"$out/envoy.log" 2>&1 &
envoy_pid=$!
pids+=($envoy_pid)
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$admin/ready" >/dev/null || { cat "$out/envoy.log" >&2; exit 1; }
measured=$envoy_pid
[ "$measure" = authz ] && measured=$authz_pid
load() {
  curl -s --cert "$out/pki/admin.pem" --key "$out/pki/admin-key.pem" --cacert "$out/pki/ca.pem" \
    -o /dev/null -w '%{http_code}\n' "https://localhost:$listen/admin/bench?[1-$1]"
}
rq() {
  curl -s "http://127.0.0.1:$admin/stats?filter=^http.ingress.downstream_rq_total$" | awk '{print $2}'
}
codes=$(load "$warmup" | sort | uniq -c)
echo "warm-up answers: $codes" >&2
before=$(rq)
callgrind_control -i on "$measured" >/dev/null
codes=$(load "$requests" | sort | uniq -c)
callgrind_control -d "$measured" >/dev/null
callgrind_control -i off "$measured" >/dev/null
counted=$(( $(rq) - before ))
echo "answers: $codes" >&2
file=$out/callgrind.out.1
total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$config ($measure): $counted requests, $total instructions, $(( total / counted )) per request ($file)"
