#!/usr/bin/env bash
# The container image, built and run the way users get it (scripts/test.sh runs this):
#   1. scripts/build-image.sh builds the OCI archive (FROM scratch) — with the debug binary the
#      tests already built when PROFILE=debug (what scripts/test.sh does: a release build from
#      scratch takes ~12 minutes on a 2-core machine), else with the release binary;
#   2. a container is made from that archive (not from buildah's build storage) and its config
#      checked: user 65532, entrypoint, OCI labels naming this commit;
#   3. inside it (buildah run, chroot isolation, the host's network): `certgate --version`,
#      `bootstrap` into a mounted directory (as the image's non-root user), `config validate`
#      on the mounted config, then `serve`, which must answer /healthz and /readyz on the host
#      and decide checks that Envoy on the host sends it for mTLS requests.
# Needs root, buildah and Envoy (SETUP_IMAGE=1 scripts/setup.sh). Quiet unless something fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ENVOY_BIN=${ENVOY_BIN:-$ROOT/.venv/bin/envoy}

fail() { echo "FAIL: $*" >&2; exit 1; }

start=$(date +%s)
build_log=$(mktemp)
bash scripts/build-image.sh >"$build_log" 2>&1 || { cat "$build_log" >&2; fail "scripts/build-image.sh"; }
summary=$(tail -1 "$build_log")
rm -f "$build_log"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
suffix=""; [ "${PROFILE:-release}" = release ] || suffix=-$PROFILE
ARCHIVE=target/image/certgate-$VERSION$suffix.oci.tar
[ -s "$ARCHIVE" ] || fail "no archive at $ARCHIVE"
python3 scripts/check_image/sbom.py "target/image/certgate-$VERSION$suffix.cdx.json" || fail "the SBOM beside the archive"

export BUILDAH_ISOLATION=chroot
# A storage of its own, removed at the end: only the archive is under test.
work=$(mktemp -d "$ROOT/target/image/check.XXXXXX")
BUILDAH=(buildah --storage-driver vfs --root "$work/root" --runroot "$work/run")
pids=()
ctr=""
cleanup() {
  # Each background job runs in its own process group (setsid): stop the group, so the
  # process buildah run started inside the container goes too.
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$ctr" ] || "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
logs() { for f in "$work"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; }

ctr=$("${BUILDAH[@]}" from --quiet --pull-never "oci-archive:$ARCHIVE" 2>"$work/from.log") \
  || { cat "$work/from.log" >&2; fail "buildah from oci-archive:$ARCHIVE"; }

# The image's configuration, as a runtime sees it.
"${BUILDAH[@]}" inspect --type container "$ctr" >"$work/inspect.json"
python3 scripts/check_image/image_config.py "$work/inspect.json" "$VERSION" "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  || fail "image configuration"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GRPC_PORT=$(free_port) ADMIN_PORT=$(free_port) LISTEN_PORT=$(free_port) ENVOY_ADMIN_PORT=$(free_port) UPSTREAM_PORT=$(free_port)

# The host directory mounted as /etc/certgate belongs to the image's user, as a Kubernetes
# volume with fsGroup 65532 would.
pki=$work/pki
install -d -o 65532 -g 65532 "$pki"
in_image() { "${BUILDAH[@]}" run --network host --volume "$pki:/etc/certgate" "$ctr" -- /usr/local/bin/certgate "$@"; }

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
got=$(in_image --version) || fail "certgate --version in the image"
[ "$got" = "certgate $VERSION ($commit)" ] || fail "certgate --version in the image: '$got', want 'certgate $VERSION ($commit)'"

in_image bootstrap --out-dir /etc/certgate --grpc-listen "127.0.0.1:$GRPC_PORT" \
  --admin-listen "127.0.0.1:$ADMIN_PORT" >"$work/bootstrap.log" 2>&1 \
  || { cat "$work/bootstrap.log" >&2; fail "certgate bootstrap in the image"; }
[ "$(stat -c %u "$pki/certgate.db")" = 65532 ] || fail "the image does not run as user 65532 (store owned by $(stat -c %u "$pki/certgate.db"))"

in_image config validate --config /etc/certgate/certgate.yaml >"$work/validate.log" 2>&1 \
  || { cat "$work/validate.log" >&2; fail "certgate config validate in the image"; }
printf 'listen: {grpc: "127.0.0.1:1", admin: nowhere}\n' >"$pki/bad.yaml"
if in_image config validate --config /etc/certgate/bad.yaml >"$work/validate-bad.log" 2>&1; then
  fail "certgate config validate in the image accepted a bad config"
fi

# serve in the image, Envoy and an upstream on the host.
setsid "${BUILDAH[@]}" run --network host --volume "$pki:/etc/certgate" "$ctr" -- \
  /usr/local/bin/certgate --log-format text serve --config /etc/certgate/certgate.yaml \
  >"$work/certgate.log" 2>&1 & pids+=($!)
setsid python3 scripts/echo-upstream.py "$UPSTREAM_PORT" >"$work/upstream.log" 2>&1 & pids+=($!)
sed -e "s|{{LISTEN_PORT}}|$LISTEN_PORT|; s|{{ENVOY_ADMIN_PORT}}|$ENVOY_ADMIN_PORT|" \
    -e "s|{{SERVER_CERT}}|$pki/server.pem|; s|{{SERVER_KEY}}|$pki/server-key.pem|" \
    -e "s|{{CA_BUNDLE}}|$pki/ca.pem|; s|{{TRUST_CHAIN_VERIFICATION}}|VERIFY_TRUST_CHAIN|" \
    -e "s|{{CERTGATE_ADDRESS}}|socket_address: {address: 127.0.0.1, port_value: $GRPC_PORT}|" \
    -e "s|{{UPSTREAM_PORT}}|$UPSTREAM_PORT|; s|{{INCLUDE_PEER_CERTIFICATE}}|true|" \
    -e "s|{{FORWARD_CLIENT_CERT_DETAILS}}|SANITIZE|; s|{{NORMALIZE_PATH}}|true|" \
    -e "s|{{ESCAPED_SLASHES_ACTION}}|UNESCAPE_AND_REDIRECT|" -e "s|{{OTLP_PORT}}|4317|" -e "s|{{TRACE_SAMPLING}}|0|" \
    -e "s|{{ADMIN_ROUTE_CONTEXT}}|{policy: admin}|" envoy/front-proxy.yaml >"$work/envoy.yaml"
setsid "$ENVOY_BIN" -c "$work/envoy.yaml" --concurrency 1 --log-level warn --disable-hot-restart \
  --base-id "$LISTEN_PORT" >"$work/envoy.log" 2>&1 & pids+=($!)

ready=0
for _ in $(seq 1 150); do
  if curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null &&
     curl -sf "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready" >/dev/null; then ready=1; break; fi
  sleep 0.2
done
[ "$ready" = 1 ] || { logs; fail "certgate in the image (or Envoy) did not become ready"; }
[ "$(curl -s "http://127.0.0.1:$ADMIN_PORT/healthz")" = ok ] || { logs; fail "/healthz of certgate in the image"; }
# What the chart's helm test Pod runs: `certgate probe` from the image (no curl in it), by name.
in_image probe "http://localhost:$ADMIN_PORT/readyz" >"$work/probe.log" 2>&1 \
  || { logs; cat "$work/probe.log" >&2; fail "certgate probe in the image"; }
if in_image probe "http://localhost:$ADMIN_PORT/nothing-here" >"$work/probe-404.log" 2>&1; then
  fail "certgate probe in the image passed on a 404"
fi

C=(curl -s --cacert "$pki/ca.pem" -o /dev/null -w '%{http_code}')
URL=https://localhost:$LISTEN_PORT
status() { "${C[@]}" "$@" || true; }
# The first check opens Envoy's connection to certgate; allow a cold start on a busy machine.
for _ in $(seq 1 50); do
  [ "$(status --cert "$pki/admin.pem" --key "$pki/admin-key.pem" "$URL/api/hello")" = 200 ] && break
  sleep 0.2
done
expect() { local want=$1 what=$2 got; shift 2; got=$(status "$@")
  [ "$got" = "$want" ] || { logs; fail "through Envoy to certgate in the image: $what → $got, want $want"; }; }
expect 200 "admin GET /api/hello" --cert "$pki/admin.pem" --key "$pki/admin-key.pem" "$URL/api/hello"
expect 403 "worker GET /admin/users" --cert "$pki/worker.pem" --key "$pki/worker-key.pem" "$URL/admin/users"
expect 401 "no client certificate" "$URL/api/hello"
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -q '^certgate_decisions_total{.*result="allow"' \
  || { logs; fail "certgate in the image counted no allow decision"; }

echo "$summary"
echo "image checks passed (${PROFILE:-release} binary): --version, bootstrap + config validate as 65532 on a mounted directory, serve answering /healthz, certgate probe and Envoy's checks ($(($(date +%s) - start))s)"
