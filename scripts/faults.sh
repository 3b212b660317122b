#!/usr/bin/env bash
# scripts/faults.sh — the fault scenarios (tests/api/faults.rs), each bounded in
# time by .config/nextest.toml (killed after 180 s). Run by scripts/test.sh
# after the rest of the suite; runnable alone against the local stack.
#
# Usage:
#   scripts/faults.sh [FILTER]    e.g. scripts/faults.sh paused
#
# Each scenario drives a workload through the public HTTP API, records every
# acknowledged write, injects a fault, heals it, waits for the outbox to drain
# and the consumers to catch up, then checks the analytics counters and the
# recommendation scores against the committed writes: nothing lost, nothing
# counted twice. The scenarios print their figures (stderr, shown by nextest
# with --no-capture):
#   - runtime killed with SIGKILL mid-load, restarted (static group membership)
#   - broker paused (SIGSTOP) for 20 s
#   - broker killed and restarted on its durable store
#   - Postgres unreachable for 20 s (a TCP proxy cut by the test)
#   - poison records in both topics during the load
# Redis unreachable for 20 s is in tests/api/consumer.rs (it needs its own
# redis-server) and runs with the main suite.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RECSYS_LOG_TAG=faults

cd "$RECSYS_ROOT"
export KAFKA_ADDRESS="${KAFKA_ADDRESS:-127.0.0.1:9092}"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}"
export REDIS_ADDRESS="${REDIS_ADDRESS:-127.0.0.1:6379}"
export TANSU_BIN
filter='binary(api) & test(/^faults::/)'
if [[ $# -gt 0 ]]; then
  filter+=" & test(/$1/)"
fi
# --no-capture prints each scenario's figures; it also runs them one at a time,
# which keeps their timings apart.
cargo nextest run --workspace --no-fail-fast --no-capture -E "$filter"
