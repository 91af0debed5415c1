#!/usr/bin/env bash
# The test suite, whole or in parts:
#   --fast    formatting, lints, unit and property tests, the library's fuzzing surface
#             compiled (no peers needed)
#   --e2e     integration tests with real Envoy 1.40, nginx, moto and certgate processes on
#             loopback, and the demo's smoke test
#   --deploy  helm chart and deploy/ manifests, deploy/dynamodb, the container image
#   --bench   the quick benchmarks (cargo xtask bench all --quick; they assert nothing about
#             speed, only that they run and allow requests; failed ones are reported), then
#             the 30-second soak under churn (cargo xtask soak --duration 30s: fails on any
#             wrong answer)
#   --fuzz    the fuzz targets built (cargo fuzz, libFuzzer instrumentation; with other parts,
#             in the background at the lowest priority) and, after the other parts, run a few
#             seconds each after replaying their recorded crashes (scripts/fuzz --brief)
# No flag runs every part. Either way it ends with one `tests: N passed, M failed` line.
set -euo pipefail
cd "$(dirname "$0")/.."

parts=()
for arg in "$@"; do
  case $arg in
    --fast | --e2e | --deploy | --bench | --fuzz) parts+=("${arg#--}") ;;
    *) echo "usage: scripts/test.sh [--fast] [--e2e] [--deploy] [--bench] [--fuzz]" >&2; exit 2 ;;
  esac
done
((${#parts[@]})) || parts=(fast fuzz e2e deploy bench)
want() { [[ " ${parts[*]} " == *" $1 "* ]]; }

setup=()
want fuzz && setup+=(SETUP_FUZZ=1)
want e2e && setup+=(SETUP_NGINX=1 SETUP_MOTO=1 SETUP_OTLP=1)
want deploy && setup+=(SETUP_MOTO=1 SETUP_IMAGE=1 SETUP_PROMETHEUS=1)
want bench && setup+=(SETUP_MOTO=1 SETUP_BENCH=1)
env "${setup[@]}" bash scripts/setup.sh
export ENVOY_BIN="$PWD/.venv/bin/envoy"

# Every cargo test run appends here; the closing line sums its `test result:` lines.
mkdir -p target
log=target/test-output.log
: >"$log"

# The fuzz targets' build shares no artifact with the others (its own target directory,
# every crate instrumented): with other parts to run, it starts now at the lowest priority and
# fills the cores they leave idle (linking, single-crate stretches, tests waiting on peers);
# the fuzz part, last, waits for it.
fuzz_build=
if want fuzz && ((${#parts[@]} > 1)); then
  setsid nice -n 19 bash scripts/fuzz --brief --build >target/fuzz-build.log 2>&1 &
  fuzz_build=$!
  trap '[ -z "$fuzz_build" ] || kill -- "-$fuzz_build" 2>/dev/null || true' EXIT
fi

if want fast; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
  echo "== module ABI: every Envoy callback libcertgate_envoy.so imports is exported by the pinned Envoy"
  cargo build --quiet -p certgate-envoy
  bash scripts/check-module-symbols.sh
  # Every integration test target but tests/tests.rs (the one that starts peers) runs here.
  offline=()
  for t in tests/*.rs; do
    [[ $t == tests/tests.rs ]] || offline+=(--test "$(basename "$t" .rs)")
  done
  echo "== cargo test (unit and property tests, offline integration tests, benches and examples as tests)"
  cargo test --workspace --lib --bins --benches --examples "${offline[@]}" 2>&1 | tee -a "$log"
  echo "== the fuzzing surface of the library compiles (cargo check --features fuzzing)"
  # --test docs: a target with the dev-dependencies, so that the dependencies resolve to
  # clippy's features and only certgate itself is checked again.
  cargo check --quiet --lib --test docs --features fuzzing
fi
if want e2e; then
  echo "== cargo test --test tests (Envoy, nginx, moto and certgate on loopback)"
  cargo test --test tests 2>&1 | tee -a "$log"
  echo "== demo smoke test"
  DEMO_SMOKE=1 bash scripts/demo.sh
  echo "== demo smoke test, certgate inside Envoy (DEMO_MODE=module)"
  DEMO_SMOKE=1 DEMO_MODE=module bash scripts/demo.sh
fi
if want deploy; then
  # check-helm validates the rendered configurations with the debug binary, and check-image
  # packs it: the same image layout without a release build (~12 min on 2 cores);
  # `scripts/check-image.sh` alone checks the release image. --all-targets builds it with the
  # test build's feature set, as build-image.sh does, so nothing is built twice.
  cargo build --quiet --all-targets
  echo "== alert rules (promtool check rules, promtool test rules)"
  bash scripts/check-alerts.sh
  echo "== helm chart and deploy/ manifests (offline: lint, render, Kubernetes schemas)"
  bash scripts/check-helm.sh
  echo "== deploy/dynamodb (cfn-lint, Terraform/IAM agreement, tables and runbook commands on moto)"
  bash scripts/check-deploy-dynamodb.sh
  echo "== container image (buildah FROM scratch → OCI archive; run it: --version, config validate, serve behind Envoy)"
  PROFILE=debug bash scripts/check-image.sh
fi
if want bench; then
  echo "== quick benchmarks: gRPC, through Envoy, DynamoDB store (2s per configuration; assert nothing about speed)"
  cargo xtask bench all --quick
  echo "== soak under churn, 30 s (every answer judged; README \"Soak\")"
  cargo xtask soak --duration 30s
fi
if want fuzz; then
  echo "== fuzz targets: build, replay fuzz/regressions, a few seconds each (scripts/fuzz --brief)"
  if [ -n "$fuzz_build" ]; then
    status=0
    wait "$fuzz_build" || status=$?
    fuzz_build=
    cat target/fuzz-build.log
    ((status == 0)) || exit "$status"
    FUZZ_NO_BUILD=1 bash scripts/fuzz --brief
  else
    bash scripts/fuzz --brief
  fi
fi

# One closing line for the whole run (cargo prints one summary per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
