#!/usr/bin/env bash
# Two builds of the service, back to back, then the one-statement ceilings, twice over, at
# c=16 and c=64 (PostgreSQL): the paired figures of BENCHMARKS.md ("Toward one round trip").
#   bash bench/compare.sh BEFORE_BINARY AFTER_BINARY
# e.g. build the older commit with `git worktree add`, `cargo build --release`, and pass its
# target/release/emailverify. Needs a local PostgreSQL (as in .ci/run).
# BENCH_ARGS adds options to every service run, e.g. BENCH_ARGS="--db-delay 1ms" (each round
# trip to the database 1 ms longer, as across zones; the ceilings are then left out: pgbench
# would need the same relay).
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2
PG="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
cargo build --release --bins
fresh_pg() { psql -w "$PG/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null 2>&1; }
pgbench_run() { # NAME SCRIPT C
  local log
  log=$(mktemp -d)
  (cd "$log" && pgbench -n -f "$OLDPWD/$2" -c "$3" -j 2 -T "${SECONDS_PER_RUN:-20}" -l "$PG/ev_pgbench" | grep -E "^tps" | sed "s/^/$1 c=$3 /")
  cat "$log"/pgbench_log.* | awk '{print $3}' | sort -n |
    awk -v n="$1 c=$3" '{a[NR]=$1} END {printf "%s p50 %.2f ms, p99 %.2f ms\n", n, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}'
  rm -rf "$log"
}
fresh_pg ev_pgbench
DATABASE_URL="$PG/ev_pgbench" target/release/emailverify migrate >/dev/null 2>&1
psql -w "$PG/ev_pgbench" -v rows=300000 -q -f bench/pgbench-confirm-seed.sql
for run in 1 2; do
  for c in 16 64; do
    for which in before after; do
      fresh_pg ev_bench
      bin=$before
      [ "$which" = after ] && bin=$after
      # shellcheck disable=SC2086 # BENCH_ARGS: several words
      target/release/emailverify-bench --service "$bin" --database-url "$PG/ev_bench" --concurrency "$c" \
        --requests "${REQUESTS:-4000}" ${BENCH_ARGS:-} | grep -E "RequestVerification|ConfirmLink|RSS" | sed "s/^/$which run $run /"
    done
    [ -n "${BENCH_ARGS:-}" ] && continue
    pgbench_run signup-one bench/pgbench-signup-one.sql "$c"
    pgbench_run confirm-one bench/pgbench-confirm-one.sql "$c"
  done
done
