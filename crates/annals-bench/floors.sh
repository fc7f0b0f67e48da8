#!/usr/bin/env bash
# Every figure BENCHMARKS.md's "Current figures" table holds, in one run: the fsync
# ceiling with and without idle pauses, w2 alternated over embedded / http /
# http-per-request (five rounds), `all` on embedded, memory and PostgreSQL (three runs
# each), the projector, the publisher to NATS and the pour (three runs), `all` over HTTP
# once on embedded and once on PostgreSQL, and the maintenance tools (export, import,
# copy to PostgreSQL).
# Prints the bench's JSON lines and the maintenance lines; run it on a quiet machine.
#
#   crates/annals-bench/floors.sh > floors.log
#
# Needs PostgreSQL (ANNALS_TEST_POSTGRES_URL, default the local server) and NATS with
# JetStream on 127.0.0.1:4222.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
export ANNALS_TEST_POSTGRES_URL="${ANNALS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo build -q --release -p annals-bench --features nats,postgres
cargo build -q --release -p annals-maintenance --example maintenance_bench
bench="$CARGO_TARGET_DIR/release/annals-bench"
maintenance="$CARGO_TARGET_DIR/release/examples/maintenance_bench"
echo "# start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) commit $(git rev-parse --short HEAD)"
# The machine's disk: syncs back to back, and after a 200 µs idle pause each (the HTTP
# path's round trip leaves the disk idle about that long between commits).
"$bench" --backend embedded --workload fsync
"$bench" --backend embedded --workload fsync --fsync-pause-us 200
for _ in 1 2 3 4 5; do
  for backend in embedded http http-per-request; do "$bench" --backend "$backend" --workload w2; done
done
for backend in embedded memory postgres; do
  for _ in 1 2 3; do "$bench" --backend "$backend" --workload all; done
done
for _ in 1 2 3; do
  "$bench" --backend embedded --workload projector
  "$bench" --backend embedded --workload publisher-nats
  "$bench" --backend embedded --workload pour
done
"$bench" --backend http --workload all
"$bench" --backend http-postgres --workload all
"$maintenance" 500000 3
echo "# end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
