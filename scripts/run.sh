#!/usr/bin/env bash
# scripts/run.sh — run recsys locally: bring the stack up (Postgres, Redis,
# a three-node Apache Kafka cluster, Prometheus), build the release binary and run
# `recsys serve` in the foreground with development defaults.
#
# Usage:
#   scripts/run.sh [SERVE_ARGS...]        e.g. scripts/run.sh --services users
#
# Development defaults (only applied when the variable is unset):
#   JWT_SECRET=<random, kept in $RECSYS_CACHE/dev-jwt-secret>
#   ADMIN_EMAIL=admin@example.com
#   ADMIN_PASSWORD=admin-password
#   CORS_ORIGINS=http://localhost:8083,http://127.0.0.1:8083 (the analytics page's origins)
# The release binary is built into $CARGO_TARGET_DIR (default
# ~/.cache/recsys/target). Stop the Kafka nodes afterwards with `scripts/stack.sh down`.
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
  if [[ -z ${JWT_SECRET:-} ]]; then
    # A random development key, kept in the cache so tokens survive restarts; never a
    # documented default (anyone could forge tokens with it).
    local key_file="$RECSYS_CACHE/dev-jwt-secret"
    if [[ ! -s $key_file ]]; then
      mkdir -p "$RECSYS_CACHE"
      (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$key_file")
    fi
    JWT_SECRET=$(<"$key_file")
    export JWT_SECRET
    info "JWT_SECRET: the development key in $key_file"
  fi
  export ADMIN_EMAIL="${ADMIN_EMAIL:-admin@example.com}"
  export ADMIN_PASSWORD="${ADMIN_PASSWORD:-admin-password}"
  # The analytics page logs in at the users port straight from the browser: allow its origins.
  local page="${ANALYTICS_PORT:-8083}"
  export CORS_ORIGINS="${CORS_ORIGINS:-http://localhost:$page,http://127.0.0.1:$page}"
  section "serve"
  info "ADMIN_EMAIL=$ADMIN_EMAIL"
  info "ADMIN_PASSWORD=$ADMIN_PASSWORD"
  info "services: users http://localhost:8080, products http://localhost:8081," \
    "recommendations http://localhost:8082, analytics http://localhost:8083"
  info "analytics page: http://localhost:$page/ (CORS_ORIGINS=$CORS_ORIGINS)"
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
