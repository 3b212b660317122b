#!/usr/bin/env bash
# scripts/run.sh — run recsys locally: bring the stack up (Postgres, Redis,
# three tansu brokers), build the release binary and run `recsys serve` in the
# foreground with development defaults.
#
# Usage:
#   scripts/run.sh [SERVE_ARGS...]        e.g. scripts/run.sh --services users
#
# Development defaults (only applied when the variable is unset):
#   JWT_SECRET=dev-secret-change-me
#   ADMIN_EMAIL=admin@example.com
#   ADMIN_PASSWORD=admin-password
# The release binary is built into $CARGO_TARGET_DIR (default
# ~/.cache/recsys/target). Stop the brokers afterwards with `scripts/stack.sh down`.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RECSYS_LOG_TAG=run

start_stack() {
  section "stack"
  bash "$RECSYS_ROOT/scripts/stack.sh" up
}

build_release() {
  section "build (release)"
  cd "$RECSYS_ROOT"
  cargo build --release --bin recsys
}

dev_env() {
  export JWT_SECRET="${JWT_SECRET:-dev-secret-change-me}"
  export ADMIN_EMAIL="${ADMIN_EMAIL:-admin@example.com}"
  export ADMIN_PASSWORD="${ADMIN_PASSWORD:-admin-password}"
  section "serve"
  info "JWT_SECRET=$JWT_SECRET"
  info "ADMIN_EMAIL=$ADMIN_EMAIL"
  info "ADMIN_PASSWORD=$ADMIN_PASSWORD"
  info "services: users http://localhost:8080, products http://localhost:8081," \
    "recommendations http://localhost:8082, analytics http://localhost:8083"
}

main() {
  start_stack
  build_release
  local bin="$CARGO_TARGET_DIR/release/recsys"
  [[ -x $bin ]] || die "release binary not found at $bin"
  dev_env
  info "exec $bin serve $*"
  exec "$bin" serve "$@"
}

main "$@"
