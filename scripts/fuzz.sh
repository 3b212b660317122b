#!/usr/bin/env bash
# scripts/fuzz.sh — fuzz every service with schemathesis against the OpenAPI
# document it serves at /openapi.json. Run by scripts/test.sh; runnable alone.
#
# Usage:
#   scripts/fuzz.sh
#
# Starts its own runtime (debug build, all four services on free ports, a fresh
# database recsys_test_<hex>, its own topic and Redis key prefixes) against the
# local stack (scripts/stack.sh up), then runs `st run --checks all` once per
# service as the admin: every answer must match the document, every request the
# document admits must be accepted (or refused for a reason of state: 401, 403,
# 404, 409, 429) and every request it refuses must get a 4xx. The one narrowing
# and the hooks are explained at schemathesis_config and write_hooks below.
#
# Fails unless, for every service: schemathesis passes, the runtime's own
# http_requests_total counted at least FUZZ_MIN_REQUESTS requests, and none of
# them answered 5xx. Prints one line per service with the counts.
#
# Environment:
#   FUZZ_SERVICES      which services (default "users products recommendations
#                      analytics")
#   FUZZ_MAX_EXAMPLES  cases per operation and phase (default 400; twice that for
#                      recommendations, which has the fewest operations)
#   FUZZ_MIN_REQUESTS  requests each service must receive (default 1000)
#   FUZZ_SEED          schemathesis seed (default: random, printed)
#   FUZZ_REPORT_DIR    where reports and the runtime log go
#                      (default $RECSYS_CACHE/fuzz)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RECSYS_LOG_TAG=fuzz

MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-400}"
MIN_REQUESTS="${FUZZ_MIN_REQUESTS:-1000}"
SEED="${FUZZ_SEED:-$((RANDOM * 32768 + RANDOM))}"
REPORT_DIR="${FUZZ_REPORT_DIR:-$RECSYS_CACHE/fuzz}"
ALL_SERVICES=(users products recommendations analytics)
read -r -a SERVICES <<<"${FUZZ_SERVICES:-${ALL_SERVICES[*]}}"
PSQL=(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -X -q -v ON_ERROR_STOP=1)

runtime_pid=""
database=""

cleanup() {
  if [[ -n $runtime_pid ]]; then
    kill "$runtime_pid" 2>/dev/null || true
    wait "$runtime_pid" 2>/dev/null || true
  fi
  if [[ -n $database ]]; then
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
  fi
}

ensure_schemathesis() {
  if ! have st; then
    info "installing schemathesis (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5' \
      || die "could not install schemathesis"
    hash -r
  fi
  have st || die "schemathesis installed but 'st' is not on PATH"
  info "$(st --version)"
}

# reported_port LOG SERVICE — the port the runtime logging (JSON) to LOG says SERVICE
# listens on; empty until it said so. The runtime binds port 0 and reports what it got.
reported_port() {
  python3 - "$1" "$2" <<'PY'
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if entry.get("msg") == "service listening" and entry.get("service") == sys.argv[2]:
        print(entry["port"])
        break
PY
}

# metric_sum SERVICE FILTER — sum of http_requests_total samples of SERVICE whose
# labels contain FILTER (e.g. 'status="5').
metric_sum() {
  local port=$1 service=$2 filter=$3
  curl -fsS "http://127.0.0.1:$port/metrics" \
    | awk -v svc="service=\"$service\"" -v f="$filter" '
        /^http_requests_total\{/ && index($0, svc) && index($0, f) { n += $NF }
        END { printf "%d\n", n }'
}

start_runtime() {
  local suffix
  # Named like the tests' databases and topics (recsys_test_<hex>, t<hex>.), so that
  # `scripts/stack.sh topics-clean` deletes the topics once the database is dropped.
  suffix=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  database="recsys_test_$suffix"
  "${PSQL[@]}" -c "CREATE DATABASE $database"
  declare -gA PORTS
  local service var
  ADMIN_EMAIL="fuzz-admin-$suffix@example.com"
  ADMIN_PASSWORD="fuzz-admin-password"
  mkdir -p "$REPORT_DIR"
  info "runtime log: $REPORT_DIR/runtime.log"
  (
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database"
    export KAFKA_ADDRESS="${KAFKA_ADDRESS:-$KAFKA_STACK_ADDRESS}"
    export KAFKA_TOPIC_PREFIX="t$suffix."
    export REDIS_KEY_PREFIX="fuzz$suffix:"
    export JWT_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    export ADMIN_EMAIL ADMIN_PASSWORD
    # The fuzzer is one client on 127.0.0.1 sending hundreds of wrong passwords, some for the
    # admin's email (it reads the profile); a lockout would refuse its own admin logins.
    # Lockouts are tested by attacks::repeated_login_failures_* and others, not here.
    export LOGIN_MAX_FAILURES=1000000 LOGIN_MAX_FAILURES_PER_IP=1000000
    export BIND_ADDRESS=127.0.0.1 LOG_FORMAT=json
    for service in "${ALL_SERVICES[@]}"; do
      var="${service^^}_PORT"
      export "$var=0"
    done
    exec "$CARGO_TARGET_DIR/debug/recsys" serve
  ) >"$REPORT_DIR/runtime.log" 2>&1 &
  runtime_pid=$!
  local deadline=$((SECONDS + 120))
  for service in "${ALL_SERVICES[@]}"; do
    until [[ -n ${PORTS[$service]:-} ]]; do
      kill -0 "$runtime_pid" 2>/dev/null || die "the runtime exited; see $REPORT_DIR/runtime.log"
      ((SECONDS < deadline)) || die "$service reported no port within 120 s"
      sleep 0.2
      PORTS[$service]=$(reported_port "$REPORT_DIR/runtime.log" "$service")
    done
    until curl -fsS "http://127.0.0.1:${PORTS[$service]}/readyz" >/dev/null 2>&1; do
      kill -0 "$runtime_pid" 2>/dev/null || die "the runtime exited; see $REPORT_DIR/runtime.log"
      ((SECONDS < deadline)) || die "$service not ready within 120 s"
      sleep 0.2
    done
  done
  info "runtime ready (pid $runtime_pid): ${ALL_SERVICES[*]} on ${PORTS[*]}"
}

admin_token() {
  curl -fsS -X POST "http://127.0.0.1:${PORTS[users]}/users/login" \
    -H 'Content-Type: application/json' \
    -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}

# write_hooks FILE — the schemathesis hooks of every run: a fresh `Idempotency-Key` per request.
#
# A key names one intended write (the documents: "send a new random one (a UUID) per intended
# write"); the fuzzer draws keys from the documented pattern and sends one key with different
# requests, which the server rightly answers `422` (or, for the same request again, with the
# first answer, whose resource a later request may have deleted). That a key is not reused is a
# rule across requests, which no OpenAPI 3.1 document can state. So every key the fuzzer drew
# valid is replaced by a new UUID (still valid, so the case keeps its meaning); a key drawn
# invalid is sent as drawn, and must get `400`. Reuse and replay are tested by idempotency::*.
write_hooks() {
  cat >"$1" <<'PY'
"""schemathesis hooks of scripts/fuzz.sh (written by it)."""
import re
import uuid

import schemathesis


def _key_pattern(case):
    for parameter in case.operation.headers:
        if parameter.name.lower() == "idempotency-key":
            return parameter.definition.get("schema", {}).get("pattern")
    return None


@schemathesis.hook
def before_call(context, case, kwargs):
    """A valid drawn Idempotency-Key becomes a fresh UUID; an invalid one is kept."""
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() != "idempotency-key" or not isinstance(value, str):
            continue
        pattern = _key_pattern(case)
        if pattern and re.search(pattern, value):
            headers[name] = str(uuid.uuid4())
PY
}

# schemathesis_config SERVICE — the schemathesis.toml of SERVICE's run, on stdout.
#
# Authentication: schemathesis reads the admin's id from the token's `sub` and uses it as a
# user id, so the users run logs the admin out everywhere (a documented operation doing its
# job). The users run therefore logs in itself, again after any 401 (dynamic auth on
# `POST /users/login`, served on that port); the other services have no route that revokes a
# token and get one fresh token each (`admin_token` right before their run).
#
# The one narrowing of `--checks all`: `positive_data_acceptance` also accepts `400` from
# `GET /analytics/timeseries`, for `from` after `to` or a window longer than 31 days. An
# OpenAPI 3.1 document constrains each parameter on its own; nothing in it can compare `from`
# with `to`, so schema-valid pairs the server must refuse exist. The rule is in the parameter's
# description and the documented `400`; every other answer of the operation is still judged, and
# every other check runs there unchanged.
schemathesis_config() {
  local service=$1
  printf 'hooks = "%s"\n\n[auth]\nauto-signup = false\n\n' "$REPORT_DIR/hooks.py"
  if [[ $service == users ]]; then
    cat <<TOML
[auth.dynamic.openapi.bearer]
path = "/users/login"
payload = { email = "$ADMIN_EMAIL", password = "$ADMIN_PASSWORD" }
extract_selector = "/token"
retry_on = [401]
TOML
  else
    printf '[auth.openapi.bearer]\nbearer = "%s"\n' "$(admin_token)"
  fi
  if [[ $service == analytics ]]; then
    cat <<'TOML'

[[operations]]
include-path = "/analytics/timeseries"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
TOML
  fi
}

# One worker: with several, hypothesis parses lambda sources from threads at once, which
# CPython 3.11.7 (the machine's) answers with "SystemError: AST constructor recursion depth
# mismatch" (a CPython bug, fixed in later releases), failing the run for no fault of ours.
fuzz_service() {
  local service=$1 port=${PORTS[$1]} rc=0 requests errors examples=$MAX_EXAMPLES
  [[ $service == recommendations ]] && examples=$((MAX_EXAMPLES * 2))
  section "fuzz $service (seed $SEED)"
  local config="$REPORT_DIR/$service.toml"
  write_hooks "$REPORT_DIR/hooks.py"
  schemathesis_config "$service" >"$config" || die "no schemathesis configuration for $service"
  # From the report folder: schemathesis keeps its example database in the working directory.
  (cd "$REPORT_DIR" && st --config-file "$config" run "http://127.0.0.1:$port/openapi.json" \
    --checks all \
    --max-examples "$examples" \
    --seed "$SEED" \
    --workers 1 \
    --request-timeout 15 \
    --suppress-health-check all \
    --report junit --report-dir "$REPORT_DIR/$service" \
    --warnings off) \
    || rc=$?
  requests=$(metric_sum "$port" "$service" '')
  errors=$(metric_sum "$port" "$service" 'status="5')
  info "$service: $requests requests counted by the runtime, $errors answered 5xx, schemathesis exit $rc"
  RESULTS+=("$service requests=$requests 5xx=$errors schemathesis=$rc")
  ((rc == 0)) || return 1
  ((errors == 0)) || return 1
  ((requests >= MIN_REQUESTS)) || {
    warn "$service: only $requests requests (< $MIN_REQUESTS)"
    return 1
  }
}

main() {
  cd "$RECSYS_ROOT"
  trap cleanup EXIT
  ensure_schemathesis
  cargo build --quiet --bin recsys
  start_runtime
  local failed=0 service
  admin_token >/dev/null || die "admin login failed"
  RESULTS=()
  for service in "${SERVICES[@]}"; do
    fuzz_service "$service" || failed=1
  done
  section "fuzz summary (seed $SEED)"
  printf '%s\n' "${RESULTS[@]}" >&2
  if grep -q '"level":"CRIT"\|panicked' "$REPORT_DIR/runtime.log"; then
    warn "the runtime logged a panic or a critical error"
    failed=1
  fi
  return "$failed"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
