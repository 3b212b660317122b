#!/usr/bin/env bash
# scripts/stack.sh — the local infrastructure recsys needs: Postgres, Redis,
# a three-broker tansu (Kafka protocol) cluster, and Prometheus scraping the
# runtime.
#
# Usage:
#   scripts/stack.sh up      ensure Postgres (127.0.0.1:5432) and Redis
#                            (127.0.0.1:6379) answer, starting/installing them
#                            if needed; build tansu if missing; start three
#                            tansu brokers on 127.0.0.1:9091/9092/9093 sharing
#                            one SQLite store; wait until each answers Kafka;
#                            start Prometheus (Debian package, installed if
#                            missing) on 127.0.0.1:9090 scraping the runtime
#                            with dashboards/prometheus.local.yml.
#                            Idempotent.
#   scripts/stack.sh down    stop the tansu brokers and Prometheus started by
#                            `up` (Postgres and Redis are left alone).
#   scripts/stack.sh status  show each component and the service URLs;
#                            exits non-zero if a component is down.
#   scripts/stack.sh env     print `export` lines (TANSU_BIN, KAFKA_ADDRESS,
#                            ...) for `eval "$(scripts/stack.sh env)"`.
#
# Environment:
#   RECSYS_CACHE           cache root (default ~/.cache/recsys); runtime state
#                          lives in $RECSYS_CACHE/stack (tansu.db, *.log, *.pid)
#   TANSU_BIN              tansu binary (default $RECSYS_CACHE/tansu/bin/tansu)
#   TANSU_START_TIMEOUT    seconds to wait for each broker (default 60)
#   TANSU_BUILD_TIMEOUT    seconds to wait for a running tansu build (default 3600)
#   TANSU_RUST_LOG         RUST_LOG for the brokers (default warn)
#   RECSYS_METRICS_TARGET  what Prometheus scrapes (default 127.0.0.1:8080: the
#                          all-in-one runtime serves one registry on every port)
#   PROMETHEUS_PORT        Prometheus listen port (default 9090)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RECSYS_LOG_TAG=stack

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
TANSU_HOST=127.0.0.1
# Three brokers, one cluster, one shared SQLite store.
TANSU_PORTS=(9091 9092 9093)
TANSU_CLUSTER_ID=recsys
TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
TANSU_BUILD_LOG="$RECSYS_CACHE/tansu-build.log"
TANSU_START_TIMEOUT="${TANSU_START_TIMEOUT:-60}"
TANSU_BUILD_TIMEOUT="${TANSU_BUILD_TIMEOUT:-3600}"
SERVICE_TIMEOUT=60
PROMETHEUS_HOST=127.0.0.1
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
RECSYS_METRICS_TARGET="${RECSYS_METRICS_TARGET:-127.0.0.1:8080}"

# ------------------------------------------------------------------ helpers ---

# wait_until SECONDS WHAT CMD... — poll CMD until it succeeds or time runs out.
wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      warn "$what did not come up within ${timeout}s"
      return 1
    fi
    sleep 0.5
  done
}

# take_lock — serialise concurrent `up`/`down` runs (e.g. run.sh and test.sh).
# Lock fd 9 must not leak into daemons (they would hold the lock forever):
# every command that may leave a process behind gets `9>&-`.
take_lock() {
  mkdir -p "$STACK_DIR"
  exec 9>"$STACK_DIR/.lock"
  if ! flock -n 9; then
    info "another stack.sh is running; waiting for it"
    flock -w "$TANSU_BUILD_TIMEOUT" 9 || die "timed out waiting for $STACK_DIR/.lock"
  fi
}

# ----------------------------------------------------------------- postgres ---

pg_up() {
  have pg_isready && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

# pg_trust_localhost — on a Postgres we installed ourselves, let local TCP
# clients in without a password (like the CI machine's trust setup).
pg_trust_localhost() {
  local hba
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    [[ -f $hba ]] || continue
    grep -q '^host all all 127.0.0.1/32 trust' "$hba" && continue
    info "configuring trust auth for localhost in $hba"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  done
}

ensure_postgres() {
  if pg_up && pg_login_ok; then
    info "postgres: up on $PG_HOST:$PG_PORT"
    return 0
  fi
  local fresh=""
  if ! have pg_ctlcluster || ! have pg_isready || [[ -z $(ls /etc/postgresql 2>/dev/null) ]]; then
    apt_install postgresql postgresql-client
    fresh=1
  fi
  local version
  # shellcheck disable=SC2012 # version directory names are plain
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  [[ -n $version ]] || die "postgres: no cluster under /etc/postgresql after install"
  if [[ -n $fresh ]]; then
    pg_trust_localhost
  fi
  if ! pg_up; then
    info "postgres: starting cluster $version/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 9>&- ||
      warn "pg_ctlcluster start returned non-zero (may already be starting)"
  fi
  wait_until "$SERVICE_TIMEOUT" "postgres" pg_up ||
    die "postgres is not answering on $PG_HOST:$PG_PORT (see /var/log/postgresql/)"
  if [[ -n $fresh ]]; then
    # The package may have started the cluster before pg_hba.conf was edited.
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  fi
  pg_login_ok ||
    die "postgres answers but 'psql -h $PG_HOST -U postgres' fails; localhost needs trust auth in pg_hba.conf"
  info "postgres: up on $PG_HOST:$PG_PORT"
}

pg_login_ok() {
  psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -X -Atqc 'select 1' </dev/null >/dev/null
}

# ------------------------------------------------------------------- redis ---

redis_up() {
  have redis-cli && [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

ensure_redis() {
  if redis_up; then
    info "redis: up on $REDIS_HOST:$REDIS_PORT"
    return 0
  fi
  if ! have redis-server || ! have redis-cli; then
    apt_install redis-server redis-tools
  fi
  info "redis: starting"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log </dev/null 9>&-
  wait_until "$SERVICE_TIMEOUT" "redis" redis_up ||
    die "redis is not answering on $REDIS_HOST:$REDIS_PORT (see /var/log/redis/ci.log)"
  info "redis: up on $REDIS_HOST:$REDIS_PORT"
}

# ------------------------------------------------------------ tansu binary ---

tansu_build_running() {
  # Look for a cargo install of tansu already in progress (ours or someone's).
  # Anchored on the cargo executable so shells that merely mention it don't match.
  pgrep -f '^[^ ]*cargo install .*tansu' >/dev/null 2>&1
}

build_tansu() {
  info "building tansu $TANSU_VERSION into $TANSU_ROOT (log: $TANSU_BUILD_LOG; takes 5-15 min)"
  mkdir -p "$TANSU_ROOT"
  # Own temp target dir (not the project's CARGO_TARGET_DIR), run outside the
  # repo so no project cargo config / toolchain file applies.
  (
    cd "$RECSYS_CACHE"
    env -u CARGO_TARGET_DIR \
      cargo install --locked tansu --version "$TANSU_VERSION" --features "$TANSU_FEATURES" \
      --root "$TANSU_ROOT" </dev/null 2>&1 | tee "$TANSU_BUILD_LOG"
  ) || die "tansu build failed (see $TANSU_BUILD_LOG)"
}

ensure_tansu_bin() {
  if [[ -x $TANSU_BIN ]] && ! tansu_build_running; then
    return 0
  fi
  if tansu_build_running; then
    info "a tansu build is already running; waiting for it (log: $TANSU_BUILD_LOG)"
    local deadline=$((SECONDS + TANSU_BUILD_TIMEOUT)) next_note=$((SECONDS + 60))
    while tansu_build_running; do
      ((SECONDS < deadline)) || die "tansu build still running after ${TANSU_BUILD_TIMEOUT}s"
      if ((SECONDS >= next_note)); then
        info "still building: $(tail -n1 "$TANSU_BUILD_LOG" 2>/dev/null | tr -d '\r' | cut -c1-100)"
        next_note=$((SECONDS + 60))
      fi
      sleep 5
    done
  fi
  if [[ ! -x $TANSU_BIN ]]; then
    [[ $TANSU_BIN == "$TANSU_ROOT/bin/tansu" ]] ||
      die "TANSU_BIN=$TANSU_BIN does not exist (unset it to build into the cache)"
    build_tansu
  fi
  [[ -x $TANSU_BIN ]] || die "tansu binary missing after build: $TANSU_BIN"
  info "tansu: $TANSU_BIN"
}

# ---------------------------------------------------------- tansu brokers ---

pid_file() { echo "$STACK_DIR/tansu-$1.pid"; }
log_file() { echo "$STACK_DIR/tansu-$1.log"; }

# broker_pid PORT — print the pid of our broker on PORT if it is alive.
broker_pid() {
  local pidf pid cmdline
  pidf=$(pid_file "$1")
  [[ -s $pidf ]] || return 1
  pid=$(<"$pidf")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  # Guard against pid reuse: it must be a tansu broker for this port.
  [[ $cmdline == *tansu*broker*"$TANSU_HOST:$1"* ]] || return 1
  echo "$pid"
}

show_log_tail() {
  local log
  log=$(log_file "$1")
  if [[ -s $log ]]; then
    printf -- '----- last 30 lines of %s -----\n' "$log" >&2
    tail -n 30 "$log" >&2
    printf -- '-----\n' >&2
  fi
}

launch_broker() {
  local port=$1 pidf log
  pidf=$(pid_file "$port")
  log=$(log_file "$port")
  rm -f "$pidf"
  if [[ -f $log ]]; then
    mv -f "$log" "$log.prev"
  fi
  # setsid: own session, so Ctrl-C in a foreground `run.sh` leaves it alone.
  # The storage path must be relative to the working directory (STACK_DIR).
  (
    cd "$STACK_DIR"
    # shellcheck disable=SC2016 # $$/$0/$@ belong to the inner bash
    setsid -f bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" \
      env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT NO_COLOR=1 RUST_LOG="${TANSU_RUST_LOG:-warn}" \
      "$TANSU_BIN" broker \
      --cluster-id "$TANSU_CLUSTER_ID" \
      --listener-url "tcp://$TANSU_HOST:$port" \
      --advertised-listener-url "tcp://$TANSU_HOST:$port" \
      --storage-engine "sqlite://tansu.db" \
      </dev/null >"$log" 2>&1 9>&-
  )
}

# pid_alive PID — true if PID is a live process (zombies count as dead).
pid_alive() {
  [[ -r /proc/$1/cmdline && -n $(tr -d '\0' <"/proc/$1/cmdline" 2>/dev/null) ]]
}

# wait_broker PORT START_MS — poll until the broker answers Kafka ApiVersions.
# Fails (after showing the end of its log) if the broker exits or stays silent.
wait_broker() {
  local port=$1 started=$2 pid="" pidf
  pidf=$(pid_file "$port")
  local deadline=$((SECONDS + TANSU_START_TIMEOUT))
  while :; do
    [[ -n $pid || ! -s $pidf ]] || pid=$(<"$pidf")
    if [[ -n $pid ]] && kafka_ping "$TANSU_HOST" "$port"; then
      info "tansu-$port: answering Kafka on $TANSU_HOST:$port (pid $pid) after $(elapsed_since "$started")"
      return 0
    fi
    if [[ -n $pid ]] && ! pid_alive "$pid"; then
      show_log_tail "$port"
      warn "tansu-$port exited during startup (log: $(log_file "$port"))"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$port"
      warn "tansu-$port did not answer Kafka on $TANSU_HOST:$port within ${TANSU_START_TIMEOUT}s (log: $(log_file "$port"))"
      return 1
    fi
    sleep 0.1
  done
}

ensure_broker() {
  local port=$1 pid
  if pid=$(broker_pid "$port"); then
    if kafka_ping "$TANSU_HOST" "$port"; then
      info "tansu-$port: already running (pid $pid)"
      return 0
    fi
    # Running but not answering (maybe still starting): give it the deadline.
    wait_broker "$port" "$(now_ms)"
    return
  fi
  if kafka_ping "$TANSU_HOST" "$port"; then
    warn "tansu-$port: $TANSU_HOST:$port already answers Kafka but was not started by stack.sh; using it"
    return 0
  fi
  if tcp_open "$TANSU_HOST" "$port"; then
    die "port $TANSU_HOST:$port is taken by a process that does not speak Kafka"
  fi
  info "tansu-$port: starting"
  local started
  started=$(now_ms)
  launch_broker "$port"
  wait_broker "$port" "$started"
}

# start_brokers — ensure every broker runs, one at a time: the first creates the SQLite
# schema, the others then open an initialised store. Fails on the first that won't start.
start_brokers() {
  local port
  for port in "${TANSU_PORTS[@]}"; do
    ensure_broker "$port" || return 1
  done
}

# quarantine_store — move the shared store (and its journal files) aside, keeping it for a
# post-mortem; the next broker start creates a fresh one.
quarantine_store() {
  local stamp f
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  for f in "$STACK_DIR"/tansu.db "$STACK_DIR"/tansu.db-wal "$STACK_DIR"/tansu.db-shm "$STACK_DIR"/tansu.db-journal; do
    [[ -e $f ]] || continue
    mv -f "$f" "${f/tansu.db/tansu.db.broken-$stamp}"
  done
  info "moved the broker store aside to $STACK_DIR/tansu.db.broken-$stamp"
}

# signal_broker PORT — send SIGTERM to our broker on PORT; print its pid.
signal_broker() {
  local port=$1 pid
  if ! pid=$(broker_pid "$port"); then
    rm -f "$(pid_file "$port")"
    info "tansu-$port: not running"
    return 0
  fi
  info "tansu-$port: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  echo "$pid"
}

# reap_broker PORT PID — wait (with a deadline) for PID to exit, then SIGKILL.
reap_broker() {
  local port=$1 pid=$2
  local deadline=$((SECONDS + 15))
  while pid_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      warn "tansu-$port: did not exit after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$(pid_file "$port")"
}

# --------------------------------------------------------------- prometheus ---

prometheus_ready() {
  curl -fsS -o /dev/null --max-time 2 "http://$PROMETHEUS_HOST:$PROMETHEUS_PORT/-/ready" 2>/dev/null
}

prometheus_pid() {
  local pidf="$STACK_DIR/prometheus.pid" pid
  [[ -s $pidf ]] || return 1
  pid=$(<"$pidf")
  [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
  [[ $(tr '\0' ' ' <"/proc/$pid/cmdline") == *prometheus*"$STACK_DIR"* ]] || return 1
  echo "$pid"
}

# ensure_prometheus — Prometheus from the distribution, scraping the runtime
# with dashboards/prometheus.local.yml (target rewritten to
# RECSYS_METRICS_TARGET), its data under $STACK_DIR/prometheus.
ensure_prometheus() {
  have prometheus && have promtool || apt_install prometheus
  have curl || apt_install curl
  local config="$STACK_DIR/prometheus.yml" log="$STACK_DIR/prometheus.log" pid
  sed "s/127\.0\.0\.1:8080/$RECSYS_METRICS_TARGET/" "$RECSYS_ROOT/dashboards/prometheus.local.yml" >"$config.new"
  promtool check config "$config.new" >/dev/null || die "prometheus: invalid config $config.new"
  if pid=$(prometheus_pid); then
    if cmp -s "$config" "$config.new" && prometheus_ready; then
      rm -f "$config.new"
      info "prometheus: already running (pid $pid)"
      return 0
    fi
    info "prometheus: restarting with a new configuration (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    wait_until 15 "prometheus exit" bash -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null || true
  elif prometheus_ready; then
    rm -f "$config.new"
    warn "prometheus: $PROMETHEUS_HOST:$PROMETHEUS_PORT already answers but was not started by stack.sh; using it"
    return 0
  fi
  mv -f "$config.new" "$config"
  mkdir -p "$STACK_DIR/prometheus"
  info "prometheus: starting on $PROMETHEUS_HOST:$PROMETHEUS_PORT, scraping $RECSYS_METRICS_TARGET"
  (
    cd "$STACK_DIR"
    # shellcheck disable=SC2016 # $$/$0/$@ belong to the inner bash
    setsid -f bash -c 'echo $$ >"$0"; exec "$@"' "$STACK_DIR/prometheus.pid" \
      prometheus --config.file="$config" --storage.tsdb.path="$STACK_DIR/prometheus" \
      --storage.tsdb.retention.time=2d --web.listen-address="$PROMETHEUS_HOST:$PROMETHEUS_PORT" \
      </dev/null >"$log" 2>&1 9>&-
  )
  wait_until "$SERVICE_TIMEOUT" "prometheus" prometheus_ready || {
    tail -n 20 "$log" >&2
    die "prometheus did not become ready (log: $log)"
  }
  info "prometheus: up on http://$PROMETHEUS_HOST:$PROMETHEUS_PORT"
}

stop_prometheus() {
  local pid
  if pid=$(prometheus_pid); then
    info "prometheus: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    wait_until 15 "prometheus exit" bash -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STACK_DIR/prometheus.pid"
}

# --------------------------------------------------------------- commands ---

cmd_up() {
  take_lock
  ensure_postgres
  ensure_redis
  ensure_tansu_bin
  if ! start_brokers; then
    # A store left unusable (a broker killed mid-write, a storage task that panicked) makes
    # every start fail the same way. The stack's topics are scratch data for runs and tests:
    # start over on a fresh store, keeping the old one for a look.
    warn "a broker did not start on the existing store; starting all on a fresh one"
    stop_brokers
    quarantine_store
    start_brokers || die "tansu does not start even on a fresh store (logs: $STACK_DIR/tansu-*.log)"
  fi
  ensure_prometheus
  info "stack is up (state: $STACK_DIR)"
}

# stop_brokers — stop every broker started by `up`: signal all first, then wait, so they
# shut down in parallel.
stop_brokers() {
  local port pid
  local -A pids=()
  for port in "${TANSU_PORTS[@]}"; do
    pid=$(signal_broker "$port")
    [[ -z $pid ]] || pids[$port]=$pid
  done
  for port in "${!pids[@]}"; do
    reap_broker "$port" "${pids[$port]}"
  done
}

cmd_down() {
  take_lock
  stop_brokers
  stop_prometheus
  info "tansu brokers and prometheus stopped (Postgres and Redis left running)"
}

# status_line NAME STATE ADDRESS [NOTE]
status_line() {
  local line
  line=$(printf '  %-16s %-5s %-24s %s' "$1" "$2" "$3" "${4:-}")
  echo "${line%"${line##*[! ]}"}"
}

cmd_status() {
  local rc=0 port pid
  echo "infrastructure:"
  if pg_up; then status_line postgres up "$PG_HOST:$PG_PORT"; else
    status_line postgres down "$PG_HOST:$PG_PORT"
    rc=1
  fi
  if redis_up; then status_line redis up "$REDIS_HOST:$REDIS_PORT"; else
    status_line redis down "$REDIS_HOST:$REDIS_PORT"
    rc=1
  fi
  for port in "${TANSU_PORTS[@]}"; do
    pid=$(broker_pid "$port" || true)
    if kafka_ping "$TANSU_HOST" "$port"; then
      if [[ -n $pid ]]; then
        status_line "tansu-$port" up "$TANSU_HOST:$port" "pid $pid"
      else
        status_line "tansu-$port" up "$TANSU_HOST:$port" "(not started by stack.sh)"
      fi
    else
      status_line "tansu-$port" down "$TANSU_HOST:$port" "${pid:+pid $pid alive but not answering}"
      rc=1
    fi
  done
  if prometheus_ready; then
    status_line prometheus up "http://$PROMETHEUS_HOST:$PROMETHEUS_PORT" "scraping $RECSYS_METRICS_TARGET"
  else
    status_line prometheus down "http://$PROMETHEUS_HOST:$PROMETHEUS_PORT"
    rc=1
  fi
  echo "  tansu binary: $TANSU_BIN$([[ -x $TANSU_BIN ]] || echo ' (missing)')"
  echo "  state dir:    $STACK_DIR"
  echo "  dashboards:   docker compose up -d (Grafana http://localhost:3000, admin/admin);"
  echo "                locally, query Prometheus at http://$PROMETHEUS_HOST:$PROMETHEUS_PORT/graph"
  echo "services:"
  local entry name url
  for entry in users:8080 products:8081 recommendations:8082 analytics:8083; do
    name=${entry%%:*}
    port=${entry##*:}
    url="http://localhost:$port"
    if tcp_open 127.0.0.1 "$port"; then
      status_line "$name" up "$url"
    else
      status_line "$name" down "$url" "(start with scripts/run.sh)"
    fi
  done
  return "$rc"
}

cmd_env() {
  printf 'export TANSU_BIN=%q\n' "$TANSU_BIN"
  printf 'export KAFKA_ADDRESS=%q\n' "${KAFKA_ADDRESS:-$TANSU_HOST:9092}"
  printf 'export REDIS_ADDRESS=%q\n' "$REDIS_HOST:$REDIS_PORT"
  printf 'export TEST_DATABASE_URL=%q\n' "postgres://postgres@$PG_HOST:$PG_PORT"
  printf 'export CARGO_TARGET_DIR=%q\n' "$CARGO_TARGET_DIR"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
  esac
}

# Run only when executed; `source scripts/stack.sh` just defines the helpers.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
