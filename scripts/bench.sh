#!/usr/bin/env bash
# Measure certgate: gRPC Check load over loopback (examples/loadgen.rs against a real
# `certgate serve` on a bootstrapped dev PKI), the server's CPU time and peak RSS, then the
# criterion benches of the decision (benches/decision.rs). Writes BENCHMARKS.md.
#
#   scripts/bench.sh                 full run: 10s of load, criterion, BENCHMARKS.md
#   QUICK=1 scripts/bench.sh         2s of load, no criterion; report to target/ (for CI:
#                                    checks that it all runs, asserts nothing about speed)
#
# Environment: DURATION (10s), CONNECTIONS (4), CONCURRENCY (16 per connection),
# H2LOAD_STREAMS (128 per connection, the h2load row; skipped without h2load),
# SKIP_CRITERION=1, PIN=1 (certgate on CPU 0, loadgen on CPU 1, via taskset),
# OUT (report path; BENCHMARKS.md, or target/BENCHMARKS.quick.md when QUICK=1),
# PROFILE (release; debug when QUICK=1, which reuses the test build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-2s}
    SKIP_CRITERION=1
    OUT=${OUT:-target/BENCHMARKS.quick.md}
    PROFILE=${PROFILE:-debug}
fi
PROFILE=${PROFILE:-release}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-4}
CONCURRENCY=${CONCURRENCY:-16}
# Streams in flight per connection for the h2load row: deep enough to keep certgate busy
# (throughput, not latency: the mean latency is mostly queueing at this depth).
H2LOAD_STREAMS=${H2LOAD_STREAMS:-128}
SKIP_CRITERION=${SKIP_CRITERION:-0}
PIN=${PIN:-0}
OUT=${OUT:-BENCHMARKS.md}

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/certgate-bench.XXXXXX")
server_pid=""
# The original stderr, for the cleanup message: a trap can run inside a block whose stderr is
# redirected to a file.
exec 9>&2
cleanup() {
    local status=$?
    [[ -z $server_pid ]] || stop "$server_pid"
    if [[ $status != 0 && -f $work/certgate.log ]]; then
        printf -- '--- last lines of the certgate log ---\n' >&9
        tail -n 20 "$work/certgate.log" >&9 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# "taskset -c CPU " when PIN=1 (trailing space included), else nothing.
pin() { if [[ $PIN == 1 ]]; then printf 'taskset -c %s ' "$1"; fi; }

if [[ $PROFILE == release ]]; then
    build_cmd=(cargo build --release --examples --bin certgate)
else
    build_cmd=(cargo build --examples --bin certgate)
fi
log "${build_cmd[*]}"
"${build_cmd[@]}"
certgate=target/$PROFILE/certgate
loadgen=target/$PROFILE/examples/loadgen

read -r grpc_port admin_port < <(free_ports 2) || die "cannot pick free ports (needs python3)"
pki=$work/pki
bootstrap_cmd=("$certgate" bootstrap --out-dir "$pki" --grpc-listen "127.0.0.1:$grpc_port"
    --admin-listen "127.0.0.1:$admin_port")
log "${bootstrap_cmd[*]}"
"${bootstrap_cmd[@]}" >/dev/null

serve_cmd=("$certgate" serve --config "$pki/certgate.yaml")
log "$(pin 0)${serve_cmd[*]}"
# shellcheck disable=SC2046
$(pin 0) "${serve_cmd[@]}" 2>"$work/certgate.log" &
server_pid=$!

ready=0
for _ in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || die "certgate serve exited during startup"
    if [[ $(http_status "$admin_port" /readyz 2>/dev/null || true) == 200 ]]; then
        ready=1
        break
    fi
    sleep 0.1
done
[[ $ready == 1 ]] || die "certgate not ready on 127.0.0.1:$admin_port/readyz within 10s"

loadgen_cmd=("$loadgen" --target "http://127.0.0.1:$grpc_port" --cert "$pki/admin.pem"
    --connections "$CONNECTIONS" --concurrency "$CONCURRENCY" --duration "$DURATION"
    --path /api/hello)
log "$(pin 1)${loadgen_cmd[*]}"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
ticks_before=$(cpu_ticks "$server_pid")
# Bash's `time` gives the load generator's own CPU: on a small machine it competes with
# certgate for the same cores.
TIMEFORMAT='%U %S'
# shellcheck disable=SC2046
if ! { time $(pin 1) "${loadgen_cmd[@]}" >"$work/loadgen.txt" 2>"$work/loadgen.err"; } \
    2>"$work/loadgen.time"; then
    cat "$work/loadgen.txt" "$work/loadgen.err" >&2
    die "loadgen failed"
fi
cat "$work/loadgen.txt" "$work/loadgen.err"
ticks_after=$(cpu_ticks "$server_pid")
hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$server_pid/status")

# The same request from h2load (nghttp2, C, one thread): a much cheaper client, so more of
# the 2 cores are left to certgate. The gRPC-framed CheckRequest comes from loadgen.
h2load_cmd=()
if command -v h2load >/dev/null; then
    "$loadgen" --target "http://127.0.0.1:$grpc_port" --cert "$pki/admin.pem" --path /api/hello \
        --write-request "$work/check-request.bin"
    decisions() {
        { exec 3<>"/dev/tcp/127.0.0.1/$admin_port" &&
            printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
            cat <&3; } | awk '/^certgate_decisions_total/ {n += $NF} END {printf "%d", n}'
    }
    h2load_cmd=(h2load -c "$CONNECTIONS" -m "$H2LOAD_STREAMS" -D "${DURATION%s}"
        -d "$work/check-request.bin" -H "content-type: application/grpc" -H "te: trailers"
        "http://127.0.0.1:$grpc_port/envoy.service.auth.v3.Authorization/Check")
    log "$(pin 1)${h2load_cmd[*]}"
    h2_decisions_before=$(decisions)
    h2_ticks_before=$(cpu_ticks "$server_pid")
    # shellcheck disable=SC2046
    { time $(pin 1) "${h2load_cmd[@]}" >"$work/h2load.txt" 2>&1; } 2>"$work/h2load.time" \
        || { cat "$work/h2load.txt" >&2; die "h2load failed"; }
    h2_ticks_after=$(cpu_ticks "$server_pid")
    h2_decisions=$(($(decisions) - h2_decisions_before))
    grep -E "finished in|requests:|status codes|time for request" "$work/h2load.txt"
else
    log "h2load not installed (Debian: nghttp2-client): skipping the h2load row"
fi

log "stopping certgate (SIGTERM)"
kill -TERM "$server_pid"
for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then die "certgate did not stop within 10s of SIGTERM"; fi
wait "$server_pid" || die "certgate exited with status $? after SIGTERM"
server_pid=""

field() { awk -v k="$1" '$1 == k {print $2}' "$work/loadgen.txt"; }
requests=$(field requests)
allowed=$(field allowed)
denied=$(field denied)
errors=$(field errors)
rps=$(field rps)
[[ ${allowed:-0} -gt 0 ]] || die "no request was allowed"
hz=$(getconf CLK_TCK)
load_secs=$(awk -v d="$DURATION" 'BEGIN {
    n = d + 0
    if (d ~ /ms$/) n /= 1000; else if (d ~ /m$/) n *= 60; else if (d ~ /h$/) n *= 3600
    print n }')
cpu_secs=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}')
checks_per_cpu_sec=$(awk -v n=$((allowed + denied)) -v c="$cpu_secs" \
    'BEGIN {if (c > 0) printf "%.0f", n / c; else print "n/a"}')
cores_busy=$(awk -v c="$cpu_secs" -v s="$load_secs" \
    'BEGIN {if (s > 0) printf "%.2f", c / s; else print "n/a"}')
loadgen_cpu_secs=$(awk '{printf "%.2f", $1 + $2}' "$work/loadgen.time")
rss_mib=$(awk -v k="$hwm_kb" 'BEGIN {printf "%.1f", k / 1024}')

bench_cmd=(cargo bench --bench decision -- --warm-up-time 1 --measurement-time 3)
criterion_rows=""
if [[ $SKIP_CRITERION != 1 ]]; then
    log "${bench_cmd[*]}"
    "${bench_cmd[@]}" | tee "$work/criterion.txt"
    criterion_rows=$(python3 - <<'EOF'
import json, pathlib
rows = []
for est in sorted(pathlib.Path("target/criterion").glob("*/*/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    e = json.loads(est.read_text())
    med, lo, hi = (e["median"]["point_estimate"],
                   e["median"]["confidence_interval"]["lower_bound"],
                   e["median"]["confidence_interval"]["upper_bound"])
    def fmt(ns):
        return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"
    rows.append(f"| `{bench['full_id']}` | {fmt(med)} | {fmt(lo)} – {fmt(hi)} |")
print("\n".join(rows))
EOF
)
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null) ]]; then commit="$commit (with uncommitted changes)"; fi
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
rustc_version=$(rustc --version)

block=$(mktemp)
{
    echo "<!-- scripts/bench.sh: begin (generated; other sections of this file are kept) -->"
    echo "## ext_authz decision and gRPC load (scripts/bench.sh)"
    echo
    echo "Written by \`scripts/bench.sh\`$([[ $QUICK == 1 ]] && echo " (QUICK=1)"). Numbers from one run on one"
    echo "machine: compare runs on the same machine only. Timings are never asserted."
    echo
    echo "### Machine"
    echo
    echo "| | |"
    echo "| --- | --- |"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    echo "| commit | $commit |"
    echo "| CPU | $cpu_model |"
    echo "| cores (nproc) | $(nproc) |"
    echo "| memory | $mem_gib GiB |"
    echo "| kernel | $(uname -sr) |"
    echo "| load average before the load run (1/5/15 min) | $load_before |"
    echo "| toolchain | $rustc_version |"
    echo
    echo "### Commands"
    echo
    echo '```'
    echo "${build_cmd[*]}"
    echo "${bootstrap_cmd[*]}" | sed "s#$work#\$TMP#g"
    echo "$(pin 0)${serve_cmd[*]}" | sed "s#$work#\$TMP#g"
    echo "$(pin 1)${loadgen_cmd[*]}" | sed "s#$work#\$TMP#g"
    if ((${#h2load_cmd[@]})); then
        echo "$loadgen --target http://127.0.0.1:$grpc_port --cert \$TMP/pki/admin.pem --path /api/hello --write-request \$TMP/check-request.bin"
        echo "$(pin 1)$(printf '%q ' "${h2load_cmd[@]}")" | sed "s#$work#\$TMP#g"
    fi
    [[ $SKIP_CRITERION == 1 ]] || echo "${bench_cmd[*]}"
    echo '```'
    echo
    echo "### ext_authz gRPC \`Check\` over loopback"
    echo
    echo "$CONNECTIONS HTTP/2 connections × $CONCURRENCY requests in flight, $DURATION, one"
    echo "enrolled admin certificate (identity and store cache hits after the first request),"
    echo "\`GET /api/hello\`. Load generator and certgate share the machine's $(nproc) cores$(
        [[ $PIN == 1 ]] && echo " (pinned: certgate CPU 0, loadgen CPU 1)")."
    echo
    echo "| checks/s | p50 | p90 | p99 | p99.9 | max | certgate CPU | checks per certgate CPU-second | certgate peak RSS | loadgen CPU |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    echo "| $rps | $(lat "$(field p50_us)") | $(lat "$(field p90_us)") | $(lat "$(field p99_us)") | $(lat "$(field p99.9_us)") |" \
        "$(lat "$(field max_us)") | ${cpu_secs} s (${cores_busy} cores) | $checks_per_cpu_sec |" \
        "$rss_mib MiB | $loadgen_cpu_secs s |"
    if ((${#h2load_cmd[@]})); then
        h2_rps=$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}' "$work/h2load.txt")
        h2_ok=$(awk '/^requests:/ {print $8}' "$work/h2load.txt")
        # h2load's "time for request" line: min max mean sd (no percentiles).
        h2_mean=$(awk '/^time for request:/ {print $6}' "$work/h2load.txt")
        h2_max=$(awk '/^time for request:/ {print $5}' "$work/h2load.txt")
        h2_cpu=$(awk -v t=$((h2_ticks_after - h2_ticks_before)) -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}')
        h2_per_cpu=$(awk -v n="$h2_decisions" -v c="$h2_cpu" 'BEGIN {if (c > 0) printf "%.0f", n / c; else print "n/a"}')
        h2_client_cpu=$(awk '{printf "%.2f", $1 + $2}' "$work/h2load.time")
        echo "| $h2_rps (h2load) | mean $h2_mean | | | | $h2_max | ${h2_cpu} s |" \
            "$h2_per_cpu | | $h2_client_cpu s |"
    fi
    echo
    echo "Requests $requests: allowed $allowed, denied $denied, errors $errors. certgate CPU is"
    echo "utime+stime of its process during the load (/proc/PID/stat), peak RSS its VmHWM;"
    echo "loadgen CPU is user+sys of the load generator."
    if ((${#h2load_cmd[@]})); then
        echo "Second row: the same gRPC request body sent by h2load (nghttp2's C load generator,"
        echo "one thread, $CONNECTIONS connections × $H2LOAD_STREAMS streams in flight: a throughput run; the"
        echo "latency at that depth is mostly queueing): $h2_ok requests answered, $h2_decisions"
        echo "decisions counted by certgate; h2load reports min/max/mean/sd, not percentiles."
    fi
    if [[ $SKIP_CRITERION != 1 ]]; then
        echo
        echo "### Decision, in process (criterion)"
        echo
        echo "Median time per iteration, with criterion's 95% confidence interval of the median."
        echo "See \`benches/decision.rs\` for what each bench covers."
        echo
        echo "| bench | median | 95% CI |"
        echo "| --- | --- | --- |"
        echo "$criterion_rows"
    fi
    echo "<!-- scripts/bench.sh: end -->"
} >"$block"
write_section scripts/bench.sh "$OUT" "$block" top
rm -f "$block"
log "wrote $OUT"
