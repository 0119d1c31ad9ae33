#!/usr/bin/env bash
# Under a runaway stub, do other sessions keep their latency? (issue 11: p99 within 2x of the
# quiet figure.) Runs `rethink-bench ws` at a fixed rate PAIRS times, alternating quiet and
# attacked, each on a fresh node started by the bench with node/bench/scripts/runaway-stub.toml
# (the probe stub as `runaway`): the attacked run adds `--attack-stub` (the probe's `spin`
# without a limit, ATTACK_RATE per second), whose report lists the answers (504 per call past
# its deadline, 503 once the breaker is open) and the node's rethink_stub_* metrics.
#
#   node/bench/scripts/runaway-stub.sh [BENCH_BIN] [RATE] [PAIRS] [DURATION] [ATTACK_RATE]
#
# Defaults: target/release/rethink-bench (next to target/release/rethink-node), 10000
# messages/s over 100 runtimes, 3 pairs, 4 s measured after 1 s of warm-up (the window lies
# inside the first five deadlines, before the breaker opens: 5 x 1 s + backoff), 2 spins/s.
# Run from the repository root. Prints each report, then one summary line per run.
set -euo pipefail
BENCH=${1:-${CARGO_TARGET_DIR:-target}/release/rethink-bench}
RATE=${2:-10000}
PAIRS=${3:-3}
DURATION=${4:-4}
ATTACK_RATE=${5:-2}
CONFIG=node/bench/scripts/runaway-stub.toml
STUB=hyperty://bench.local/runaway
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
run() { # name, extra args...
  local name=$1; shift
  "$BENCH" ws --node-config "$CONFIG" --domain bench.local --runtimes 100 --rate "$RATE" \
    --duration "$DURATION" --warmup 1 --json "$@" > "$OUT/$name.json"
  python3 - "$OUT/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["traffic"]; a = r.get("attack")
l, s = t["latency_us"], t["service_latency_us"]
line = (f'{sys.argv[2]:<12} {t["messages_per_sec"]:>9.0f} msg/s  lost {t["lost"]}  '
        f'p50/p99/p99.9 ms from scheduled {l["p50"]/1e3:.2f}/{l["p99"]/1e3:.2f}/{l["p99_9"]/1e3:.2f}'
        f'  from actual {s["p50"]/1e3:.2f}/{s["p99"]/1e3:.2f}/{s["p99_9"]/1e3:.2f}')
if a:
    ans = ", ".join(f'{c}: {v["count"]} ({v["first_secs"]}-{v["last_secs"]} s)' for c, v in a["answers"].items())
    line += f'  | attack sent {a["sent"]}, {ans}, unanswered {a["unanswered"]}'
    m = a["stub_metrics"]
    if isinstance(m, list):
        keep = [x for x in m if "restarts" in x or "breaker" in x or "failures" in x or x.startswith("rethink_stub_calls")]
        line += "  | " + "; ".join(keep)
print(line)
PY
}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$PAIRS"); do
  run "quiet-$i"
  run "attacked-$i" --attack-stub "$STUB" --attack-rate "$ATTACK_RATE"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
done
