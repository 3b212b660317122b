#!/usr/bin/env bash
# scripts/soak.sh — the soak (bench/src/soak.rs): a steady mixed load (reads, actions,
# registrations, product updates; every write with an Idempotency-Key, retried until it gets
# a definite answer) on the local stack for MINUTES minutes, with one fault a minute, in turn:
# the runtime killed (SIGKILL) and started again, a Kafka node killed and restarted, Redis
# restarted, Postgres restarted. Not part of scripts/test.sh.
#
# Usage:
#   scripts/soak.sh [MINUTES] [RECSYS_BENCH_ARGS...]   (default 10 minutes, 100 requests/s)
#     e.g. scripts/soak.sh 15 --soak-rate 150
#
# Writes bench/soak.json: per minute the requests and answers by status, p99, the runtime's
# RSS and open files, the most consumer lag; per fault its time and recovery (until a write and
# a read succeed again); the exact accounting of every accepted action (event ids against
# user_activity, analytics counters, popularity scores); and the budget: no 5xx or failed
# request outside the fault windows, RSS growth below 10% after the first minute, exact
# accounting. Logs of the runtimes go to $RECSYS_CACHE/soak/. Exit status 1 when the budget
# is not met.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RECSYS_LOG_TAG=soak

main() {
  local minutes=10
  if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    minutes=$1
    shift
  fi
  cd "$RECSYS_ROOT"
  section "stack"
  bash "$RECSYS_ROOT/scripts/stack.sh" up
  section "build (release)"
  cargo build --release -p recsys --bin recsys -p recsys-bench --bin recsys-bench
  section "soak ($minutes minutes)"
  run_recsys_bench "$RECSYS_CACHE/soak" "$RECSYS_ROOT/bench/soak.json" \
    --phases soak --soak-minutes "$minutes" "$@"
  python3 - "$RECSYS_ROOT/bench/soak.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
sys.exit(0 if report["budget"]["met"] else 1)
PY
}

main "$@"
