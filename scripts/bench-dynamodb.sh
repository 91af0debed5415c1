#!/usr/bin/env bash
# The DynamoDB store on loopback: the same gRPC Check load (examples/loadgen.rs, admin.pem)
# against `certgate serve` with, one at a time,
#   embedded          the bootstrapped configuration (SQLite, store.cache_ttl as bootstrapped)
#   dynamodb-cached   the same records in DynamoDB (moto on loopback), same cache_ttl
#   dynamodb-cold     DynamoDB with `cache_ttl: 0s` and `stale_if_error: 0s`: every check
#                     reads both records from DynamoDB; a lighter load, and deadlines wide
#                     enough (timeout 2s, attempt_timeout 1s) for moto's Python latency
# and, for each, checks/s, latency, allow/deny/error counts, certgate CPU and peak RSS, and
# the backend calls during the load (certgate_store_calls_total on /metrics, before/after).
# Writes its own section of BENCHMARKS.md (between its markers; other sections are kept).
#
#   scripts/bench-dynamodb.sh           release build, 10s of load per configuration
#   QUICK=1 scripts/bench-dynamodb.sh   debug build, 2s per configuration, report to target/
#                                       (CI: checks that it all runs; asserts nothing about
#                                       speed)
#
# Needs moto (SETUP_MOTO=1 scripts/setup.sh puts moto_server into .venv) and python3.
# Environment: DURATION (10s), CONNECTIONS (4), CONCURRENCY (16 per connection),
# COLD_CONNECTIONS (1), COLD_CONCURRENCY (4), COLD_TIMEOUT (2s), COLD_ATTEMPT_TIMEOUT (1s),
# PROFILE (release; debug when QUICK=1), OUT (BENCHMARKS.md; target/BENCHMARKS.dynamodb.quick.md
# when QUICK=1), MOTO_BIN (.venv/bin/moto_server).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-2s}
    OUT=${OUT:-target/BENCHMARKS.dynamodb.quick.md}
    PROFILE=${PROFILE:-debug}
fi
PROFILE=${PROFILE:-release}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-4}
CONCURRENCY=${CONCURRENCY:-16}
COLD_CONNECTIONS=${COLD_CONNECTIONS:-1}
COLD_CONCURRENCY=${COLD_CONCURRENCY:-4}
COLD_TIMEOUT=${COLD_TIMEOUT:-2s}
COLD_ATTEMPT_TIMEOUT=${COLD_ATTEMPT_TIMEOUT:-1s}
OUT=${OUT:-BENCHMARKS.md}
MOTO_BIN=${MOTO_BIN:-.venv/bin/moto_server}

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

[[ -x $MOTO_BIN ]] || die "no $MOTO_BIN: run SETUP_MOTO=1 bash scripts/setup.sh"
command -v python3 >/dev/null || die "python3 is needed (free ports, /metrics, configuration)"

work=$(mktemp -d "${TMPDIR:-/tmp}/certgate-bench-dynamodb.XXXXXX")
server_pid=""
moto_pid=""
# The original stderr, for the cleanup message: a trap can run inside a block whose stderr is
# redirected to a file.
exec 9>&2
cleanup() {
    local status=$?
    [[ -z $server_pid ]] || stop "$server_pid"
    [[ -z $moto_pid ]] || stop "$moto_pid"
    if [[ $status != 0 ]]; then
        for f in "$work"/*.log; do
            [[ -s $f ]] || continue
            printf -- '--- last lines of %s ---\n' "${f##*/}" >&9
            tail -n 20 "$f" >&9 || true
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# "CALLS ERRORS STALE": the sums of certgate_store_calls_total (all, outcome="error") and
# certgate_store_stale_served_total on the admin listener at port $1.
store_metrics() {
    python3 - "$1" <<'PY'
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
body = opener.open(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
calls = errors = stale = 0
for line in body.splitlines():
    name, _, value = line.rpartition(" ")
    if name.startswith("certgate_store_calls_total"):
        calls += float(value)
        if 'outcome="error"' in name:
            errors += float(value)
    elif name.startswith("certgate_store_stale_served_total"):
        stale += float(value)
print(int(calls), int(errors), int(stale))
PY
}

if [[ $PROFILE == release ]]; then
    build_cmd=(cargo build --release --examples --bin certgate)
else
    build_cmd=(cargo build --examples --bin certgate)
fi
log "${build_cmd[*]}"
"${build_cmd[@]}"
certgate=target/$PROFILE/certgate
loadgen=target/$PROFILE/examples/loadgen

# Static credentials for moto (it accepts any); no instance metadata lookups.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=eu-west-1 \
    AWS_EC2_METADATA_DISABLED=true

read -r grpc_port admin_port moto_port < <(free_ports 3) || die "cannot pick free ports"
endpoint=http://127.0.0.1:$moto_port

moto_cmd=("$MOTO_BIN" -H 127.0.0.1 -p "$moto_port")
log "${moto_cmd[*]}"
"${moto_cmd[@]}" >"$work/moto.log" 2>&1 &
moto_pid=$!
# moto imports its service models on start: allow 30s.
wait_for "$moto_pid" 300 "moto_server" http_ok "$moto_port" /moto-api/

pki=$work/pki
bootstrap_cmd=("$certgate" bootstrap --out-dir "$pki" --grpc-listen "127.0.0.1:$grpc_port"
    --admin-listen "127.0.0.1:$admin_port")
log "${bootstrap_cmd[*]}"
"${bootstrap_cmd[@]}" >/dev/null
embedded_yaml=$pki/certgate.yaml
cached_yaml=$pki/dynamodb.yaml
cold_yaml=$pki/dynamodb-cold.yaml

# The DynamoDB configurations: the bootstrapped file with its top-level `store:` section
# replaced (same cache_ttl for the cached one). Written next to it: relative paths in the
# file (ca.pem, the allowlist) resolve against the file's directory.
python3 - "$embedded_yaml" "$endpoint" "$cached_yaml" "$cold_yaml" "$COLD_TIMEOUT" \
    "$COLD_ATTEMPT_TIMEOUT" <<'PY'
import re, sys
src, endpoint, cached, cold, timeout, attempt_timeout = sys.argv[1:]
text = open(src).read()
section = re.compile(r"^store:[^\n]*\n(?:(?:[ \t]+[^\n]*|[ \t]*)\n)*", re.M)
m = section.search(text)
if not m:
    sys.exit(f"no top-level store: section in {src}")
ttl = re.search(r"^\s+cache_ttl:\s*([^\s#]+)", m.group(0), re.M)
if not ttl:
    sys.exit(f"no store.cache_ttl in {src}")
def store(cache_ttl, extra_store="", extra_dynamodb=""):
    return (f"store:\n  backend: dynamodb\n  cache_ttl: {cache_ttl}\n{extra_store}"
            f"  dynamodb:\n    region: eu-west-1\n    endpoint_url: {endpoint}\n{extra_dynamodb}")
blocks = {
    cached: store(ttl.group(1)),
    # Nothing cached, and nothing stale either: a failed read is a visible 503, not an old
    # answer served in its place.
    cold: store("0s", "  stale_if_error: 0s\n",
                f"    timeout: {timeout}\n    attempt_timeout: {attempt_timeout}\n"),
}
for path, block in blocks.items():
    with open(path, "w") as f:
        f.write(text[:m.start()] + block + text[m.end():])
PY

init_cmd=("$certgate" store init --config "$cached_yaml")
migrate_cmd=("$certgate" store migrate --config "$embedded_yaml" --to "$cached_yaml")
# Also warms moto up (its first DynamoDB request loads the service model).
log "${init_cmd[*]}"
"${init_cmd[@]}" >"$work/store-init.out" 2>&1 || { cat "$work/store-init.out" >&2; die "store init failed"; }
log "${migrate_cmd[*]}"
"${migrate_cmd[@]}" >"$work/store-migrate.out" 2>&1 || {
    cat "$work/store-migrate.out" >&2
    die "store migrate failed"
}
cat "$work/store-migrate.out" >&2

hz=$(getconf CLK_TCK)
load_secs=$(awk -v d="$DURATION" 'BEGIN {
    n = d + 0
    if (d ~ /ms$/) n /= 1000; else if (d ~ /m$/) n *= 60; else if (d ~ /h$/) n *= 3600
    print n }')
secs() { awk -v t="$1" -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}'; }
# Latency in µs as printed by loadgen, shown in ms from 1 ms up.

rows=()
commands=()
notes=()
# run_config NAME CONFIG CONNECTIONS CONCURRENCY: one `certgate serve`, one load run, one row.
run_config() {
    local name=$1 config=$2 conns=$3 conc=$4
    local serve_cmd loadgen_cmd lg_status=0 load_before ticks_before ticks_after hwm_kb
    local calls_before errors_before stale_before calls_after errors_after stale_after
    local moto_before="" moto_after="" moto_cpu="—"
    serve_cmd=("$certgate" serve --config "$config")
    log "[$name] ${serve_cmd[*]}"
    "${serve_cmd[@]}" 2>"$work/certgate-$name.log" &
    server_pid=$!
    wait_for "$server_pid" 300 "certgate serve ($name)" http_ok "$admin_port" /readyz

    loadgen_cmd=("$loadgen" --target "http://127.0.0.1:$grpc_port" --cert "$pki/admin.pem"
        --connections "$conns" --concurrency "$conc" --duration "$DURATION" --path /api/hello)
    log "[$name] ${loadgen_cmd[*]}"
    read -r calls_before errors_before stale_before < <(store_metrics "$admin_port")
    load_before=$(cut -d' ' -f1 /proc/loadavg)
    if [[ $name != embedded ]]; then moto_before=$(cpu_ticks "$moto_pid"); fi
    ticks_before=$(cpu_ticks "$server_pid")
    TIMEFORMAT='%U %S'
    { time "${loadgen_cmd[@]}" >"$work/loadgen-$name.txt" 2>"$work/loadgen-$name.err"; } \
        2>"$work/loadgen-$name.time" || lg_status=$?
    ticks_after=$(cpu_ticks "$server_pid")
    if [[ $name != embedded ]]; then moto_after=$(cpu_ticks "$moto_pid"); fi
    hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$server_pid/status")
    read -r calls_after errors_after stale_after < <(store_metrics "$admin_port")
    cat "$work/loadgen-$name.txt" "$work/loadgen-$name.err" >&2

    log "[$name] stopping certgate (SIGTERM)"
    kill -TERM "$server_pid"
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server_pid" 2>/dev/null; then die "certgate ($name) did not stop within 10s of SIGTERM"; fi
    wait "$server_pid" || die "certgate ($name) exited with status $? after SIGTERM"
    server_pid=""
    kill -0 "$moto_pid" 2>/dev/null || die "moto_server exited"

    field() { awk -v k="$1" '$1 == k {print $2}' "$work/loadgen-$name.txt"; }
    local requests allowed denied errors rps checks calls call_errors stale per_1000 cpu
    requests=$(field requests)
    [[ -n $requests ]] || die "loadgen ($name) failed (exit $lg_status) without a report"
    allowed=$(field allowed)
    denied=$(field denied)
    errors=$(field errors)
    rps=$(field rps)
    [[ ${allowed:-0} -gt 0 ]] || die "no request was allowed ($name)"
    if [[ $lg_status != 0 ]]; then
        notes+=("$name: loadgen exited $lg_status ($errors requests failed; first error: $(
            awk '$1 == "first_error" {$1 = ""; sub(/^ /, ""); print}' "$work/loadgen-$name.txt"))")
    fi
    checks=$((allowed + denied))
    calls=$((calls_after - calls_before))
    call_errors=$((errors_after - errors_before))
    stale=$((stale_after - stale_before))
    per_1000=$(awk -v c="$calls" -v n="$checks" 'BEGIN {printf "%.2f", c * 1000 / n}')
    cpu=$(secs $((ticks_after - ticks_before)))
    if [[ -n $moto_before ]]; then moto_cpu="$(secs $((moto_after - moto_before))) s"; fi
    rows+=("| $name | $conns × $conc | $rps | $(lat "$(field p50_us)") | $(lat "$(field p99_us)") |\
 $(lat "$(field p99.9_us)") | $allowed / $denied / $errors | $cpu s\
 ($(awk -v c="$cpu" -v s="$load_secs" 'BEGIN {printf "%.2f", c / s}') cores) |\
 $(awk -v k="$hwm_kb" 'BEGIN {printf "%.1f", k / 1024}') MiB | $calls ($call_errors errors, $stale stale) |\
 $per_1000 | $moto_cpu | $(awk '{printf "%.2f", $1 + $2}' "$work/loadgen-$name.time") s | $load_before |")
    commands+=("${serve_cmd[*]}" "${loadgen_cmd[*]}")
    log "[$name] $checks checks, $calls store calls ($per_1000 per 1000 checks)"
}

run_config embedded "$embedded_yaml" "$CONNECTIONS" "$CONCURRENCY"
run_config dynamodb-cached "$cached_yaml" "$CONNECTIONS" "$CONCURRENCY"
run_config dynamodb-cold "$cold_yaml" "$COLD_CONNECTIONS" "$COLD_CONCURRENCY"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null) ]]; then commit="$commit (with uncommitted changes)"; fi
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
moto_version=$("${MOTO_BIN%/*}/python" -c 'import moto; print(moto.__version__)' 2>/dev/null || echo unknown)
embedded_ttl=$(awk '/^store:/ {s = 1; next} s && /^[^ \t#]/ {s = 0} s && $1 == "cache_ttl:" {print $2}' \
    "$embedded_yaml")
tmp() { sed "s#$work#\$TMP#g"; }
cold_rps=$(awk '$1 == "rps" {print $2}' "$work/loadgen-dynamodb-cold.txt")
cold_round_ms=$(awk -v r="$cold_rps" 'BEGIN {if (r > 0) printf "%.0f", 1000 / r; else print "n/a"}')

block=$(mktemp)
{
    echo "<!-- scripts/bench-dynamodb.sh: begin (generated; other sections of this file are kept) -->"
    echo "## DynamoDB store (scripts/bench-dynamodb.sh)"
    echo
    echo "Written by \`scripts/bench-dynamodb.sh\`$([[ $QUICK == 1 ]] && echo " (QUICK=1)"). Numbers from one run"
    echo "on one machine: compare runs on the same machine only. Timings are never asserted."
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
    echo "| toolchain | $(rustc --version) ($PROFILE build) |"
    echo "| DynamoDB | moto_server $moto_version (Python) on loopback, same machine |"
    echo
    echo "### Commands"
    echo
    echo '```'
    echo "${build_cmd[*]}"
    echo "${moto_cmd[*]} &"
    echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=eu-west-1 AWS_EC2_METADATA_DISABLED=true"
    echo "${bootstrap_cmd[*]}" | tmp
    echo "# dynamodb.yaml, dynamodb-cold.yaml: certgate.yaml with its store: section replaced (below)"
    echo "${init_cmd[*]}" | tmp
    echo "${migrate_cmd[*]}" | tmp
    for c in "${commands[@]}"; do echo "$c" | tmp; done
    echo '```'
    echo
    echo "The \`store:\` sections (the rest of each file is the bootstrapped one):"
    echo
    echo '```yaml'
    echo "# certgate.yaml (embedded, as bootstrapped)"
    awk '/^store:/ {s = 1} s && /^[^ \t#]/ && !/^store:/ {s = 0} s' "$embedded_yaml"
    echo "# dynamodb.yaml (dynamodb-cached)"
    awk '/^store:/ {s = 1} s && /^[^ \t#]/ && !/^store:/ {s = 0} s' "$cached_yaml"
    echo "# dynamodb-cold.yaml (dynamodb-cold)"
    awk '/^store:/ {s = 1} s && /^[^ \t#]/ && !/^store:/ {s = 0} s' "$cold_yaml"
    echo '```'
    echo
    echo "### ext_authz gRPC \`Check\` over loopback, by store"
    echo
    echo "$DURATION of \`GET /api/hello\` with the enrolled admin certificate per configuration, one"
    echo "configuration at a time; certgate, the load generator and moto share the machine's"
    echo "$(nproc) cores."
    echo
    echo "| configuration | connections × in flight | checks/s | p50 | p99 | p99.9 | allowed / denied / errors | certgate CPU | certgate peak RSS | store calls during the load | store calls per 1000 checks | moto CPU | loadgen CPU | load average (1 min) before |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "- **Store calls** are the change in the sum of \`certgate_store_calls_total\` (both"
    echo "  operations, \`GetItem\` on the principals and certificates tables for DynamoDB) across"
    echo "  the load; \"errors\" its \`outcome=\"error\"\` part, \"stale\" the change in"
    echo "  \`certgate_store_stale_served_total\`. Checks are allowed + denied answers. A 503"
    echo "  \`store_unavailable\` is a deny to the load generator; \"errors\" in the allowed / denied"
    echo "  / errors column are requests that failed (a gRPC error, or no answer within the load"
    echo "  generator's 5s)."
    echo "- **Cached** (\`cache_ttl: $embedded_ttl\`, both stores): one certificate and one principal are"
    echo "  looked up, each at most once per TTL, so the backend sees about two calls per"
    echo "  $embedded_ttl whatever the request rate. Only the checks that arrive while an expired answer"
    echo "  is being refreshed wait for the store (once per TTL per key); all others are answered"
    echo "  from memory, which is why dynamodb-cached should match embedded in checks/s and p50"
    echo "  (differences are mostly noise from the shared machine; a refresh from moto can show in"
    echo "  the tail)."
    echo "- **Cold** (\`cache_ttl: 0s\`, \`stale_if_error: 0s\`): each check reads both records"
    echo "  (two \`GetItem\`s, in parallel) from DynamoDB, so about 2000 calls per 1000 checks."
    echo "  The cache runs one backend read per key at a time (concurrent misses for the same key"
    echo "  wait for the first), so with a single certificate the $COLD_CONCURRENCY requests in flight"
    echo "  queue behind each other: checks/s is one over the time of one round (two \`GetItem\`s"
    echo "  in parallel) — here about $cold_round_ms ms — and the latency roughly $COLD_CONCURRENCY such rounds."
    echo "  **These cold numbers are moto's** — a single Python process emulating DynamoDB"
    echo "  on the same $(nproc) cores as certgate and the load generator — not Amazon DynamoDB's,"
    echo "  whose \`GetItem\` takes a few milliseconds within a region and does not compete for this"
    echo "  machine's CPU. They show that every check pays a network read when nothing is cached,"
    echo "  not what that read costs in production."
    echo "- certgate CPU is utime+stime of its process during the load (/proc/PID/stat), peak RSS"
    echo "  its VmHWM over the process's life; moto and loadgen CPU likewise for those processes."
    for n in "${notes[@]}"; do echo "- $n"; done
    echo "<!-- scripts/bench-dynamodb.sh: end -->"
} >"$block"
write_section scripts/bench-dynamodb.sh "$OUT" "$block"
rm -f "$block"
log "wrote $OUT"
