#!/usr/bin/env bash
# ci-secure.sh: run the secured-broker suite (./securebroker) against a real Apache Kafka broker
# that enforces TLS, SASL/SCRAM and ACLs.
#
#   1. brings up the secured broker of scripts/kafka/kafka.sh (`up --secure`: 127.0.0.1:9192,
#      controller 9193, state in $KBATCH_KAFKA_HOME/state-secure), beside any plaintext broker,
#      which it never touches;
#   2. go test -race ./securebroker/ with the client settings kafka.sh wrote (bootstrap, CA,
#      users, ACL prefixes);
#   3. always brings the secured broker down at exit, whatever happened.
#
# Bounded: kafka.sh bounds the start (KBATCH_KAFKA_WAIT, 90 s) and each ACL tool run (120 s);
# the tests run under `go test -timeout` (KBATCH_CI_SECURE_TEST_TIMEOUT, default 5m); the whole
# script normally takes about 2 minutes.
#
# Knobs: KBATCH_CI_SECURE_SKIP, a regexp passed to go test -skip (e.g. to leave out tests that
# wait for a fix elsewhere); KBATCH_CI_LOG_DIR, where logs go (default: a new temporary dir).
#
# Usage: scripts/ci-secure.sh
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
KAFKA_SH="$REPO_ROOT/scripts/kafka/kafka.sh"
LOG_DIR="${KBATCH_CI_LOG_DIR:-$(mktemp -d -t kbatch-ci-secure.XXXXXX)}"
TEST_TIMEOUT="${KBATCH_CI_SECURE_TEST_TIMEOUT:-5m}"
mkdir -p "$LOG_DIR"

log() { printf '[ci-secure %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

broker_down() {
  local status=$?
  trap - EXIT INT TERM
  log "bringing the secured broker down"
  bash "$KAFKA_SH" down --secure || log "WARNING: kafka.sh down --secure failed"
  exit "$status"
}
trap broker_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$(date +%s)
log "logs in $LOG_DIR"
bash "$KAFKA_SH" up --secure 2>&1 | tee "$LOG_DIR/up.log"
log "secured broker up in $(( $(date +%s) - t0 ))s"

# The client settings (passwords included) go to the tests by the environment only.
eval "$(bash "$KAFKA_SH" --secure env)"

skip=()
if [[ -n "${KBATCH_CI_SECURE_SKIP:-}" ]]; then
  skip=(-skip "$KBATCH_CI_SECURE_SKIP")
  log "skipping tests matching: $KBATCH_CI_SECURE_SKIP"
fi
t1=$(date +%s)
log "==== go test -race ./securebroker/"
set +e
go test -race -count=1 -timeout "$TEST_TIMEOUT" -v "${skip[@]}" ./securebroker/ 2>&1 | tee "$LOG_DIR/securebroker.log"
rc=${PIPESTATUS[0]}
set -e
log "==== secured suite: $( (( rc == 0 )) && echo ok || echo "FAILED (exit $rc)") in $(( $(date +%s) - t1 ))s"
grep -E '^ *--- (PASS|FAIL|SKIP)|^(ok|FAIL)' "$LOG_DIR/securebroker.log" >&2 || true
if (( rc != 0 )); then
  log "secured broker log tail:"
  bash "$KAFKA_SH" logs --secure 40 >&2 || true
fi
log "total $(( $(date +%s) - t0 ))s (logs in $LOG_DIR)"
exit "$rc"
