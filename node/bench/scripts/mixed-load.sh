#!/usr/bin/env bash
# Both loads at once against one node (issue 10, defect 10): the WebSocket bus at a fixed rate
# and Matrix sends with receivers, from two rethink-bench processes. Prints both reports.
#
#   node/bench/scripts/mixed-load.sh [NODE_BIN] [BENCH_BIN] [BUS_RATE] [MATRIX_RATE]
#
# Defaults: target/release/rethink-node, target/release/rethink-bench, 20000 messages/s,
# 200 sends/s. The node gets a fresh data directory and port 9311.
set -euo pipefail
NODE=${1:-target/release/rethink-node}
BENCH=${2:-target/release/rethink-bench}
BUS_RATE=${3:-20000}
MATRIX_RATE=${4:-200}
DATA=$(mktemp -d)
PORT=9311
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
RETHINK_DOMAIN=bench.local RETHINK_LISTEN=127.0.0.1:$PORT RETHINK_DATA_DIR=$DATA RETHINK_LOG=warn \
  RETHINK_SESSION__RATE_PER_SECOND=1000000 RETHINK_SESSION__RATE_BURST=1000000 \
  RETHINK_MATRIX__RATE_LIMIT__ENABLED=false \
  "$NODE" &
PID=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  sleep 0.1
done
# The bus load runs for 45 s; the Matrix load starts once the bus load is under way (its setup
# registers users, a few seconds) and measures 15 s inside that window.
"$BENCH" ws --url ws://127.0.0.1:$PORT/ws --node-pid "$PID" --domain bench.local \
  --runtimes 100 --rate "$BUS_RATE" --duration 45 --warmup 2 > "$DATA/ws.txt" 2>&1 &
WS=$!
sleep 5
"$BENCH" matrix --url http://127.0.0.1:$PORT --node-pid "$PID" --domain bench.local \
  --users 20 --rooms 4 --senders 4 --rate "$MATRIX_RATE" --duration 15 --warmup 2
wait "$WS" || true
echo "--- bus load (ws) ---"
cat "$DATA/ws.txt"
