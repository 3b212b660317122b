#!/usr/bin/env bash
# scripts/bench.sh — the benchmarks (bench/, the recsys-bench binary): read path,
# write path, event pipeline, freshness, cache under writes, memory and scale-out,
# each against a ceiling measured in the same run on this machine or an absolute
# target. Not part of scripts/test.sh.
#
# Usage:
#   scripts/bench.sh [RECSYS_BENCH_ARGS...]
#     e.g. scripts/bench.sh --phases read,write --rounds 5
#          scripts/bench.sh --events 200000          (a shorter pipeline phase)
#          scripts/bench.sh --phases cache           (the Redis hit ratio under writes)
#
# Steps:
#   1. scripts/stack.sh up (Postgres, Redis, the three-node Kafka cluster)
#   2. install wrk and pgbench (Debian packages) if missing
#   3. cargo build --release of recsys and recsys-bench
#   4. recsys-bench: on the stack's Kafka cluster (topics with three replicas,
#      min.insync.replicas 2, as deployed) and Postgres, starts its own databases
#      and runtime processes; prints a table; writes bench/results.json; deletes
#      the topics and consumer groups it created
# Logs of the runtimes go to $RECSYS_CACHE/bench/.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RECSYS_LOG_TAG=bench

main() {
  cd "$RECSYS_ROOT"
  section "stack"
  bash "$RECSYS_ROOT/scripts/stack.sh" up
  section "tools"
  have wrk || apt_install wrk
  have pgbench || apt_install postgresql-client
  section "build (release)"
  cargo build --release -p recsys --bin recsys -p recsys-bench --bin recsys-bench
  section "bench"
  run_recsys_bench "$RECSYS_CACHE/bench" "$RECSYS_ROOT/bench/results.json" "$@"
}

main "$@"
