#!/usr/bin/env bash
# Runs one `burnledger bench` command several times and prints the median
# of each figure, for README's performance table (this machine is shared
# and noisy: single runs mislead).
#
#   benches/medians.sh RUNS bench-args...
#   benches/medians.sh 5 withdrawals --accounts 100000 --ops 4000000 --sync fsync
#
# Builds the release binary first. Prints every run's JSON line on stderr
# and one JSON object of medians on stdout.
set -euo pipefail
runs="$1"
shift
cargo build --release --quiet
binary="$(dirname "$0")/../target/release/burnledger"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
for _ in $(seq "$runs"); do
    "$binary" bench "$@" --json 2>/dev/null | tee -a "$results" >&2
done
python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
first = rows[0]
median = lambda key: statistics.median(r[key] for r in rows)
out = {k: first[k] for k in ("workload", "sync", "accounts", "shards", "in_flight", "batch")}
out["runs"] = len(rows)
out["ops"] = median("ops")
out["ops_per_sec"] = round(median("ops_per_sec"))
out["ops_per_sec_all"] = sorted(round(r["ops_per_sec"]) for r in rows)
out["latency_us"] = {p: median_p for p, median_p in
                     ((p, statistics.median(r["latency_us"][p] for r in rows))
                      for p in ("p50", "p99", "p999", "max"))}
out["peak_rss_bytes"] = round(median("peak_rss_bytes"))
out["baseline_ops_per_sec"] = round(median("baseline_ops_per_sec"))
out["ratio_to_baseline"] = round(median("ratio_to_baseline"), 3)
out["errors"] = sum(r["errors"] for r in rows)
print(json.dumps(out))
EOF
