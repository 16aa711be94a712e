#!/usr/bin/env bash
# ci-pg.sh: run the PostgreSQL examples' tests (examples/pg-sink, examples/outbox-relay,
# examples/rollup: each its own Go module) against a throwaway PostgreSQL cluster and a
# real Apache Kafka broker, crash tests included.
#
#   1. installs Debian's postgresql package if no /usr/lib/postgresql/*/bin/initdb exists
#      (apt-get update once, then apt-get install -y postgresql, without its default cluster);
#   2. makes a cluster with initdb in a new temporary directory (as the postgres user when
#      run as root: initdb refuses root), listening on 127.0.0.1 only, on a free port,
#      trust authentication, fsync off (throwaway data);
#   3. uses the broker of KAFKA_BROKERS if set, else the one of scripts/kafka/kafka.sh,
#      started here if it is not running already (and then stopped at exit);
#   4. go test -race -count=1 in each example module with KBATCH_PG_DSN and KAFKA_BROKERS
#      set, printing the CRASH-SUMMARY lines; then the bench's PostgreSQL scenarios
#      (kbatch-pg-sink, pg-per-record) on a small topic, checked for every record;
#   5. always stops the cluster and removes its directory, and stops a broker it started.
#
# Knobs: KBATCH_PG_CI_TIMEOUT (seconds for the tests of one module, default 900);
# KBATCH_PG_PORT (the cluster's port; default: a free one); KBATCH_CI_LOG_DIR.
#
# Usage: scripts/ci-pg.sh
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
KAFKA_SH="$REPO_ROOT/scripts/kafka/kafka.sh"
LOG_DIR="${KBATCH_CI_LOG_DIR:-$(mktemp -d -t kbatch-ci-pg.XXXXXX)}"
TEST_TIMEOUT="${KBATCH_PG_CI_TIMEOUT:-900}"
MODULES=(examples/pg-sink examples/outbox-relay examples/rollup)
mkdir -p "$LOG_DIR"

log() { printf '[ci-pg %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PG_DIR=""
PG_BIN=""
STARTED_KAFKA=0

as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$PG_DIR" && -d "$PG_DIR" ]]; then
    if [[ -f "$PG_DIR/data/postmaster.pid" ]]; then
      log "stopping the PostgreSQL cluster"
      as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
        log "WARNING: pg_ctl stop failed"
    fi
    cp "$PG_DIR/postgres.log" "$LOG_DIR/postgres.log" 2>/dev/null || true
    rm -rf "$PG_DIR"
  fi
  if (( STARTED_KAFKA )); then
    log "bringing down the broker started here"
    bash "$KAFKA_SH" down || log "WARNING: kafka.sh down failed"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. PostgreSQL binaries.
find_pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n "$d" && -x "$d/initdb" ]] && echo "$d"
}
PG_BIN=$(find_pg_bin || true)
if [[ -z "$PG_BIN" ]]; then
  log "installing PostgreSQL (Debian package)"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  # No default cluster: this script makes its own.
  if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
    $SUDO mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q >"$LOG_DIR/apt.log" 2>&1 ||
    die "apt-get update failed (see $LOG_DIR/apt.log)"
  $SUDO env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q -o Dpkg::Options::=--force-confold \
    postgresql >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get install postgresql failed (see $LOG_DIR/apt.log)"
  PG_BIN=$(find_pg_bin) || die "postgresql installed but no initdb under /usr/lib/postgresql"
fi
log "PostgreSQL: $("$PG_BIN/postgres" --version)"

# 2. A throwaway cluster.
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
PG_DIR=$(mktemp -d -t kbatch-pg.XXXXXX)
chmod 755 "$PG_DIR"
[[ $(id -u) -eq 0 ]] && chown postgres "$PG_DIR"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 >"$LOG_DIR/initdb.log" 2>&1 ||
  die "initdb failed (see $LOG_DIR/initdb.log)"
started=0
for _ in 1 2 3; do
  PG_PORT="${KBATCH_PG_PORT:-$(free_port)}" || die "no free port"
  if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_DIR -c fsync=off -c synchronous_commit=off -c max_connections=200" \
    start >/dev/null; then
    started=1
    break
  fi
  [[ -n "${KBATCH_PG_PORT:-}" ]] && break
done
(( started )) || die "the PostgreSQL cluster did not start (see $LOG_DIR/postgres.log)"
export KBATCH_PG_DSN="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
log "PostgreSQL cluster in $PG_DIR on 127.0.0.1:$PG_PORT"

# 3. Kafka.
if [[ -z "${KAFKA_BROKERS:-}" ]]; then
  if ! bash "$KAFKA_SH" status >/dev/null 2>&1; then
    STARTED_KAFKA=1
    bash "$KAFKA_SH" up
  fi
  export KAFKA_BROKERS="127.0.0.1:${KBATCH_KAFKA_PORT:-9092}"
fi
log "Kafka: $KAFKA_BROKERS"

# 4. The tests.
failed=()
for m in "${MODULES[@]}"; do
  if [[ ! -f "$m/go.mod" ]]; then
    log "==== $m: no module here, skipped"
    continue
  fi
  name=$(basename "$m")
  t0=$(date +%s)
  log "==== $m: go test -race -count=1 ./..."
  set +e
  (cd "$m" && timeout "$TEST_TIMEOUT" go test -race -count=1 -timeout "${TEST_TIMEOUT}s" -v ./...) >"$LOG_DIR/$name.log" 2>&1
  rc=$?
  set -e
  grep -E '^(=== RUN|--- |ok|FAIL|PASS)|CRASH-SUMMARY' "$LOG_DIR/$name.log" | grep -v '^=== RUN' || true
  if (( rc == 0 )) && grep -q -- '--- SKIP' "$LOG_DIR/$name.log"; then
    log "==== $m: a test skipped although PostgreSQL and Kafka are here"
    rc=1
  fi
  if (( rc == 0 )); then
    log "==== $m: ok in $(( $(date +%s) - t0 ))s (log: $LOG_DIR/$name.log)"
  else
    log "==== $m: FAILED (exit $rc) in $(( $(date +%s) - t0 ))s (log: $LOG_DIR/$name.log)"
    failed+=("$m")
  fi
done

# The bench's PostgreSQL scenarios (kbatch-pg-sink, pg-per-record) on a small topic: they
# receive every record (rates are not asserted).
t0=$(date +%s)
log "==== bench: the PostgreSQL scenarios receive every record"
set +e
(cd bench && timeout "$TEST_TIMEOUT" go test -count=1 -run 'TestEveryScenarioReceivesEveryRecord' -v .) >"$LOG_DIR/bench.log" 2>&1
rc=$?
set -e
if (( rc == 0 )) && grep -q 'kbatch-pg-sink' "$LOG_DIR/bench.log" && grep -q 'pg-per-record' "$LOG_DIR/bench.log"; then
  log "==== bench: ok in $(( $(date +%s) - t0 ))s"
else
  log "==== bench: FAILED (exit $rc, or the PostgreSQL scenarios did not run) (log: $LOG_DIR/bench.log)"
  failed+=(bench)
fi

if (( ${#failed[@]} )); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all passed"
