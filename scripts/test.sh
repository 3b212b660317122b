#!/usr/bin/env bash
# scripts/test.sh — the full check: stack up, formatting, clippy, then the test
# suite against the local Postgres / Redis / tansu. Used locally and by CI
# (.ci/run).
#
# Usage:
#   scripts/test.sh
#
# Steps (all run even if an earlier one fails; exit status is non-zero if any
# failed):
#   1. scripts/stack.sh up (also installs and starts Prometheus), then the
#      tools the deployment tests call: docker-compose (Debian package; it only
#      validates the compose file, no Docker engine is needed) and promtool
#   2. cargo fmt --all -- --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. drop leftover recsys_test_% databases (not those in use right now)
#   5. cargo nextest run --workspace --no-fail-fast, without the fault scenarios
#      (if cargo-nextest exists; else cargo test --workspace --no-fail-fast, which
#      runs them too)
#   6. scripts/faults.sh: the fault scenarios (tests/api/faults.rs), each bounded
#   7. scripts/fuzz.sh: schemathesis (installed from PyPI if missing) against
#      every service's /openapi.json, >= 1000 requests each, no 5xx
#
# Exported for the tests: KAFKA_ADDRESS (default 127.0.0.1:9092),
# TEST_DATABASE_URL, REDIS_ADDRESS, TANSU_BIN, RUST_BACKTRACE=1.
# With CI=true, brokers that this run had to start are stopped at the end.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RECSYS_LOG_TAG="test"

STACK="$RECSYS_ROOT/scripts/stack.sh"
PSQL=(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -X -v ON_ERROR_STOP=1)
FAILED=()

# step NAME CMD... — run a step under a header, record failure, keep going.
# (CMD runs in an `||` context where `set -e` is off: steps check explicitly.)
step() {
  local name=$1 started rc=0
  shift
  section "$name"
  started=$(now_ms)
  "$@" || rc=$?
  if ((rc == 0)); then
    info "$name: ok ($(elapsed_since "$started"))"
  else
    warn "$name: FAILED (exit $rc, $(elapsed_since "$started"))"
    FAILED+=("$name")
  fi
}

ensure_components() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    info "adding rustfmt and clippy components"
    rustup component add rustfmt clippy
  fi
}

stack_started_here=""

start_stack() {
  section "stack"
  if [[ ${CI:-} == true ]] && ! bash "$STACK" status >/dev/null 2>&1; then
    stack_started_here=1
  fi
  bash "$STACK" up || die "could not bring the stack up"
  bash "$STACK" status || true
}

# The deployment and dashboard tests run these programs; install them if missing.
ensure_test_tools() {
  have docker-compose || apt_install docker-compose
  { have prometheus && have promtool; } || apt_install prometheus
}

stop_stack_in_ci() {
  if [[ -n $stack_started_here ]]; then
    section "stack down (CI)"
    bash "$STACK" down || true
  fi
}

export_test_env() {
  export KAFKA_ADDRESS="${KAFKA_ADDRESS:-127.0.0.1:9092}"
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432"
  export REDIS_ADDRESS="127.0.0.1:6379"
  export TANSU_BIN
  export RUST_BACKTRACE=1
  if [[ ${CI:-} == true ]]; then
    # Fresh clone, one-shot build: incremental artifacts are pure overhead.
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
  fi
  info "KAFKA_ADDRESS=$KAFKA_ADDRESS"
  info "TEST_DATABASE_URL=$TEST_DATABASE_URL"
  info "REDIS_ADDRESS=$REDIS_ADDRESS"
  info "TANSU_BIN=$TANSU_BIN"
  info "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
}

# Databases the suite creates are named recsys_test_*. Ones with live sessions
# belong to a test run in progress elsewhere (e.g. a concurrent `cargo test`)
# and are left alone; the rest are leftovers of earlier runs.
drop_test_databases() {
  local rows db busy n=0
  rows=$("${PSQL[@]}" -Atc "
    select d.datname, exists (select 1 from pg_stat_activity a
                              where a.datname = d.datname and a.pid <> pg_backend_pid())
    from pg_database d where d.datname like 'recsys\_test\_%' order by 1") || return 1
  while IFS='|' read -r db busy; do
    [[ -n $db ]] || continue
    if [[ $busy == t ]]; then
      info "keeping $db (in use by another session)"
      continue
    fi
    info "dropping $db"
    "${PSQL[@]}" -qc "DROP DATABASE IF EXISTS \"${db//\"/\"\"}\" WITH (FORCE)" || return 1
    n=$((n + 1))
  done <<<"$rows"
  info "dropped $n leftover test database(s)"
}

have_nextest() { cargo nextest --version >/dev/null 2>&1; }

run_tests() {
  if have_nextest; then
    # The fault scenarios run in their own step (scripts/faults.sh).
    cargo nextest run --workspace --no-fail-fast -E 'not (binary(api) & test(/^faults::/))'
  else
    info "cargo-nextest not installed; using cargo test"
    cargo test --workspace --no-fail-fast
  fi
}

summary() {
  section "summary"
  if ((${#FAILED[@]} == 0)); then
    info "all steps passed"
    return 0
  fi
  warn "failed steps: ${FAILED[*]}"
  return 1
}

main() {
  cd "$RECSYS_ROOT"
  trap stop_stack_in_ci EXIT
  start_stack
  export_test_env
  step "toolchain" ensure_components
  step "test tools" ensure_test_tools
  step "cargo fmt --check" cargo fmt --all -- --check
  step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
  step "drop test databases" drop_test_databases
  step "tests" run_tests
  if have_nextest; then
    step "fault scenarios" bash "$RECSYS_ROOT/scripts/faults.sh"
  fi
  step "fuzzing (schemathesis)" bash "$RECSYS_ROOT/scripts/fuzz.sh"
  summary
}

# Run only when executed; sourcing just defines the functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
