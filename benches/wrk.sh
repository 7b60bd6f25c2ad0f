#!/usr/bin/env bash
# The HTTP figure of README's performance table: `serve` (release build,
# --sync fsync, a fresh temporary data folder) under wrk, an independent
# load generator, with 64 keep-alive connections POSTing deposits
# (benches/deposits.lua) on the same machine:
#
#   wrk -t2 -c64 -d30s --latency -s benches/deposits.lua URL
#
#   benches/wrk.sh [RUNS]        # default 3 runs; prints each run and the medians
#
# Also prints the server's CPU time per request (utime + stime from
# /proc/PID/stat over the wrk run): on a shared machine req/s follows the
# load, CPU per request hardly does.
#
# Environment: BURNLEDGER_BIN (default: build and use target/release/burnledger),
# WRK_DURATION (default 30s), BENCH_ACCOUNTS / BENCH_KEYS (read by the Lua
# script). Needs wrk (Debian: apt-get install wrk). A fresh server and data
# folder per run; the server is stopped with SIGTERM (it snapshots and exits)
# after each. Any non-2xx answer or socket error fails the script.
set -euo pipefail
runs="${1:-3}"
here="$(cd "$(dirname "$0")" && pwd)"
duration="${WRK_DURATION:-30s}"
if [[ -z "${BURNLEDGER_BIN:-}" ]]; then
    (cd "$here/.." && cargo build --release --quiet)
    BURNLEDGER_BIN="${CARGO_TARGET_DIR:-$here/../target}/release/burnledger"
fi
command -v wrk >/dev/null || { echo "wrk.sh: wrk is not installed" >&2; exit 2; }

work="$(mktemp -d)"
server=""
cleanup() {
    if [[ -n "$server" ]]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Starts `serve` on a free port; sets $server (its pid) and $url.
start_server() {
    rm -rf "$work/data" && mkdir "$work/data"
    "$BURNLEDGER_BIN" serve --data-dir "$work/data/ledger" --listen 127.0.0.1:0 \
        --sync fsync --payout-mode external >"$work/stdout" 2>"$work/stderr" &
    server=$!
    for _ in $(seq 300); do
        url="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/stdout" | head -n1)"
        [[ -n "$url" ]] && return 0
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    echo "wrk.sh: serve did not start:" >&2
    cat "$work/stderr" >&2
    exit 2
}

# CPU ticks (1/100 s) the server has used so far: utime + stime.
server_ticks() {
    sed 's/.*) //' "/proc/$server/stat" | awk '{print $12 + $13}'
}

stop_server() {
    kill -TERM "$server"
    wait "$server" || { echo "wrk.sh: serve exited with $? after SIGTERM" >&2; exit 2; }
    server=""
}

: >"$work/results"
for run in $(seq "$runs"); do
    start_server
    echo "== run $run/$runs: $(uptime)"
    echo "   wrk -t2 -c64 -d$duration --latency -s benches/deposits.lua $url"
    ticks_before="$(server_ticks)"
    wrk -t2 -c64 -d"$duration" --latency -s "$here/deposits.lua" "$url" | tee "$work/wrk.out"
    echo "server CPU ticks: $(( $(server_ticks) - ticks_before ))" | tee -a "$work/wrk.out"
    stop_server
    python3 - "$work/wrk.out" >>"$work/results" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
def ms(value, unit):
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
pct = {p: ms(v, u) for p, v, u in re.findall(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
requests = int(re.search(r"(\d+) requests in", text).group(1))
ticks = int(re.search(r"server CPU ticks: (\d+)", text).group(1))
sock = re.search(r"Socket errors:.*", text)
print(json.dumps({"requests_per_sec": rps, "p50_ms": pct.get("50"), "p90_ms": pct.get("90"),
                  "p99_ms": pct.get("99"), "non_2xx": int(bad.group(1)) if bad else 0,
                  "server_cpu_us_per_request": round(ticks * 1e4 / max(requests, 1), 2),
                  "socket_errors": sock.group(0) if sock else None}))
PY
done

python3 - "$work/results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
med = lambda k: statistics.median(r[k] for r in rows)
print(json.dumps({
    "runs": len(rows),
    "requests_per_sec": round(med("requests_per_sec")),
    "requests_per_sec_all": sorted(round(r["requests_per_sec"]) for r in rows),
    "p50_ms": med("p50_ms"), "p90_ms": med("p90_ms"), "p99_ms": med("p99_ms"),
    "p99_ms_all": sorted(r["p99_ms"] for r in rows),
    "server_cpu_us_per_request": med("server_cpu_us_per_request"),
    "non_2xx": sum(r["non_2xx"] for r in rows),
    "socket_errors": [r["socket_errors"] for r in rows if r["socket_errors"]],
}))
bad = sum(r["non_2xx"] for r in rows) or any(r["socket_errors"] for r in rows)
sys.exit(1 if bad else 0)
PY
