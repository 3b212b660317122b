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
#   - survivor: two runtimes share both consumer groups, one is killed with
#     SIGKILL, the other owns every partition within the session timeout
#   - rolling restart: three consuming runtimes restarted in turn (SIGTERM)
#   - runtime killed with SIGKILL mid-load, restarted (static group membership)
#   - the only broker paused (SIGSTOP) for 20 s, longer than the session timeout
#   - one broker of three killed with SIGKILL, restarted later
#   - Postgres unreachable for 20 s (a TCP proxy cut by the test)
#   - Redis unreachable for 20 s (a redis-server of the test's own)
#   - poison records in both topics during the load
# The broker scenarios start Kafka nodes of their own (tests/api/kafka.rs); the
# others share the local cluster.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RECSYS_LOG_TAG=faults

cd "$RECSYS_ROOT"
export KAFKA_ADDRESS="${KAFKA_ADDRESS:-$KAFKA_STACK_ADDRESS}"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}"
export REDIS_ADDRESS="${REDIS_ADDRESS:-127.0.0.1:6379}"
export KAFKA_LIBS
export PATH="$RECSYS_CACHE/tools/bin:$PATH"
filter='binary(api) & test(/^faults::/)'
if [[ $# -gt 0 ]]; then
  filter+=" & test(/$1/)"
fi
# --no-capture prints each scenario's figures; it also runs them one at a time,
# which keeps their timings apart.
cargo nextest run --workspace --no-fail-fast --no-capture -E "$filter"
