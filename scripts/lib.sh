# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared paths and helpers for scripts/*; sourced, never run.
# Paths can be overridden from the environment so CI and developers can keep
# several checkouts or share one download cache.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS_DIR="$REPO_ROOT/scripts"
VENV_DIR="${ORCH_VENV_DIR:-$REPO_ROOT/.venv}"
VENV_PY="$VENV_DIR/bin/python"
STACK_DIR="${ORCH_STACK_DIR:-$REPO_ROOT/.stack}"
CACHE_DIR="${ORCH_CACHE_DIR:-$HOME/.cache/orchestrator}"
STACK_TIMEOUT="${ORCH_STACK_TIMEOUT:-90}"

# The pom is the one place the Kafka version is written down.
KAFKA_POM="$SCRIPTS_DIR/kafka/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")"
KAFKA_LIB="$CACHE_DIR/kafka-$KAFKA_VERSION/lib"
KAFKA_JSA="$CACHE_DIR/kafka-$KAFKA_VERSION/kafka.jsa"
KAFKA_DIR="$STACK_DIR/kafka"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093

# Resolved, because when pg/ is a symlink (see stack-up) the postgres user may
# not be allowed to walk through the stack dir to follow it.
PG_DIR="$(readlink -f "$STACK_DIR/pg" 2>/dev/null || echo "$STACK_DIR/pg")"
PG_DATA="$PG_DIR/data"
PG_SOCKET_DIR="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"
PG_PORT="${ORCH_PG_PORT:-55432}"

export ORCH_KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
export ORCH_DATABASE_URL="postgresql://orchestrator:orchestrator@127.0.0.1:$PG_PORT/orchestrator"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Newest Debian-packaged PostgreSQL; fails when none is installed.
pg_bin_dir() {
  local initdb
  initdb="$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)"
  [[ -x "$initdb" ]] && dirname "$initdb"
}

# PostgreSQL refuses to run as root, so root hands it to the postgres user.
as_pg() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A pid file counts only while that pid is still the program we started
# (pids get reused after a reboot or a crash).
pid_alive() { # pidfile cmdline-pattern
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
