#!/usr/bin/env bash
# Side by side through Envoy: the same mTLS HTTP/1.1 load (examples/loadgen.rs, HTTPS mode)
# against Envoy 1.40 `--concurrency 1` (ENVOY_CONCURRENCY) in front of a trivial upstream (examples/upstream.rs),
# with, in turn,
#   none            no authorization filter
#   rbac            Envoy's RBAC filter admitting the client's principal (no extra hop)
#   trivial         ext_authz gRPC to examples/trivial_authz.rs (allows everything)
#   trivial-headers the same server answering with certgate's shape of identity headers (six
#                   set, one removed): what Envoy itself spends applying them
#   certgate        ext_authz gRPC to `certgate serve` over TCP (bootstrapped config: roles,
#                   store enrolment with a cached store, the `admin` policy's CN allowlist)
#   certgate-unix   the same over a unix socket (Envoy `pipe:` address)
# Prints one table and writes its own section of BENCHMARKS.md (between its markers).
#
#   scripts/bench-envoy.sh           release build, 3 rounds of 5s per configuration
#   QUICK=1 scripts/bench-envoy.sh   debug build, 1 round of 2s per configuration, report to
#                                    target/ (CI: checks that it all runs; asserts nothing
#                                    about speed)
#
# The configurations run interleaved, round after round, and the table shows each
# configuration's median round by req/s: on a shared machine, load from elsewhere then
# spreads over all of them instead of sinking one.
#
# Environment: DURATION (5s), ROUNDS (3), CONNECTIONS (16), CONFIGS (all five, space-separated),
# PROFILE (release; debug when QUICK=1), OUT (BENCHMARKS.md; target/BENCHMARKS.envoy.quick.md
# when QUICK=1), ENVOY_BIN (.venv/bin/envoy, installed by scripts/setup.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-2s}
    ROUNDS=${ROUNDS:-1}
    OUT=${OUT:-target/BENCHMARKS.envoy.quick.md}
    PROFILE=${PROFILE:-debug}
fi
PROFILE=${PROFILE:-release}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-16}
CONFIGS=${CONFIGS:-none rbac trivial trivial-headers certgate certgate-unix}
ENVOY_CONCURRENCY=${ENVOY_CONCURRENCY:-1}
OUT=${OUT:-BENCHMARKS.md}
ENVOY_BIN=${ENVOY_BIN:-.venv/bin/envoy}
# The request path: /admin routes ask certgate for its `admin` policy (CN allowlist, admin
# type only, 7-day certificates), the strictest of the bootstrapped configuration.
LOAD_PATH=/admin/bench

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/certgate-bench-envoy.XXXXXX")
pids=()
exec 9>&2
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do stop "$pid"; done
    if [[ $status != 0 ]]; then
        for f in "$work"/*.log; do
            [[ -s $f ]] || continue
            printf -- '--- last lines of %s ---\n' "${f##*/}" >&9
            tail -n 15 "$f" >&9 || true
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

[[ -x $ENVOY_BIN ]] || bash scripts/setup.sh >/dev/null
[[ -x $ENVOY_BIN ]] || die "no Envoy at $ENVOY_BIN (scripts/setup.sh installs it)"
envoy_version=$("$ENVOY_BIN" --version | sed -n 's/.*version: //p')

if [[ $PROFILE == release ]]; then
    build_cmd=(cargo build --release --bin certgate --example loadgen --example upstream
        --example trivial_authz)
else
    build_cmd=(cargo build --bin certgate --example loadgen --example upstream
        --example trivial_authz)
fi
log "${build_cmd[*]}"
"${build_cmd[@]}"
bin=target/$PROFILE
certgate=$bin/certgate

read -r grpc_port admin_port upstream_port listen_port envoy_admin_port authz_port \
    < <(free_ports 6) || die "cannot pick free ports (needs python3)"
pki=$work/pki
socket=$work/certgate.sock
"$certgate" bootstrap --out-dir "$pki" --grpc-listen "127.0.0.1:$grpc_port" \
    --admin-listen "127.0.0.1:$admin_port" >/dev/null
# Both listeners: the unix one only carries load in the certgate-unix configuration.
sed -i "s|^listen:\$|listen:\n  grpc_unix: $socket|" "$pki/certgate.yaml"
principal=$(openssl x509 -in "$pki/admin.pem" -noout -ext subjectAltName |
    sed -n 's/.*URI:\([^, ]*\).*/\1/p')
[[ -n $principal ]] || die "cannot read the admin certificate's URI SAN"

"$bin/examples/upstream" "127.0.0.1:$upstream_port" 2>"$work/upstream.log" &
upstream_pid=$!
pids+=("$upstream_pid")
wait_for "$upstream_pid" 100 upstream port_open "$upstream_port"

# Render envoy/bench/front-proxy.yaml for one configuration into $work/envoy-$1.yaml.
render() {
    local filter="" address
    address="socket_address: {address: 127.0.0.1, port_value: $authz_port}"
    case $1 in
        none) ;;
        rbac) filter=envoy/bench/rbac.yaml ;;
        trivial | trivial-headers) filter=envoy/bench/ext_authz.yaml ;;
        certgate) filter=envoy/bench/ext_authz.yaml
            address="socket_address: {address: 127.0.0.1, port_value: $grpc_port}" ;;
        certgate-unix) filter=envoy/bench/ext_authz.yaml; address="pipe: {path: $socket}" ;;
        *) die "unknown configuration $1 (CONFIGS: none rbac trivial trivial-headers certgate certgate-unix)" ;;
    esac
    python3 - envoy/bench/front-proxy.yaml "$filter" "$work/envoy-$1.yaml" <<PY
import re, sys
template, fragment, out = sys.argv[1:]
values = {
    "LISTEN_PORT": "$listen_port", "ENVOY_ADMIN_PORT": "$envoy_admin_port",
    "UPSTREAM_PORT": "$upstream_port", "SERVER_CERT": "$pki/server.pem",
    "SERVER_KEY": "$pki/server-key.pem", "CA_BUNDLE": "$pki/ca.pem",
    "AUTHZ_ADDRESS": "$address", "PRINCIPAL": "$principal",
}
def fill(text):
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values.get(m.group(1), m.group(0)), text)
lines = []
for line in open(template).read().splitlines():
    if line.strip() == "{{AUTHZ_FILTER}}":
        indent = line[: len(line) - len(line.lstrip())]
        if fragment:
            lines += [indent + l for l in open(fragment).read().splitlines()
                      if l.strip() and not l.lstrip().startswith("#")]
    else:
        lines.append(line)
open(out, "w").write(fill("\n".join(lines) + "\n"))
PY
}

hz=$(getconf CLK_TCK)
secs=$(awk -v d="$DURATION" 'BEGIN { n = d + 0
    if (d ~ /ms$/) n /= 1000; else if (d ~ /m$/) n *= 60; else if (d ~ /h$/) n *= 3600
    print n }')
loadgen_cmd=("$bin/examples/loadgen" --target "https://localhost:$listen_port$LOAD_PATH"
    --cert "$pki/admin.pem" --key "$pki/admin-key.pem" --ca "$pki/ca.pem"
    --connections "$CONNECTIONS" --duration "$DURATION")
envoy_cmd=("$ENVOY_BIN" --concurrency "$ENVOY_CONCURRENCY" --log-level warn --disable-hot-restart)
declare -A runs
for round in $(seq "$ROUNDS"); do
for config in $CONFIGS; do
    render "$config"
    authz_pid=""
    case $config in
        trivial | trivial-headers)
            flags=()
            [[ $config == trivial-headers ]] && flags=(--identity-headers)
            "$bin/examples/trivial_authz" "127.0.0.1:$authz_port" "${flags[@]}" 2>"$work/trivial.log" &
            authz_pid=$!
            pids+=("$authz_pid")
            wait_for "$authz_pid" 100 trivial_authz port_open "$authz_port" ;;
        certgate*)
            "$certgate" serve --config "$pki/certgate.yaml" 2>"$work/certgate.log" &
            authz_pid=$!
            pids+=("$authz_pid")
            wait_for "$authz_pid" 100 certgate http_ok "$admin_port" /readyz ;;
    esac
    "${envoy_cmd[@]}" -c "$work/envoy-$config.yaml" 2>"$work/envoy.log" &
    envoy_pid=$!
    pids+=("$envoy_pid")
    wait_for "$envoy_pid" 100 envoy http_ok "$envoy_admin_port" /ready

    log "round $round/$ROUNDS, $config: ${loadgen_cmd[*]}"
    load=$(cut -d' ' -f1 /proc/loadavg)
    envoy_before=$(cpu_ticks "$envoy_pid")
    authz_before=0
    [[ -z $authz_pid ]] || authz_before=$(cpu_ticks "$authz_pid")
    TIMEFORMAT='%U %S'
    if ! { time "${loadgen_cmd[@]}" >"$work/loadgen.txt" 2>"$work/loadgen.log"; } \
        2>"$work/loadgen.time"; then
        cat "$work/loadgen.txt" "$work/loadgen.log" >&2
        die "$config: loadgen failed"
    fi
    field() { awk -v k="$1" '$1 == k {print $2}' "$work/loadgen.txt"; }
    allowed=$(field allowed)
    requests=$(field requests)
    [[ $allowed == "$requests" && $allowed -gt 0 ]] ||
        { cat "$work/loadgen.txt" >&2; die "$config: not every request was allowed"; }
    envoy_cpu=$(( $(cpu_ticks "$envoy_pid") - envoy_before ))
    authz_cpu="–"; authz_us="–"; authz_rss="–"
    if [[ -n $authz_pid ]]; then
        t=$(( $(cpu_ticks "$authz_pid") - authz_before ))
        authz_cpu=$(awk -v t="$t" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.2f cores", t / hz / s}')
        authz_us=$(awk -v t="$t" -v hz="$hz" -v n="$requests" 'BEGIN {printf "%.1f µs", t / hz / n * 1e6}')
        authz_rss=$(awk -v k="$(hwm_kib "$authz_pid")" 'BEGIN {printf "%.1f MiB", k / 1024}')
    fi
    envoy_cpu=$(awk -v t="$envoy_cpu" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.2f cores", t / hz / s}')
    loadgen_cpu=$(awk -v s="$secs" '{printf "%.2f cores", ($1 + $2) / s}' "$work/loadgen.time")
    row="| $config | $(field rps) | $(lat "$(field p50_us)") | $(lat "$(field p99_us)") |"
    row+=" $(lat "$(field p99.9_us)") | $authz_cpu | $authz_us | $authz_rss | $envoy_cpu |"
    row+=" $loadgen_cpu | $load |"
    # rps, p99 (µs) and the row, one run per line.
    runs[$config]+="$(field rps) $(field p99_us) $row"$'\n'
    printf '%s\n' "$row"
    stop "$envoy_pid"
    [[ -z $authz_pid ]] || stop "$authz_pid"
done
done

# Each configuration's median run by req/s.
rows=()
declare -A rps p99
for config in $CONFIGS; do
    median=$(printf '%s' "${runs[$config]}" | sort -n -k1,1 |
        awk '{ line[NR] = $0 } END { print line[int((NR + 1) / 2)] }')
    read -r rps[$config] p99[$config] row <<<"$median"
    rows+=("$row")
done

ratio() {
    local c=$1
    [[ -n ${rps[$c]:-} && -n ${rps[trivial]:-} ]] || return 0
    awk -v c="$c" -v r="${rps[$c]}" -v rt="${rps[trivial]}" -v p="${p99[$c]}" -v pt="${p99[trivial]}" \
        'BEGIN { printf "| %s / trivial | %.1f%% | %.1f%% |\n", c, 100 * r / rt, 100 * p / pt }'
}
ratios=$(ratio certgate; ratio certgate-unix; ratio trivial-headers)
ratio_headers=""
if [[ -n ${rps[certgate]:-} && -n ${rps[trivial-headers]:-} ]]; then
    ratio_headers=$(awk -v r="${rps[certgate]}" -v rt="${rps[trivial-headers]}" -v p="${p99[certgate]}" \
        -v pt="${p99[trivial-headers]}" \
        'BEGIN { printf "| certgate / trivial-headers | %.1f%% | %.1f%% |\n", 100 * r / rt, 100 * p / pt }')
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null) ]]; then commit="$commit (with uncommitted changes)"; fi
block=$(mktemp)
{
    echo "<!-- scripts/bench-envoy.sh: begin (generated; other sections of this file are kept) -->"
    echo "## Through Envoy, side by side (scripts/bench-envoy.sh)"
    echo
    echo "Written by \`scripts/bench-envoy.sh\`$([[ $QUICK == 1 ]] && echo " (QUICK=1)"). One run on one"
    echo "machine; every process (load generator, Envoy, authorizer, upstream) shares its cores, so"
    echo "compare rows of the same run only. Timings are never asserted."
    echo
    echo "| | |"
    echo "| --- | --- |"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    echo "| commit | $commit |"
    echo "| CPU | $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores |"
    echo "| kernel | $(uname -sr) |"
    echo "| Envoy | $envoy_version |"
    echo "| build | $PROFILE |"
    echo
    echo '```'
    echo "${build_cmd[*]}"
    echo "${envoy_cmd[*]} -c envoy-\$CONFIG.yaml   # envoy/bench/front-proxy.yaml, rendered"
    echo "${loadgen_cmd[*]}" | sed "s#$work#\$TMP#g"
    echo '```'
    echo
    echo "$CONNECTIONS mTLS HTTP/1.1 keep-alive connections, one request in flight on each, $DURATION per"
    echo "configuration and round, $ROUNDS round(s) interleaved, each row the median round by req/s;"
    echo "\`GET $LOAD_PATH\` with the bootstrapped admin certificate (every request"
    echo "allowed). Authorizer CPU is utime+stime during the load, also per request; RSS is its"
    echo "peak (VmHWM); load is the 1-minute load average when the configuration started."
    echo
    echo "| configuration | req/s | p50 | p99 | p99.9 | authz CPU | authz CPU/req | authz RSS | Envoy CPU | loadgen CPU | load |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    if [[ -n $ratios ]]; then
        echo
        echo "| ratio | req/s | p99 |"
        echo "| --- | --- | --- |"
        echo "$ratios"
        [[ -z $ratio_headers ]] || echo "$ratio_headers"
        if [[ -n $ratio_headers ]]; then
            echo
            echo "\`trivial-headers\` answers every check with the header mutations of a certgate allow"
            echo "(six identity headers set, one removed) without deciding anything: the gap between"
            echo "it and \`trivial\` is what Envoy spends applying identity headers, and"
            echo "\`certgate / trivial-headers\` is what certgate's decision costs on top of that."
        fi
    fi
    echo "<!-- scripts/bench-envoy.sh: end -->"
} >"$block"
cat "$block"
write_section scripts/bench-envoy.sh "$OUT" "$block"
rm -f "$block"
log "wrote $OUT"
