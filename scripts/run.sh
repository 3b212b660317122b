#!/usr/bin/env bash
# scripts/run.sh — run recsys locally: bring the stack up (Postgres, Redis,
# a three-node Apache Kafka cluster, Prometheus), build the release binary and run
# `recsys serve` in the foreground with development defaults.
#
# Usage:
#   scripts/run.sh [--demo] [SERVE_ARGS...]   e.g. scripts/run.sh --services users
#
# --demo: once the users, products and analytics ports answer /readyz (within
# RUN_READY_TIMEOUT seconds, default 180), run `recsys demo $DEMO_ARGS` against them
# (a catalog, shoppers and a month of actions; idempotent, see docs/operations.md,
# "Demo data"), then keep serving in the foreground. DEMO_ARGS adds demo flags,
# e.g. DEMO_ARGS="--traffic 20" keeps live actions coming until Ctrl-C.
#
# Development defaults (only applied when the variable is unset):
#   JWT_SECRET=<random, kept in $RECSYS_CACHE/dev-jwt-secret>
#   API_KEY=<random, kept in $RECSYS_CACHE/dev-api-key> (X-API-Key of /activity/batch)
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

# dev_key NAME — the value of a random development key kept in $RECSYS_CACHE/dev-NAME
# (created on first use, readable by the owner only), so that it survives restarts; never a
# documented default (anyone could forge tokens or record actions with it).
dev_key() {
  local key_file="$RECSYS_CACHE/dev-$1"
  if [[ ! -s $key_file ]]; then
    mkdir -p "$RECSYS_CACHE"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$key_file")
  fi
  cat "$key_file"
}

dev_env() {
  if [[ -z ${JWT_SECRET:-} ]]; then
    JWT_SECRET=$(dev_key jwt-secret)
    export JWT_SECRET
    info "JWT_SECRET: the development key in $RECSYS_CACHE/dev-jwt-secret"
  fi
  if [[ -z ${API_KEY:-} ]]; then
    API_KEY=$(dev_key api-key)
    export API_KEY
    info "API_KEY (X-API-Key): the development key in $RECSYS_CACHE/dev-api-key"
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

# wait_ready BIN PORT... — until each port's /readyz answers 200 (`recsys healthcheck`), or
# die after RUN_READY_TIMEOUT seconds.
wait_ready() {
  local bin=$1 port
  shift
  local deadline=$((SECONDS + ${RUN_READY_TIMEOUT:-180}))
  for port in "$@"; do
    until "$bin" healthcheck --port "$port" >/dev/null 2>&1; do
      kill -0 "$runtime_pid" 2>/dev/null || die "the runtime exited before it was ready"
      ((SECONDS < deadline)) || die "port $port not ready after ${RUN_READY_TIMEOUT:-180} s"
      sleep 0.5
    done
  done
}

# serve_with_demo BIN SERVE_ARGS... — serve in the background, run the demo once the ports are
# ready, then wait for the runtime as if it ran in the foreground (SIGINT and SIGTERM reach it).
serve_with_demo() {
  local bin=$1
  shift
  info "$bin serve $* (the demo runs once it is ready)"
  "$bin" serve "$@" &
  runtime_pid=$!
  stopping=0
  trap 'stopping=1; kill -TERM "$runtime_pid" 2>/dev/null || true' INT TERM
  local users=${USERS_PORT:-8080} products=${PRODUCTS_PORT:-8081} analytics=${ANALYTICS_PORT:-8083}
  wait_ready "$bin" "$users" "$products" "$analytics"
  export DEMO_USERS_URL="${DEMO_USERS_URL:-http://127.0.0.1:$users}"
  export DEMO_PRODUCTS_URL="${DEMO_PRODUCTS_URL:-http://127.0.0.1:$products}"
  export DEMO_ANALYTICS_URL="${DEMO_ANALYTICS_URL:-http://127.0.0.1:$analytics}"
  section "demo"
  local started status=0
  started=$(now_ms)
  # shellcheck disable=SC2086 # DEMO_ARGS is a list of flags
  "$bin" demo ${DEMO_ARGS:-} || status=$?
  if ((status != 0 && !stopping)); then
    kill -TERM "$runtime_pid" 2>/dev/null || true
    wait "$runtime_pid" || true
    die "recsys demo failed (status $status); the runtime was stopped"
  fi
  ((stopping)) || info "demo data ready in $(elapsed_since "$started"); serving until Ctrl-C"
  # `wait` returns early when a trapped signal arrives: wait again until the runtime is gone.
  status=0
  while kill -0 "$runtime_pid" 2>/dev/null; do
    wait "$runtime_pid" || status=$?
  done
  exit "$status"
}

main() {
  local demo=0 arg serve_args=()
  for arg in "$@"; do
    if [[ $arg == --demo ]]; then
      demo=1
    else
      serve_args+=("$arg")
    fi
  done
  set -- "${serve_args[@]}"
  start_stack
  build_release
  local bin="$CARGO_TARGET_DIR/release/recsys"
  [[ -x $bin ]] || die "release binary not found at $bin"
  dev_env
  if ((demo)); then
    serve_with_demo "$bin" "$@"
  fi
  info "exec $bin serve $*"
  exec "$bin" serve "$@"
}

main "$@"
