#!/usr/bin/env bash
# Issue 21's figures with PostgreSQL on a core of its own, as in production: PostgreSQL
# pinned to CPU 1 (the postmaster and every backend; new backends inherit it), and the
# service, the load generator and pgbench pinned to CPU 0. For c=16 and c=64, each binary
# given (e.g. the build before a change and after it) runs emailverify-bench (sign-ups,
# then a confirmation of each), and pgbench runs the two one-statement ceilings and, as
# the service sends them (prepared), the reads it makes before each (pgbench-*-read.sql); for
# every run, PostgreSQL's CPU-seconds per unit of work are read from /proc (utime+stime of
# its live processes plus what the postmaster reaped from exited backends), so other work
# on the machine does not count in them.
#   bash bench/pinned.sh BINARY [BINARY ...]     (default: target/release/emailverify)
# Needs a local PostgreSQL (as in .ci/run) whose processes this user may pin (root here).
set -euo pipefail
cd "$(dirname "$0")/.."
PG="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
REQUESTS="${REQUESTS:-4000}"
[ $# -eq 0 ] && set -- target/release/emailverify
# This server's postmaster (not another cluster's, e.g. a test's private one) and its children.
postmaster=$(head -n1 "$(psql -w "$PG/postgres" -Atc "SHOW data_directory")/postmaster.pid")
pg_pids() { echo "$postmaster"; pgrep -P "$postmaster" || true; }
# PostgreSQL on CPU 1: the postmaster and its children now; later backends inherit it.
# Every CPU again when the script ends, however it ends.
all_cpus=$(taskset -pc "$postmaster" | sed 's/.*: //')
trap 'for pid in $(pg_pids); do taskset -pc "$all_cpus" "$pid" >/dev/null 2>&1 || true; done' EXIT
for pid in $(pg_pids); do taskset -pc 1 "$pid" >/dev/null; done
# CPU ticks of PostgreSQL so far: every live process's utime+stime, plus the postmaster's
# cutime+cstime (its exited, reaped backends).
pg_ticks() {
  local total=0 pid f
  for pid in $(pg_pids); do
    f=$(cut -d' ' -f14-17 "/proc/$pid/stat" 2>/dev/null) || continue
    set -- $f
    total=$((total + $1 + $2))
    [ "$pid" = "$postmaster" ] && total=$((total + $3 + $4))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)
# Until the run's backends have exited and been reaped (at most 10 s): a backend that has
# exited but is not yet reaped is neither live nor in the postmaster's cutime, so reading
# before then leaves its CPU out (seen: runs that read 30 % low).
settle() {
  local n
  for _ in $(seq 1 100); do
    n=$(psql -w "$PG/postgres" -Atc "SELECT count(*) FROM pg_stat_activity WHERE datname IN ('ev_bench', 'ev_pgbench')")
    [ "$n" = 0 ] && break
    sleep 0.1
  done
  sleep 0.5
}
per_unit() { # TICKS_BEFORE UNITS -> ms of PostgreSQL CPU per unit
  settle
  awk -v d="$(($(pg_ticks) - $1))" -v n="$2" -v hz="$hz" 'BEGIN {printf "%.3f", d / hz * 1000 / n}'
}
fresh_pg() { psql -w "$PG/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null 2>&1; }
pgbench_run() { # NAME SCRIPT C [PROTOCOL]
  local before out tx
  before=$(pg_ticks)
  out=$(taskset -c 0 pgbench -n -M "${4:-simple}" -f "$2" -c "$3" -j 2 -T "${SECONDS_PER_RUN:-20}" "$PG/ev_pgbench" 2>&1)
  tx=$(echo "$out" | awk '/number of transactions actually processed/ {print $NF}' | cut -d/ -f1)
  echo "$1 c=$3 $(echo "$out" | grep -E '^tps' | sed 's/ (without initial connection time)//') pg_cpu_ms_per_tx=$(per_unit "$before" "$tx")"
}
fresh_pg ev_pgbench
DATABASE_URL="$PG/ev_pgbench" "$1" migrate >/dev/null 2>&1
psql -w "$PG/ev_pgbench" -v rows=300000 -q -f bench/pgbench-confirm-seed.sql
for c in 16 64; do
  for bin in "$@"; do
    fresh_pg ev_bench
    before=$(pg_ticks)
    out=$(taskset -c 0 target/release/emailverify-bench --service "$bin" --service-cpus 0 \
      --database-url "$PG/ev_bench" --concurrency "$c" --requests "$REQUESTS" \
      --pg-postmaster "$postmaster")
    echo "$out" | grep -E "RequestVerification|ConfirmLink|pg_backends_ms_per_pair" | sed "s|^|$bin c=$c |"
    # Every sign-up of the run (the warm-up's too) against the confirmed pairs: an upper bound.
    echo "$bin c=$c pg_cpu_ms_per_signup_and_confirm=$(per_unit "$before" "$REQUESTS") (includes the 500 warm-up sign-ups)"
  done
  pgbench_run signup-one bench/pgbench-signup-one.sql "$c"
  pgbench_run signup-read bench/pgbench-signup-read.sql "$c" prepared
  pgbench_run confirm-one bench/pgbench-confirm-one.sql "$c"
  pgbench_run confirm-read bench/pgbench-confirm-read.sql "$c" prepared
done
