#!/usr/bin/env bash
# ci-real-broker.sh: run kbatch's suites against a real Apache Kafka broker.
#
#   1. brings up the single-node broker of scripts/kafka/kafka.sh (it fetches the jars itself)
#      on 127.0.0.1:9092 and makes sure kcat is installed (kafka.sh ensure-kcat);
#   2. go test -race -count=1 ./...                 the integration suites against real Kafka
#   3. the chaos suite (./chaos): classic, KIP-848 and classic with the dedupe store, one broker restart mid-stream each
#      (KBATCH_CHAOS=1 KBATCH_CHAOS_BROKER_RESTART=1), printing its CHAOS-SUMMARY lines;
#   4. the interop suite (./interop): kcat produces, kbatch consumes, Kafka's
#      ConsumerGroupCommand must show LAG 0 (KBATCH_INTEROP=1);
#   4b. the live operations check (scripts/ci-ops.sh live): loadgen and orders-etl on this
#      broker, a real Prometheus scraping it: every dashboard and alert expression has data,
#      and the lag falls to 0 once loadgen stops;
#   5. always brings the broker down at exit, whatever happened.
#
# Every step runs even if an earlier one failed; the script exits non-zero if any failed and
# names them. Logs go to $KBATCH_CI_LOG_DIR (default: a new temporary directory).
#
# Knobs: KBATCH_CHAOS_RECORDS, KBATCH_CHAOS_STREAM, ... (see chaos/doc.go) pass through;
# KBATCH_CI_STEPS="race chaos interop" picks steps; KBATCH_KAFKA_PORT moves the broker.
#
# Usage: scripts/ci-real-broker.sh
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
KAFKA_SH="$REPO_ROOT/scripts/kafka/kafka.sh"
LOG_DIR="${KBATCH_CI_LOG_DIR:-$(mktemp -d -t kbatch-ci.XXXXXX)}"
STEPS="${KBATCH_CI_STEPS:-race chaos interop ops}"
mkdir -p "$LOG_DIR"

export KAFKA_BROKERS="127.0.0.1:${KBATCH_KAFKA_PORT:-9092}"
# The suites must use this broker, not a container, and only the steps below turn on the
# slow suites.
unset KBATCH_TESTCONTAINERS KBATCH_CHAOS KBATCH_CHAOS_BROKER_RESTART KBATCH_INTEROP

log() { printf '[ci-real-broker %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

broker_down() {
  local status=$?
  trap - EXIT INT TERM
  log "bringing the broker down"
  bash "$KAFKA_SH" down || log "WARNING: kafka.sh down failed"
  exit "$status"
}
trap broker_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

failed=()

# step NAME LOGFILE CMD...: run CMD with its output teed to LOGFILE; record a failure.
step() {
  local name="$1" logfile="$2" t0 rc
  shift 2
  t0=$(date +%s)
  log "==== $name: $*"
  set +e
  "$@" 2>&1 | tee "$logfile"
  rc=${PIPESTATUS[0]}
  set -e
  if (( rc == 0 )); then
    log "==== $name: ok in $(( $(date +%s) - t0 ))s (log: $logfile)"
  else
    log "==== $name: FAILED (exit $rc) in $(( $(date +%s) - t0 ))s (log: $logfile)"
    failed+=("$name")
  fi
}

wants() { [[ " $STEPS " == *" $1 "* ]]; }

log "logs in $LOG_DIR; broker $KAFKA_BROKERS; steps: $STEPS"
bash "$KAFKA_SH" up
bash "$KAFKA_SH" ensure-kcat

if wants race; then
  step "go test -race ./..." "$LOG_DIR/race.log" \
    go test -race -count=1 -timeout 30m ./...
fi

if wants chaos; then
  step "chaos suite" "$LOG_DIR/chaos.log" \
    env KBATCH_CHAOS=1 KBATCH_CHAOS_BROKER_RESTART=1 KBATCH_CHAOS_KEEP_FAILED="$LOG_DIR/chaos-failed" go test -count=1 -timeout 40m ./chaos/ -v -run 'TestChaos'
  log "chaos summaries:"
  grep -h 'CHAOS-SUMMARY' "$LOG_DIR/chaos.log" | sed -e 's/^[[:space:]]*chaos_test.go:[0-9]*: //' >&2 ||
    log "(no CHAOS-SUMMARY line: the chaos suite did not get as far as a summary)"
fi

if wants interop; then
  step "interop suite" "$LOG_DIR/interop.log" \
    env KBATCH_INTEROP=1 go test -count=1 -timeout 10m ./interop/ -v
fi

if wants ops; then
  step "live Prometheus against orders-etl" "$LOG_DIR/ops-live.log" \
    bash scripts/ci-ops.sh live
fi

if (( ${#failed[@]} > 0 )); then
  log "broker log tail:"
  bash "$KAFKA_SH" logs 40 >&2 || true
  log "FAILED: ${failed[*]} (logs in $LOG_DIR)"
  exit 1
fi
log "all steps passed (logs in $LOG_DIR)"
