# shellcheck shell=bash
# Shell helpers shared by scripts/bench.sh, bench-envoy.sh and bench-dynamodb.sh (sourced,
# not run). They expect `set -euo pipefail` in the caller.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# SIGTERM process $1, SIGKILL after 5s; quiet if it is already gone.
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# $1 distinct free loopback ports (held together so they differ; a race with another process
# binding one first is possible but harmless: startup then fails loudly).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# HTTP status of GET http://127.0.0.1:$1$2, with bash's /dev/tcp (no curl needed).
http_status() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
    IFS=' ' read -r -t 2 _ line _ <&3 || line=""
    exec 3<&- 3>&-
    printf '%s' "$line"
}
http_ok() { [[ $(http_status "$1" "$2" 2>/dev/null || true) == 200 ]]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait up to $2 tenths of a second for "$4…" (a command) to succeed while process $1 lives.
wait_for() {
    local pid=$1 tenths=$2 what=$3
    shift 3
    for _ in $(seq "$tenths"); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during startup"
        if "$@"; then return 0; fi
        sleep 0.1
    done
    die "$what not ready within $((tenths / 10))s"
}

# utime + stime of a process, in clock ticks (the comm field may hold spaces: cut after ')').
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

# A latency in µs as a table cell: µs below 1 ms, ms from there.
lat() { awk -v v="$1" 'BEGIN { if (v >= 1000) printf "%.2f ms", v / 1000; else printf "%.0f µs", v }'; }

# Put the block in file $3 into report $2 between the markers of script $1, replacing the
# previous run's section; other sections stay as they are. A missing section is appended,
# or with $4 = top, put right after the title.
write_section() {
    mkdir -p "$(dirname "$2")"
    python3 - "$1" "$2" "$3" "${4:-}" <<'PY'
import pathlib, re, sys
name, out, block, where = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]).read_text(), sys.argv[4]
text = out.read_text() if out.exists() else "# Benchmarks\n"
pattern = re.compile(rf"<!-- {re.escape(name)}: begin.*?<!-- {re.escape(name)}: end -->\n", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: block, text)
elif where == "top":
    title, _, rest = text.partition("\n")
    text = f"{title}\n\n{block}{rest}"
else:
    text = text.rstrip("\n") + "\n\n" + block
out.write_text(text)
PY
}
