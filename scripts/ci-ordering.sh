#!/usr/bin/env bash
# ci-ordering.sh: run examples/resequencer, the ordering modes' demonstration, and check that
# its self-check can fail.
#
#   1. go run ./examples/resequencer on the embedded broker (about 20 s): Resequence keeps the
#      queue flat and the results in arrival order, or the example exits non-zero;
#   2. the same with -ordering partition and 24 messages: one message after another, the queue
#      grows, and the example must say so by exiting 1 (a check that cannot fail proves nothing);
#   3. with KAFKA_BROKERS set, step 1 again against that broker (24 messages).
#
# The key-lanes chaos variant needs no step of its own: TestChaosKeyLanes matches
# `go test ./chaos/ -run TestChaos`, which the CI already runs.
#
# Knobs: KBATCH_CI_LOG_DIR, where logs go (default: a new temporary dir).
#
# Usage: scripts/ci-ordering.sh
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
LOG_DIR="${KBATCH_CI_LOG_DIR:-$(mktemp -d -t kbatch-ci-ordering.XXXXXX)}"
mkdir -p "$LOG_DIR"

log() { printf '[ci-ordering %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "resequencer on the embedded broker"
if ! go run ./examples/resequencer >"$LOG_DIR/resequence.log" 2>&1; then
  cat "$LOG_DIR/resequence.log"
  exit 1
fi
tail -n 2 "$LOG_DIR/resequence.log"

log "partition order on the embedded broker: the queue must grow and the example exit 1"
set +e
go run ./examples/resequencer -ordering partition -messages 24 >"$LOG_DIR/partition.log" 2>&1
rc=$?
set -e
if [ "$rc" -ne 1 ] || ! grep -q "it grows" "$LOG_DIR/partition.log"; then
  cat "$LOG_DIR/partition.log"
  log "expected exit 1 with a growing queue, got $rc"
  exit 1
fi
tail -n 2 "$LOG_DIR/partition.log"

if [ -n "${KAFKA_BROKERS:-}" ]; then
  log "resequencer on $KAFKA_BROKERS"
  if ! go run ./examples/resequencer -brokers "$KAFKA_BROKERS" -messages 24 >"$LOG_DIR/resequence-kafka.log" 2>&1; then
    cat "$LOG_DIR/resequence-kafka.log"
    exit 1
  fi
  tail -n 2 "$LOG_DIR/resequence-kafka.log"
fi
log "ok"
