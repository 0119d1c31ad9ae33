#!/usr/bin/env bash
# The PostgreSQL and NATS CPU of one `rethink-bench cluster` run (issue 14's capacity model):
# the CPU time (utime + stime, also of exited children) of the PostgreSQL server's process tree
# and of the NATS server over the whole run, next to the bench's own report.
#
#   node/bench/scripts/cluster-costs.sh BENCH PG_DIR NATS_DIR [cluster options...]
#
# PG_DIR and NATS_DIR are directories of `scripts/pg-test-server start` and
# `scripts/nats-test-server start` (their url files are read); each run gets a fresh database.
set -euo pipefail
bench="$1" pg_dir="$2" nats_dir="$3"
shift 3
pg_url="$(cat "$pg_dir/url")"
nats_url="$(cat "$nats_dir/url")"
postmaster="$(head -n 1 "$(cat "$pg_dir/datadir")/postmaster.pid")"
nats_port="${nats_url##*:}"
nats_pid="$(pgrep -f "nats-server.*$nats_port" | head -n 1)"

# Ticks of a process and its children, live and exited (fields 14-17 of /proc/PID/stat).
ticks() {
    local total=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13 + $14 + $15}')))
    done
    echo "$total"
}
tree() { echo "$1"; pgrep -P "$1" || true; }

db="bench_$(date +%s)_$$"
psql -q "$pg_url" -c "CREATE DATABASE $db"
base="${pg_url%/*}"
pg0="$(ticks $(tree "$postmaster"))"
nats0="$(ticks "$nats_pid")"
start="$(date +%s.%N)"
"$bench" cluster --pg-url "$base/$db" --nats-url "$nats_url" "$@" 2> >(grep -v ' INFO \| WARN ' >&2)
end="$(date +%s.%N)"
pg1="$(ticks $(tree "$postmaster"))"
nats1="$(ticks "$nats_pid")"
awk -v p="$((pg1 - pg0))" -v n="$((nats1 - nats0))" -v s="$start" -v e="$end" 'BEGIN {
    printf "whole run %.1f s: PostgreSQL %.2f s of CPU (%.2f cores), NATS %.2f s (%.2f cores)\n",
        e - s, p / 100, p / 100 / (e - s), n / 100, n / 100 / (e - s) }'
