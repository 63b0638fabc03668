#!/usr/bin/env bash
# What WatchEvents watchers that never read cost (BENCHMARKS.md, "Watchers that never
# read"): one service process, sign-ups with no watcher, then with 2,000 idle watchers;
# p50/p99, the service's CPU per sign-up and its CPU while nothing is asked. The service
# runs on CPU 1, the load generator (and its SMTP sink) on CPU 0; PostgreSQL wherever the
# kernel puts it. Needs a local PostgreSQL (as in .ci/run). A minute or so.
set -euo pipefail
cd "$(dirname "$0")/.."
PG="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
cargo build --release --bins
psql -w "$PG/postgres" -qc "DROP DATABASE IF EXISTS ev_bench_watch" -c "CREATE DATABASE ev_bench_watch" >/dev/null
taskset -c 0 target/release/emailverify-bench --database-url "$PG/ev_bench_watch" \
  --service-cpus 1 --idle-watchers "${WATCHERS:-2000}" --requests "${REQUESTS:-2000}" \
  --concurrency "${CONCURRENCY:-16}" --warmup 200
