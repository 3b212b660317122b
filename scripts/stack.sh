#!/usr/bin/env bash
# scripts/stack.sh — the local infrastructure recsys needs: Postgres, Redis, a three-node
# Apache Kafka cluster (KRaft, from the Maven Central jars) and Prometheus scraping the runtime.
#
# Usage:
#   scripts/stack.sh up      make sure everything runs, installing what is missing:
#                            OpenSSL's headers for the build; Postgres (127.0.0.1:5432, user postgres, trust on loopback) and
#                            Redis (127.0.0.1:6379) from Debian's packages; Java 17 and Maven
#                            if missing; the Kafka jars (scripts/kafka/pom.xml) into the cache;
#                            three combined broker+controller nodes on 127.0.0.1:9091-9093
#                            (quorum on 19093-19095), ready when the cluster's metadata lists
#                            all three; Prometheus on 127.0.0.1:9090 scraping the runtime.
#                            Idempotent, and quick when everything already runs.
#   scripts/stack.sh down    stop the Kafka nodes and Prometheus (Postgres and Redis are left
#                            alone).
#   scripts/stack.sh status  each component, each Kafka node and the quorum (leader, epoch,
#                            voters), the service URLs; exits non-zero if a component is down.
#   scripts/stack.sh env     print `export` lines (KAFKA_ADDRESS, KAFKA_LIBS, ...) for
#                            `eval "$(scripts/stack.sh env)"`.
#   scripts/stack.sh topics-clean
#                            delete the topics of test runs whose database is gone (topics
#                            named t<32 hex>.*; see scripts/test.sh).
#
# Environment:
#   RECSYS_CACHE           cache root (default ~/.cache/recsys); Kafka's jars in kafka/libs,
#                          Maven's repository in m2/, node storage, logs and pids in stack/kafka
#   KAFKA_JVM_OPTS         JVM options of the nodes (default: scripts/kafka/jvm.options)
#   KAFKA_START_TIMEOUT    seconds to wait for the cluster (default 120)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
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
KAFKA_HOST=127.0.0.1
KAFKA_DIR="$STACK_DIR/kafka"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
STACK_LOCK_TIMEOUT=900
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
    flock -w "$STACK_LOCK_TIMEOUT" 9 || die "timed out waiting for $STACK_DIR/.lock"
  fi
}

# ----------------------------------------------------------------- postgres ---

pg_up() {
  have pg_isready && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

# pg_trust_localhost — on a Postgres we installed ourselves, let local TCP
# clients in as any user without a password (the tests connect as postgres).
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
  if pg_up && pg_login_ok && pg_settings_ok; then
    info "postgres: up on $PG_HOST:$PG_PORT"
    return 0
  fi
  if ! have pg_ctlcluster || ! have pg_isready || [[ -z $(ls /etc/postgresql 2>/dev/null) ]]; then
    apt_install postgresql postgresql-client
  fi
  local version
  # shellcheck disable=SC2012 # version directory names are plain
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  [[ -n $version ]] || die "postgres: no cluster under /etc/postgresql after install"
  if ! pg_up; then
    info "postgres: starting cluster $version/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 9>&- ||
      warn "pg_ctlcluster start returned non-zero (may already be starting)"
  fi
  wait_until "$SERVICE_TIMEOUT" "postgres" pg_up ||
    die "postgres is not answering on $PG_HOST:$PG_PORT (see /var/log/postgresql/)"
  if ! pg_login_ok; then
    # A cluster as the package made it asks for a password on TCP.
    pg_trust_localhost
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload 9>&- || true
    wait_until 10 "postgres login" pg_login_ok ||
      die "postgres answers but 'psql -h $PG_HOST -U postgres' fails; localhost needs trust auth in pg_hba.conf"
  fi
  pg_configure "$version"
  info "postgres: up on $PG_HOST:$PG_PORT"
}

# What the suite and the benchmark need of the server beyond the package's defaults: tests run
# many runtimes at once, each with its pool, and a `cargo test` fallback keeps them all in one
# process.
PG_MAX_CONNECTIONS=400

pg_settings_ok() {
  [[ $(psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -X -Atqc 'show max_connections' </dev/null) == "$PG_MAX_CONNECTIONS" ]]
}

# pg_configure VERSION — puts our settings in the cluster's conf.d and restarts it when the
# running server has other values.
pg_configure() {
  local version=$1 conf="/etc/postgresql/$1/main/conf.d/recsys.conf"
  pg_settings_ok && return 0
  info "postgres: setting max_connections = $PG_MAX_CONNECTIONS in $conf and restarting"
  printf '# Written by scripts/stack.sh: what the recsys suite and benchmark need.\nmax_connections = %s\n' \
    "$PG_MAX_CONNECTIONS" | as_root tee "$conf" >/dev/null
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main restart 9>&- ||
    die "postgres: restart with $conf failed (see /var/log/postgresql/)"
  wait_until "$SERVICE_TIMEOUT" "postgres" pg_login_ok ||
    die "postgres is not answering after the restart (see /var/log/postgresql/)"
}

pg_login_ok() {
  psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -X -Atqc 'select 1' </dev/null >/dev/null
}

# ------------------------------------------------------------------- redis ---

redis_up() {
  have redis-cli && [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

# A cache, not a store: bounded memory, the least recently used keys evicted first.
REDIS_MAXMEMORY=256mb
REDIS_POLICY=allkeys-lru

# redis_bound — applies the memory bound to the running server (also to one an earlier run
# started without it).
redis_bound() {
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" config set maxmemory "$REDIS_MAXMEMORY" >/dev/null &&
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" config set maxmemory-policy "$REDIS_POLICY" >/dev/null
}

ensure_redis() {
  if redis_up; then
    redis_bound || die "redis: could not set maxmemory"
    info "redis: up on $REDIS_HOST:$REDIS_PORT (maxmemory $REDIS_MAXMEMORY, $REDIS_POLICY)"
    return 0
  fi
  if ! have redis-server || ! have redis-cli; then
    apt_install redis-server redis-tools
  fi
  info "redis: starting"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
    --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy "$REDIS_POLICY" </dev/null 9>&-
  wait_until "$SERVICE_TIMEOUT" "redis" redis_up ||
    die "redis is not answering on $REDIS_HOST:$REDIS_PORT (see /var/log/redis/ci.log)"
  info "redis: up on $REDIS_HOST:$REDIS_PORT (maxmemory $REDIS_MAXMEMORY, $REDIS_POLICY)"
}

# ------------------------------------------------------------- kafka jars ---

# java_major — the major version of the `java` on PATH (17 for "17.0.15").
java_major() {
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1
}

ensure_java() {
  if ! have java || (($(java_major) < 17)); then
    apt_install openjdk-17-jre-headless
  fi
  have java || die "java: not found after installing openjdk-17-jre-headless"
}

# ensure_kafka_libs — the broker's jars in $KAFKA_LIBS, fetched from Maven Central with
# scripts/kafka/pom.xml once, and again whenever the pom changes (its hash is kept beside the
# jars). Maven's own repository lives in the cache too, so a fresh RECSYS_CACHE is a cold start.
ensure_kafka_libs() {
  local pom="$RECSYS_ROOT/scripts/kafka/pom.xml" stamp="$KAFKA_LIBS/.pom-sha256" want
  want=$(sha256sum "$pom" | cut -d' ' -f1)
  ensure_java
  have python3 || apt_install python3
  if [[ -s $stamp && $(<"$stamp") == "$want" ]]; then
    info "kafka: jars in $KAFKA_LIBS"
    return 0
  fi
  have mvn || apt_install maven
  local tmp="$KAFKA_LIBS.new" started
  started=$(now_ms)
  info "kafka: fetching the jars of scripts/kafka/pom.xml into $KAFKA_LIBS"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  mvn -B -q -Dstyle.color=never -f "$pom" -Dmaven.repo.local="$RECSYS_CACHE/m2" \
    org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" </dev/null 9>&- ||
    die "kafka: could not fetch the broker jars (mvn -f scripts/kafka/pom.xml ... copy-dependencies)"
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die "kafka: no kafka_2.13 jar in $tmp"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  echo "$want" >"$stamp"
  info "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars fetched in $(elapsed_since "$started")"
}

# kafka_java CLASS ARGS... — runs a class of the Kafka jars (a tool), logging warnings only.
kafka_java() {
  java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$RECSYS_ROOT/scripts/kafka/log4j2.xml" \
    -cp "$KAFKA_LIBS/*" "$@"
}

# ------------------------------------------------------------ kafka nodes ---

# Three combined broker+controller nodes, one KRaft quorum: node N serves clients on
# 127.0.0.1:909N and the quorum on 127.0.0.1:1909(N+2).
KAFKA_NODES=(1 2 3)
kafka_port() { echo $((9090 + $1)); }
controller_port() { echo $((19092 + $1)); }
node_dir() { echo "$KAFKA_DIR/node$1"; }
node_config() { echo "$KAFKA_DIR/node$1.properties"; }
pid_file() { echo "$KAFKA_DIR/node$1.pid"; }
log_file() { echo "$KAFKA_DIR/node$1.log"; }

voters() {
  local n out=()
  for n in "${KAFKA_NODES[@]}"; do
    out+=("$n@$KAFKA_HOST:$(controller_port "$n")")
  done
  local IFS=,
  echo "${out[*]}"
}

# write_node_config N — the shared settings (scripts/kafka/broker.properties) and node N's own.
# The internal topics get three replicas, like the project's topics on this cluster.
write_node_config() {
  local n=$1
  mkdir -p "$KAFKA_DIR"
  {
    cat "$RECSYS_ROOT/scripts/kafka/broker.properties"
    cat <<EOF

# node $n of the local stack (written by scripts/stack.sh)
node.id=$n
listeners=PLAINTEXT://$KAFKA_HOST:$(kafka_port "$n"),CONTROLLER://$KAFKA_HOST:$(controller_port "$n")
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$(kafka_port "$n")
controller.quorum.voters=$(voters)
log.dirs=$(node_dir "$n")
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
EOF
  } >"$(node_config "$n")"
}

# jvm_opts — the nodes' JVM options: KAFKA_JVM_OPTS, or scripts/kafka/jvm.options.
jvm_opts() {
  if [[ -n ${KAFKA_JVM_OPTS:-} ]]; then
    echo "$KAFKA_JVM_OPTS"
  else
    grep -v '^[[:space:]]*\(#\|$\)' "$RECSYS_ROOT/scripts/kafka/jvm.options" | tr '\n' ' '
  fi
}

# format_storage — gives every node without storage its meta.properties and bootstrap
# checkpoint, all under one cluster id (kept in $KAFKA_DIR/cluster-id); the formatters run in
# parallel.
format_storage() {
  local id_file="$KAFKA_DIR/cluster-id" n started
  local -a pids=()
  started=$(now_ms)
  if [[ ! -s $id_file ]]; then
    kafka_java kafka.tools.StorageTool random-uuid | tail -n1 >"$id_file.new"
    [[ -s $id_file.new ]] || die "kafka: StorageTool random-uuid printed nothing"
    mv "$id_file.new" "$id_file"
  fi
  for n in "${KAFKA_NODES[@]}"; do
    [[ ! -s $(node_dir "$n")/meta.properties ]] || continue
    info "kafka-$n: formatting $(node_dir "$n") (cluster $(<"$id_file"))"
    kafka_java kafka.tools.StorageTool format -t "$(<"$id_file")" -c "$(node_config "$n")" \
      --ignore-formatted >/dev/null 9>&- &
    pids+=($!)
  done
  ((${#pids[@]} > 0)) || return 0
  for n in "${pids[@]}"; do
    wait "$n" || die "kafka: formatting the storage failed"
  done
  info "kafka: storage formatted in $(elapsed_since "$started")"
}

# node_pid N — the pid of our node N if it is alive.
node_pid() {
  local pidf pid
  pidf=$(pid_file "$1")
  [[ -s $pidf ]] || return 1
  pid=$(<"$pidf")
  [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
  # Guard against pid reuse: it must be the Kafka node of this config.
  [[ $(tr '\0' ' ' <"/proc/$pid/cmdline") == *kafka.Kafka*"$(node_config "$1")"* ]] || return 1
  echo "$pid"
}

# pid_alive PID — true if PID is a live process (zombies count as dead).
pid_alive() {
  [[ -r /proc/$1/cmdline && -n $(tr -d '\0' <"/proc/$1/cmdline" 2>/dev/null) ]]
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

launch_node() {
  local n=$1 pidf log
  pidf=$(pid_file "$n")
  log=$(log_file "$n")
  rm -f "$pidf"
  [[ ! -f $log ]] || mv -f "$log" "$log.prev"
  # setsid: own session, so Ctrl-C in a foreground `run.sh` leaves it alone. The JVM options
  # are split into words on purpose.
  # shellcheck disable=SC2016,SC2046 # $$/$0/$@ belong to the inner bash
  setsid -f bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" \
    java $(jvm_opts) -Dlog4j2.configurationFile="$RECSYS_ROOT/scripts/kafka/log4j2.xml" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$(node_config "$n")" \
    </dev/null >"$log" 2>&1 9>&-
}

# listed_brokers — the node ids the cluster's metadata lists ("1 2 3 "), asked of the first node
# that answers.
listed_brokers() {
  local n listed
  for n in "${KAFKA_NODES[@]}"; do
    if listed=$(python3 "$RECSYS_ROOT/scripts/kafka/brokers.py" "$KAFKA_HOST:$(kafka_port "$n")" 2 2>/dev/null); then
      cut -d' ' -f1 <<<"$listed" | tr '\n' ' '
      return 0
    fi
  done
  return 1
}

# cluster_ready — the metadata lists every node.
cluster_ready() {
  [[ $(listed_brokers) == "${KAFKA_NODES[*]} " ]]
}

# wait_cluster START_MS — polls until the metadata lists every node; fails (after showing the
# logs) when a node exits or time runs out.
wait_cluster() {
  local started=$1 n deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while ! cluster_ready; do
    for n in "${KAFKA_NODES[@]}"; do
      if ! node_pid "$n" >/dev/null && ! kafka_ping "$KAFKA_HOST" "$(kafka_port "$n")"; then
        show_log_tail "$n"
        warn "kafka-$n exited during startup (log: $(log_file "$n"))"
        return 1
      fi
    done
    if ((SECONDS >= deadline)); then
      for n in "${KAFKA_NODES[@]}"; do show_log_tail "$n"; done
      warn "the cluster did not list all ${#KAFKA_NODES[@]} brokers within ${KAFKA_START_TIMEOUT}s (listed: $(listed_brokers || echo none))"
      return 1
    fi
    sleep 0.25
  done
  info "kafka: brokers ${KAFKA_NODES[*]} listed on $KAFKA_STACK_ADDRESS after $(elapsed_since "$started")"
}

# start_nodes — starts every node that is not running (together: a node waits for a quorum of
# the others), then waits until the cluster lists them all.
start_nodes() {
  local n started port pid
  for n in "${KAFKA_NODES[@]}"; do
    write_node_config "$n"
  done
  format_storage
  # Nodes started with other JVM options than the configured ones (jvm.options changed since)
  # are restarted, all together: `up` converges on the configuration.
  local opts running stale=0
  opts=$(jvm_opts)
  for n in "${KAFKA_NODES[@]}"; do
    if pid=$(node_pid "$n"); then
      running=$(tr '\0' ' ' <"/proc/$pid/cmdline")
      # shellcheck disable=SC2086 # unquoted on purpose: the options as single-spaced words
      [[ " $running " == *" $(echo $opts) "* ]] || stale=1
    fi
  done
  if ((stale)); then
    info "kafka: the JVM options changed since the nodes started; restarting them"
    stop_nodes
  fi
  started=$(now_ms)
  for n in "${KAFKA_NODES[@]}"; do
    port=$(kafka_port "$n")
    if pid=$(node_pid "$n"); then
      info "kafka-$n: running (pid $pid)"
      continue
    fi
    if kafka_ping "$KAFKA_HOST" "$port"; then
      warn "kafka-$n: $KAFKA_HOST:$port already answers Kafka but was not started by stack.sh; using it"
      continue
    fi
    if tcp_open "$KAFKA_HOST" "$port" || tcp_open "$KAFKA_HOST" "$(controller_port "$n")"; then
      die "kafka-$n: port $port or $(controller_port "$n") is taken by another process"
    fi
    info "kafka-$n: starting on $KAFKA_HOST:$port"
    launch_node "$n"
  done
  wait_cluster "$started"
}

# quarantine_storage — moves every node's storage aside (kept for a post-mortem) and forgets
# the cluster id; the next start formats a new cluster.
quarantine_storage() {
  local stamp n
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$KAFKA_DIR/broken-$stamp"
  for n in "${KAFKA_NODES[@]}"; do
    [[ ! -e $(node_dir "$n") ]] || mv -f "$(node_dir "$n")" "$KAFKA_DIR/broken-$stamp/"
  done
  [[ ! -e $KAFKA_DIR/cluster-id ]] || mv -f "$KAFKA_DIR/cluster-id" "$KAFKA_DIR/broken-$stamp/"
  info "moved the Kafka storage aside to $KAFKA_DIR/broken-$stamp"
}

# stop_nodes — SIGTERM to every node at once (each shuts down in a few seconds), SIGKILL to any
# still alive after KAFKA_STOP_TIMEOUT.
stop_nodes() {
  local n pid
  local -A pids=()
  for n in "${KAFKA_NODES[@]}"; do
    if pid=$(node_pid "$n"); then
      info "kafka-$n: stopping (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids[$n]=$pid
    else
      rm -f "$(pid_file "$n")"
    fi
  done
  local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  for n in "${!pids[@]}"; do
    while pid_alive "${pids[$n]}"; do
      if ((SECONDS >= deadline)); then
        warn "kafka-$n: still running ${KAFKA_STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
        kill -KILL "${pids[$n]}" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
    rm -f "$(pid_file "$n")"
  done
}

# ensure_kafka — the jars, then the three nodes. A cluster that will not start on its existing
# storage (a node's storage lost or from another cluster) starts over on fresh storage, keeping
# the old for a look: the local cluster holds scratch data for runs and tests.
ensure_kafka() {
  ensure_kafka_libs
  if ! start_nodes; then
    warn "the Kafka cluster did not start on its existing storage; starting over on fresh storage"
    stop_nodes
    quarantine_storage
    start_nodes || die "Kafka does not start even on fresh storage (logs: $KAFKA_DIR/node*.log)"
  fi
}

# clean_test_topics — deletes the topics of test runs whose database no longer exists. Tests name
# their topics t<hex>.<topic> after their database recsys_test_<hex> (tests/api/helpers.rs), and
# scripts/test.sh drops the databases no session uses, so a topic whose database is gone belongs
# to no running test.
clean_test_topics() {
  local topics topic hex n=0
  local -A live=() stale=()
  topics=$(kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_STACK_ADDRESS" --list) ||
    return 1
  local dbs db
  dbs=$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -X -Atc \
    "select datname from pg_database where datname like 'recsys\_test\_%'") || return 1
  while read -r db; do
    [[ -n $db ]] && live[${db#recsys_test_}]=1
  done <<<"$dbs"
  while read -r topic; do
    [[ $topic =~ ^t([0-9a-f]{32})\. ]] || continue
    hex=${BASH_REMATCH[1]}
    if [[ -n ${live[$hex]:-} ]]; then
      n=$((n + 1))
    else
      stale[$hex]=1
    fi
  done <<<"$topics"
  if ((${#stale[@]} == 0)); then
    info "no leftover test topics ($n topic(s) of live test runs)"
    return 0
  fi
  # One regex per batch of runs, `t(<hex>|<hex>|...)\..*`: a long session leaves
  # thousands of topics, and one argument naming each of them would pass the
  # kernel's limit on a single argument (128 KiB).
  local hexes=("${!stale[@]}") i batch
  local IFS='|'
  for ((i = 0; i < ${#hexes[@]}; i += 50)); do
    batch="${hexes[*]:i:50}"
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_STACK_ADDRESS" \
      --delete --if-exists --topic "t($batch)\\..*" >/dev/null || return 1
  done
  info "deleted the topics of ${#stale[@]} finished test run(s)"
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

# ensure_build_deps — what building recsys needs beyond Rust: OpenSSL's headers and pkg-config
# (librdkafka and the Postgres and Redis clients speak TLS through the system's OpenSSL), and
# the openssl command, with which the TLS test makes its certificate authority.
ensure_build_deps() {
  if pkg-config --exists openssl 2>/dev/null && have openssl; then
    return
  fi
  apt_install libssl-dev pkg-config openssl
  pkg-config --exists openssl || die "openssl: no pkg-config entry after installing libssl-dev"
}

cmd_up() {
  take_lock
  ensure_build_deps
  ensure_postgres
  ensure_redis
  ensure_kafka
  ensure_prometheus
  info "stack is up (state: $STACK_DIR)"
}

cmd_down() {
  take_lock
  stop_nodes
  stop_prometheus
  info "Kafka nodes and Prometheus stopped (Postgres and Redis left running)"
}

# status_line NAME STATE ADDRESS [NOTE]
status_line() {
  local line
  line=$(printf '  %-16s %-5s %-24s %s' "$1" "$2" "$3" "${4:-}")
  echo "${line%"${line##*[! ]}"}"
}

# quorum_status — the KRaft quorum as the cluster describes it: leader, epoch, voters and how far
# the followers lag.
quorum_status() {
  local described
  described=$(kafka_java org.apache.kafka.tools.MetadataQuorumCommand \
    --bootstrap-server "$KAFKA_STACK_ADDRESS" describe --status 2>/dev/null) || return 1
  awk -F':[[:space:]]+' '
    $1 == "LeaderId" { leader = $2 }
    $1 == "LeaderEpoch" { epoch = $2 }
    $1 == "MaxFollowerLag" { lag = $2 }
    $1 == "CurrentVoters" { line = $0; voters = gsub(/"id":/, "", line) }
    END { printf "leader node %s, epoch %s, %s voters, max follower lag %s records\n", leader, epoch, voters, lag }
  ' <<<"$described"
}

cmd_status() {
  local rc=0 n pid port quorum
  echo "infrastructure:"
  if pg_up; then status_line postgres up "$PG_HOST:$PG_PORT"; else
    status_line postgres down "$PG_HOST:$PG_PORT"
    rc=1
  fi
  if redis_up; then status_line redis up "$REDIS_HOST:$REDIS_PORT"; else
    status_line redis down "$REDIS_HOST:$REDIS_PORT"
    rc=1
  fi
  for n in "${KAFKA_NODES[@]}"; do
    port=$(kafka_port "$n")
    pid=$(node_pid "$n" || true)
    if kafka_ping "$KAFKA_HOST" "$port"; then
      if [[ -n $pid ]]; then
        status_line "kafka-$n" up "$KAFKA_HOST:$port" "pid $pid, quorum port $(controller_port "$n")"
      else
        status_line "kafka-$n" up "$KAFKA_HOST:$port" "(not started by stack.sh)"
      fi
    else
      status_line "kafka-$n" down "$KAFKA_HOST:$port" "${pid:+pid $pid alive but not answering}"
      rc=1
    fi
  done
  if cluster_ready; then
    status_line "kafka cluster" up "$KAFKA_STACK_ADDRESS" "metadata lists brokers $(listed_brokers)"
  else
    status_line "kafka cluster" down "$KAFKA_STACK_ADDRESS" "metadata lists: $(listed_brokers || echo nothing)"
    rc=1
  fi
  if [[ -d $KAFKA_LIBS ]] && quorum=$(quorum_status); then
    status_line "kafka quorum" up "$KAFKA_HOST:19093-19095" "$quorum"
  else
    status_line "kafka quorum" down "$KAFKA_HOST:19093-19095"
    rc=1
  fi
  if prometheus_ready; then
    status_line prometheus up "http://$PROMETHEUS_HOST:$PROMETHEUS_PORT" "scraping $RECSYS_METRICS_TARGET"
  else
    status_line prometheus down "http://$PROMETHEUS_HOST:$PROMETHEUS_PORT"
    rc=1
  fi
  echo "  kafka jars:   $KAFKA_LIBS$([[ -s $KAFKA_LIBS/.pom-sha256 ]] || echo ' (missing)')"
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
  printf 'export KAFKA_ADDRESS=%q\n' "${KAFKA_ADDRESS:-$KAFKA_STACK_ADDRESS}"
  printf 'export KAFKA_LIBS=%q\n' "$KAFKA_LIBS"
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
    topics-clean) clean_test_topics ;;
    *) usage ;;
  esac
}

# Run only when executed; `source scripts/stack.sh` just defines the helpers.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
