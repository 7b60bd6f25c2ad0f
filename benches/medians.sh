#!/usr/bin/env bash
# Runs one `burnledger bench` command several times and prints the median
# of each figure, for README's performance table (this machine is shared
# and noisy: single runs mislead, so each run's load average is printed
# beside it, and the in-run baseline ratio is the figure to compare).
#
#   benches/medians.sh RUNS bench-args...
#   benches/medians.sh 5 withdrawals --accounts 100000 --ops 4000000 --sync fsync
#
# Builds the release binary first (in $CARGO_TARGET_DIR if set), unless
# BURNLEDGER_BIN names the binary to run. Prints every run's JSON line, with
# the load average before it, on stderr and one JSON object of medians on
# stdout.
set -euo pipefail
runs="$1"
shift
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=benches/release_bin.sh
source "$here/release_bin.sh"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
for _ in $(seq "$runs"); do
    echo "load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    "$BURNLEDGER_BIN" bench "$@" --json 2>/dev/null | tee -a "$results" >&2
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
first = rows[0]
median = lambda key: statistics.median(r[key] for r in rows)
out = {k: first[k] for k in ("workload", "sync", "accounts", "shards", "in_flight", "batch")}
out["runs"] = len(rows)
out["ops"] = median("ops")
out["ops_per_sec"] = round(median("ops_per_sec"))
out["ops_per_sec_all"] = sorted(round(r["ops_per_sec"]) for r in rows)
out["latency_us"] = {p: statistics.median(r["latency_us"][p] for r in rows)
                     for p in ("p50", "p90", "p99", "p999", "max") if p in first["latency_us"]}
out["p99_us_all"] = sorted(r["latency_us"]["p99"] for r in rows)
out["peak_rss_bytes"] = round(median("peak_rss_bytes"))
out["peak_rss_mib_all"] = sorted(round(r["peak_rss_bytes"] / 2**20) for r in rows)
if first.get("cpu_us_per_op") is not None:
    out["cpu_us_per_op"] = round(median("cpu_us_per_op"), 3)
    out["cpu_us_per_op_all"] = sorted(round(r["cpu_us_per_op"], 3) for r in rows)
out["baseline_ops_per_sec"] = round(median("baseline_ops_per_sec"))
out["ratio_to_baseline"] = round(median("ratio_to_baseline"), 3)
out["ratio_all"] = sorted(round(r["ratio_to_baseline"], 3) for r in rows)
if first.get("rate"):
    out["offered_ops_per_sec"] = first["rate"]["offered_ops_per_sec"]
    out["late_batches_all"] = [r["rate"]["late_batches"] for r in rows]
    out["capped_batches_all"] = [r["rate"]["capped_batches"] for r in rows]
out["errors"] = sum(r["errors"] for r in rows)
print(json.dumps(out))
PY
