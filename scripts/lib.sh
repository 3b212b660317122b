#!/usr/bin/env bash
# scripts/lib.sh — shared helpers for the recsys shell scripts.
#
# Usage (from another script):
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Defines and exports:
#   RECSYS_ROOT       repository root (parent of scripts/)
#   RECSYS_CACHE      cache root, outside the repo (default: ~/.cache/recsys)
#   CARGO_TARGET_DIR  "$RECSYS_CACHE/target" unless already set
#   STACK_DIR         runtime state of the local stack (Kafka data, logs, pids)
#   KAFKA_LIBS        the Apache Kafka jars (scripts/kafka/pom.xml), fetched by
#                     `scripts/stack.sh up`; tests start brokers of their own from them
#   KAFKA_STACK_ADDRESS  bootstrap list of the local three-node cluster
# and small helpers: info, warn, die, section, have, as_root, now_ms,
# elapsed_since, tcp_open, kafka_ping, apt_install.
#
# Sourcing this file does not change shell options of the caller beyond what
# the caller already set (all scripts use `set -euo pipefail`).

if [[ -n "${RECSYS_LIB_SOURCED:-}" ]]; then
  return 0
fi
RECSYS_LIB_SOURCED=1

RECSYS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RECSYS_CACHE="${RECSYS_CACHE:-${HOME:-/root}/.cache/recsys}"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RECSYS_CACHE/target}"
STACK_DIR="$RECSYS_CACHE/stack"
KAFKA_LIBS="${KAFKA_LIBS:-$RECSYS_CACHE/kafka/libs}"
KAFKA_STACK_ADDRESS="127.0.0.1:9091,127.0.0.1:9092,127.0.0.1:9093"
export RECSYS_ROOT RECSYS_CACHE CARGO_TARGET_DIR STACK_DIR KAFKA_LIBS KAFKA_STACK_ADDRESS

# ---------------------------------------------------------------- messages ---

info() { printf '[%s] %s\n' "${RECSYS_LOG_TAG:-recsys}" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "${RECSYS_LOG_TAG:-recsys}" "$*" >&2; }
die() {
  printf '[%s] ERROR: %s\n' "${RECSYS_LOG_TAG:-recsys}" "$*" >&2
  exit 1
}

# section TITLE — a visible header in CI logs.
section() {
  printf '\n==================== %s ====================\n' "$*" >&2
}

# ------------------------------------------------------------------- misc ---

have() { command -v "$1" >/dev/null 2>&1; }

# as_root CMD... — run CMD as root (directly when already root, else via sudo).
as_root() {
  if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
    "$@"
  elif have sudo; then
    sudo -n "$@"
  else
    die "need root to run: $*"
  fi
}

# now_ms — wall clock in milliseconds.
now_ms() {
  local t=${EPOCHREALTIME/[.,]/}
  echo $((t / 1000))
}

# elapsed_since START_MS — "1.234s".
elapsed_since() {
  local d=$(($(now_ms) - $1))
  printf '%d.%03ds' $((d / 1000)) $((d % 1000))
}

# ---------------------------------------------------------------- network ---

# tcp_open HOST PORT — true if a TCP connection to HOST:PORT succeeds.
tcp_open() {
  # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# kafka_ping HOST PORT — true if HOST:PORT answers a Kafka ApiVersions (v0)
# request with a matching correlation id and error_code 0. Pure bash
# (/dev/tcp), so it needs neither python nor a Kafka client.
kafka_ping() {
  local reply
  # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
  # Request: size=15 | api_key=18 (ApiVersions) | api_version=0 |
  #          correlation_id="recs" | client_id="stack" (int16 length + bytes).
  # Reply:   size(4) | correlation_id(4) | error_code(2) | ...
  reply=$(timeout 3 bash -c '
      exec 3<>"/dev/tcp/$1/$2" || exit 1
      printf "\x00\x00\x00\x0f\x00\x12\x00\x00recs\x00\x05stack" >&3
      head -c 10 <&3
    ' _ "$1" "$2" 2>/dev/null | od -An -v -tx1 | tr -d ' \n') || return 1
  [[ ${#reply} -eq 20 && ${reply:8:12} == "726563730000" ]]
}

# apt_install PKG... — install Debian packages (apt-get update once per run).
APT_UPDATED=""
apt_install() {
  local started
  started=$(now_ms)
  info "installing: $*"
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z $APT_UPDATED ]]; then
    as_root apt-get update -q
    APT_UPDATED=1
  fi
  as_root apt-get install -y -q --no-install-recommends "$@" </dev/null 9>&-
  info "installed $* in $(elapsed_since "$started")"
}

# run_recsys_bench WORK OUTPUT [ARGS...] — the release recsys-bench against the local stack:
# runtime logs in WORK, the report written to OUTPUT, labelled with the commit (and -dirty).
run_recsys_bench() {
  local work=$1 output=$2 label
  shift 2
  label="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo -dirty)"
  "$CARGO_TARGET_DIR/release/recsys-bench" \
    --recsys "$CARGO_TARGET_DIR/release/recsys" \
    --brokers "$KAFKA_STACK_ADDRESS" \
    --work "$work" \
    --output "$output" \
    --label "$label" \
    "$@"
}
