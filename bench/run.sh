#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: the service under load (Postgres and SQLite, c=16 and c=64),
# and the pgbench ceilings: the same writes one statement at a time, and the one-statement
# floors of a sign-up and of a confirmation. Needs a local PostgreSQL (as in .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PG="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
cargo build --release --bins
fresh_pg() { psql -w "$PG/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null; }
for c in 16 64; do
  fresh_pg ev_bench
  echo "## PostgreSQL, c=$c"; target/release/emailverify-bench --database-url "$PG/ev_bench" --concurrency "$c" --requests "${REQUESTS:-4000}" | tee /tmp/ev-bench-pg-$c.txt
  dir=$(mktemp -d)
  echo "## SQLite, c=$c"; target/release/emailverify-bench --database-url "sqlite://$dir/bench.db?mode=rwc" --concurrency "$c" --requests "${REQUESTS:-4000}"
  rm -rf "$dir"
done
# pgbench NAME SCRIPT C: one ceiling run, 20 s, with its throughput and latency percentiles.
pgbench_run() {
  local log
  log=$(mktemp -d)
  echo "## $1, c=$3"
  (cd "$log" && pgbench -n -f "$OLDPWD/$2" -c "$3" -j 2 -T "${SECONDS_PER_RUN:-20}" -l "$PG/ev_pgbench" | grep -E "tps|latency average")
  cat "$log"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "pgbench p50 %.2f ms, p99 %.2f ms\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}'
  rm -rf "$log"
}
fresh_pg ev_pgbench
DATABASE_URL="$PG/ev_pgbench" target/release/emailverify migrate
# Live tokens for the confirm ceiling: more than both of its runs can use.
psql -w "$PG/ev_pgbench" -v rows=200000 -q -f bench/pgbench-confirm-seed.sql
for c in 16 64; do
  # The same writes as a sign-up, a statement each in one transaction (8 round trips) ...
  pgbench_run "pgbench ceiling (sign-up's writes, 8 round trips)" bench/pgbench-signup.sql "$c"
  # ... and the floor: every row a sign-up writes, in ONE statement, autocommit.
  pgbench_run "one-statement ceiling (sign-up)" bench/pgbench-signup-one.sql "$c"
  # A confirmation's changes in ONE statement, on the seeded live tokens.
  pgbench_run "one-statement ceiling (confirm)" bench/pgbench-confirm-one.sql "$c"
done
# Open loop: a steady rate, each mail timed from its RPC's answer to its arrival at the sink.
# At 20/s, and at half the sign-up capacity measured above (PostgreSQL, c=64).
capacity=$(awk -F'|' '/RequestVerification/ {gsub(/ /, "", $5); print $5}' /tmp/ev-bench-pg-64.txt)
for rate in 20 $((capacity / 2)); do
  fresh_pg ev_bench
  echo "## open loop, PostgreSQL, $rate sign-ups/s for ${OPEN_LOOP_DURATION:-60s}"
  target/release/emailverify-bench --database-url "$PG/ev_bench" --rate "$rate" --duration "${OPEN_LOOP_DURATION:-60s}"
done
