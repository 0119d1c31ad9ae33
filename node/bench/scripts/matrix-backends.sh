#!/bin/bash
# Interleaved single-node Matrix sends, SQLite against PostgreSQL (store.url): ROUNDS pairs.
# Needs a release build (BIN, default target/release) and a PostgreSQL server (PG_URL).
set -u
BIN=${BIN:-target/release}
PGURL=${PG_URL:?set PG_URL to a PostgreSQL server URL (scripts/pg-test-server start DIR; cat DIR/url)}
for r in $(seq 1 ${1:-2}); do
 for backend in sqlite pg; do
  dir=$(mktemp -d); port=$((20000 + RANDOM % 20000))
  env=()
  if [ $backend = pg ]; then
    db=mxbench_${r}_$$; psql "$PGURL" -qc "CREATE DATABASE $db" >/dev/null
    env=(RETHINK_STORE__URL=${PGURL%/*}/$db)
  fi
  env "${env[@]}" RETHINK_DOMAIN=bench.local RETHINK_LISTEN=127.0.0.1:$port RETHINK_DATA_DIR=$dir RETHINK_MATRIX__RATE_LIMIT__ENABLED=false RUST_LOG=warn $BIN/rethink-node > $dir/log 2>&1 &
  pid=$!
  for i in $(seq 1 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  echo "== round $r $backend"
  $BIN/rethink-bench matrix --url http://127.0.0.1:$port --node-pid $pid --domain bench.local --users 10 --rooms 10 --senders 10 --duration 10 --warmup 2 2>&1 | grep -iE "sends/s|send latency|throughput|p50|p99|cpu" | head -8
  kill $pid; wait $pid 2>/dev/null; rm -rf $dir
 done
done
