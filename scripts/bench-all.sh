#!/usr/bin/env bash
# Every benchmark in one run on one machine, each writing its own section of BENCHMARKS.md:
#   scripts/bench.sh           criterion (decision, first-seen certificate) + direct gRPC
#                              Check load (Rust loadgen and h2load)
#   scripts/bench-envoy.sh     through Envoy 1.40: none / RBAC / trivial ext_authz (with and
#                              without identity headers) / certgate over TCP and unix socket
#   scripts/bench-dynamodb.sh  embedded store vs DynamoDB (moto), cached and cold
# The CRL and memory-at-scale sections are hand-written from `cargo bench --bench crl` and
# `cargo run --release --example memory_at_scale` (commands in BENCHMARKS.md).
#
#   scripts/bench-all.sh            full runs (~6 minutes after the release build)
#   QUICK=1 scripts/bench-all.sh    the quick variants scripts/test.sh runs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SETUP_MOTO=1 SETUP_BENCH=1 bash scripts/setup.sh >/dev/null
for script in bench bench-envoy bench-dynamodb; do
    printf '==> scripts/%s.sh\n' "$script" >&2
    bash "scripts/$script.sh"
done
