#!/usr/bin/env bash
# The full test suite: formatting, lints, unit and property tests, and the integration tests
# that run real Envoy 1.40 and certgate processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

SETUP_NGINX=1 SETUP_MOTO=1 SETUP_BENCH=1 SETUP_IMAGE=1 bash scripts/setup.sh
export ENVOY_BIN="$PWD/.venv/bin/envoy"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
mkdir -p target
cargo test --all-targets 2>&1 | tee target/test-output.log
echo "== quick benchmark (runs the load generator for 2s; asserts nothing about speed)"
QUICK=1 bash scripts/bench.sh
echo "== quick Envoy side-by-side benchmark (2s per configuration; asserts nothing about speed)"
QUICK=1 bash scripts/bench-envoy.sh
echo "== quick DynamoDB store benchmark (moto; 2s per configuration; asserts nothing about speed)"
QUICK=1 bash scripts/bench-dynamodb.sh
echo "== helm chart and deploy/ manifests (offline: lint, render, Kubernetes schemas)"
bash scripts/check-helm.sh
echo "== deploy/dynamodb (cfn-lint, Terraform/IAM agreement, tables and runbook commands on moto)"
bash scripts/check-deploy-dynamodb.sh
echo "== container image (buildah FROM scratch → OCI archive; run it: --version, config validate, serve behind Envoy)"
# The debug binary cargo test built: the same image layout without a release build (~12 min
# on 2 cores); `scripts/check-image.sh` alone checks the release image.
PROFILE=debug bash scripts/check-image.sh
echo "== demo smoke test"
DEMO_SMOKE=1 bash scripts/demo.sh

# One closing line for the whole suite (cargo prints one summary per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' \
  target/test-output.log
