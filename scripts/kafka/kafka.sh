#!/usr/bin/env bash
# scripts/kafka/kafka.sh: a single-node Apache Kafka broker (KRaft, broker+controller in one JVM)
# on 127.0.0.1, without Docker, from jars that Maven resolves from Maven Central (scripts/kafka/pom.xml).
#
# Usage: scripts/kafka/kafka.sh <command> [args]
#   up                 resolve jars (cached), format storage, start the broker, wait until it answers.
#                      Idempotent: does nothing if our broker is already running and answering.
#                      Starts from an empty data dir unless KBATCH_KAFKA_FRESH=0.
#   down               stop the broker (SIGTERM, bounded wait, then SIGKILL) and remove the PID file.
#   restart            stop then start again KEEPING the data (topics, offsets, groups survive).
#   status             print state; exit 0 running+answering, 1 not running, 3 running but not answering.
#   logs [-f] [N]      last N (default 100) lines of the broker log; -f follows it.
#   classpath          print the Java classpath (resolving jars first if needed) on stdout.
#   run-class CLASS [ARGS...]
#                      run a Java main class on that classpath, e.g.
#                      run-class org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
#                                --bootstrap-server 127.0.0.1:9092 --list
#   probe [ARGS...]    run the Go readiness probe (scripts/kafka/probe) against the broker.
#   ensure-kcat        install kcat with apt-get if it is not on PATH.
#   wipe               delete the state dir (data, logs, configs); refuses while the broker runs.
#   paths              print where the cache, state, data and logs are.
#   env                (secured mode) print the client settings as shell exports, passwords included:
#                      eval "$(scripts/kafka/kafka.sh --secure env)"
#
# Secured mode: `--secure` (before or right after the command) or KBATCH_KAFKA_SECURE=1 runs
# every command above against a second, independent broker: its own ports (9192, controller 9193),
# its own state dir ($KBATCH_KAFKA_HOME/state-secure) and lock, so it runs beside the plaintext one.
# Its client listener is SASL_SSL: a CA and a broker certificate made by openssl at each fresh
# start, SCRAM-SHA-512/256 users (and PLAIN) made by `StorageTool format --add-scram`, the
# StandardAuthorizer with super.users=User:admin (and User:ANONYMOUS for the plaintext controller
# listener on 127.0.0.1), and prefixed ACLs for the least-privilege user `member`, made by
# org.apache.kafka.tools.AclCommand:
#   READ on topics kbsec.in.*  and groups kbsec.grp.*      (consume, commit)
#   WRITE on topics kbsec.dlq.*                            (dead-letter topics made beforehand)
#   READ, WRITE, DESCRIBE_CONFIGS on topics kbsec.log.*    (dedupe changelogs made beforehand)
# `up --secure` prints the client settings (without passwords) and writes them, with passwords,
# to state-secure/client.env (mode 0600); `env` prints them.
#
# Environment (all optional):
#   KBATCH_KAFKA_HOME   cache+state root            (default: $HOME/.cache/kbatch-kafka)
#   KBATCH_KAFKA_SECURE 1: secured mode (same as --secure)
#   KBATCH_KAFKA_SECURE_PORT / KBATCH_KAFKA_SECURE_CONTROLLER_PORT  secured mode's ports (9192 / 9193)
#   KBATCH_KAFKA_FRESH  1: wipe data on `up` (default 1); 0: keep the previous data dir
#   KBATCH_KAFKA_PORT / KBATCH_KAFKA_CONTROLLER_PORT   (default 9092 / 9093, always on 127.0.0.1)
#   KBATCH_KAFKA_HEAP   broker max heap             (default 1g)
#   KBATCH_KAFKA_WAIT   seconds to wait for readiness (default 90)
#   KBATCH_KAFKA_STOP_WAIT  seconds to wait after SIGTERM before SIGKILL (default 30)
#   KBATCH_KAFKA_EXTRA_PROPS  extra server.properties lines, appended last (later keys win)
#   KBATCH_KAFKA_JVM_OPTS     extra JVM options for the broker
#   KBATCH_KAFKA_TOOL_OPTS    JVM options for run-class (default -Xmx512m)
#   KBATCH_KAFKA_MVN_ARGS     extra arguments for mvn (e.g. -o for offline)
#   JAVA_HOME / KBATCH_KAFKA_JAVA  which java to run
set -euo pipefail

# Secured mode: --secure as the first or second argument, or KBATCH_KAFKA_SECURE=1.
SECURE="${KBATCH_KAFKA_SECURE:-0}"
if [[ "${1:-}" == --secure ]]; then
  SECURE=1
  shift
elif [[ "${2:-}" == --secure ]]; then
  SECURE=1
  set -- "$1" "${@:3}"
fi

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
SCALA_VERSION="2.13"

KBATCH_KAFKA_HOME="${KBATCH_KAFKA_HOME:-$HOME/.cache/kbatch-kafka}"
LIBS_DIR="$KBATCH_KAFKA_HOME/libs"
CONF_DIR="$KBATCH_KAFKA_HOME/conf"
BIN_DIR="$KBATCH_KAFKA_HOME/bin"
STATE_DIR="$KBATCH_KAFKA_HOME/state"
[[ "$SECURE" == 1 ]] && STATE_DIR="$KBATCH_KAFKA_HOME/state-secure"
DATA_DIR="$STATE_DIR/data"
LOG_DIR="$STATE_DIR/logs"
PID_FILE="$STATE_DIR/kafka.pid"
SERVER_PROPS="$STATE_DIR/server.properties"
BROKER_LOG4J="$STATE_DIR/log4j2-broker.properties"
TOOLS_LOG4J="$CONF_DIR/log4j2.properties"
SERVER_LOG="$LOG_DIR/server.log"
CONSOLE_LOG="$LOG_DIR/console.out"
LOCK_FILE="$KBATCH_KAFKA_HOME/.lock"
# The jars are shared by both modes; the secured broker has a lock of its own so that
# starting it never waits for the plaintext broker (and the other way round).
JARS_LOCK_FILE="$LOCK_FILE"
[[ "$SECURE" == 1 ]] && LOCK_FILE="$KBATCH_KAFKA_HOME/.lock-secure"
TLS_DIR="$STATE_DIR/tls"
CLIENT_ENV="$STATE_DIR/client.env"
ADMIN_PROPS="$STATE_DIR/admin-client.properties"
ACLS_DONE="$STATE_DIR/data/.kbatch-acls"
PROBE_BIN="$BIN_DIR/kafka-probe"
KAFKA_JAR="$LIBS_DIR/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar"
POM_STAMP="$LIBS_DIR/.pom.sha256"

HOST="127.0.0.1"
PORT="${KBATCH_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KBATCH_KAFKA_CONTROLLER_PORT:-9093}"
if [[ "$SECURE" == 1 ]]; then
  PORT="${KBATCH_KAFKA_SECURE_PORT:-9192}"
  CONTROLLER_PORT="${KBATCH_KAFKA_SECURE_CONTROLLER_PORT:-9193}"
fi
# Secured mode's ACL prefixes (see the usage text above).
PREFIX_INPUT="kbsec.in."
PREFIX_GROUP="kbsec.grp."
PREFIX_DLQ="kbsec.dlq."
PREFIX_CHANGELOG="kbsec.log."
BOOTSTRAP="$HOST:$PORT"
HEAP="${KBATCH_KAFKA_HEAP:-1g}"
WAIT_SECS="${KBATCH_KAFKA_WAIT:-90}"
STOP_WAIT_SECS="${KBATCH_KAFKA_STOP_WAIT:-30}"

if [[ -n "${KBATCH_KAFKA_JAVA:-}" ]]; then
  JAVA="$KBATCH_KAFKA_JAVA"
elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA="java"
fi

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { printf 'kafka.sh: ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

[[ -n "$KAFKA_VERSION" ]] || die "could not read <kafka.version> from $POM"

# ---------------------------------------------------------------------------------------------
# locking: up/down/restart/wipe and jar resolution run one at a time per KBATCH_KAFKA_HOME.
with_lock() {
  mkdir -p "$KBATCH_KAFKA_HOME"
  if command -v flock >/dev/null 2>&1; then
    (
      flock -w 600 9 || die "timed out waiting for $LOCK_FILE"
      "$@"
    ) 9>"$LOCK_FILE"
  else
    "$@"
  fi
}

# ---------------------------------------------------------------------------------------------
# jars
jars_ready() {
  [[ -f "$KAFKA_JAR" && -f "$POM_STAMP" ]] &&
    [[ "$(cat "$POM_STAMP")" == "$(sha256sum "$POM" | cut -d' ' -f1)" ]]
}

resolve_jars() {
  write_tools_conf
  if jars_ready; then
    return 0
  fi
  if [[ "$LOCK_FILE" != "$JARS_LOCK_FILE" ]]; then
    # Secured mode holds its own lock: take the shared one for the jars.
    LOCK_FILE="$JARS_LOCK_FILE" with_lock resolve_jars
    return
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH (needed once to fetch the Kafka jars)"
  local t0 tmp mvn_log
  t0="$(now)"
  mkdir -p "$KBATCH_KAFKA_HOME"
  tmp="$(mktemp -d "$KBATCH_KAFKA_HOME/libs.tmp.XXXXXX")"
  mvn_log="$tmp.mvn.log"
  log "resolving Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR ..."
  # shellcheck disable=SC2086  # KBATCH_KAFKA_MVN_ARGS is a word list on purpose
  if ! mvn -B -q -Dstyle.color=never ${KBATCH_KAFKA_MVN_ARGS:-} -f "$POM" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
      >"$mvn_log" 2>&1; then
    cat "$mvn_log" >&2
    rm -rf "$tmp" "$mvn_log"
    die "mvn dependency:copy-dependencies failed (see output above)"
  fi
  rm -f "$mvn_log"
  [[ -f "$tmp/$(basename "$KAFKA_JAR")" ]] || { rm -rf "$tmp"; die "mvn did not produce $(basename "$KAFKA_JAR")"; }
  # Exactly one SLF4J binding, or logging silently goes to the wrong place (or nowhere).
  local bindings
  bindings="$(cd "$tmp" && ls | grep -E '^(log4j-slf4j2?-impl|slf4j-(simple|nop|jdk14|log4j12|reload4j)|logback-classic)-[0-9]' || true)"
  if [[ "$(printf '%s' "$bindings" | grep -c . || true)" != "1" ]]; then
    rm -rf "$tmp"
    die "expected exactly one SLF4J binding on the classpath, found: ${bindings:-none}"
  fi
  sha256sum "$POM" | cut -d' ' -f1 >"$tmp/.pom.sha256"
  rm -rf "$LIBS_DIR.old"
  if [[ -d "$LIBS_DIR" ]]; then mv "$LIBS_DIR" "$LIBS_DIR.old"; fi
  mv "$tmp" "$LIBS_DIR"
  rm -rf "$LIBS_DIR.old"
  log "resolved $(ls "$LIBS_DIR"/*.jar | wc -l) jars in $(elapsed "$t0") (binding: $bindings)"
}

classpath() {
  local jars=("$LIBS_DIR"/*.jar)
  [[ -f "${jars[0]}" ]] || die "no jars in $LIBS_DIR"
  local IFS=:
  # CONF_DIR first: its log4j2.properties (WARN to stderr) is the default logging for tools.
  printf '%s\n' "$CONF_DIR:${jars[*]}"
}

ensure_jars() {
  if ! jars_ready; then LOCK_FILE="$JARS_LOCK_FILE" with_lock resolve_jars; fi
  write_tools_conf
}

# ---------------------------------------------------------------------------------------------
# configs
write_tools_conf() {
  mkdir -p "$CONF_DIR"
  [[ -f "$TOOLS_LOG4J" ]] && return 0
  cat >"$TOOLS_LOG4J.tmp.$$" <<'EOF'
# Generated by scripts/kafka/kafka.sh: logging for Kafka command-line tools (run-class, classpath users).
status = error
name = kbatch-kafka-tools
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
EOF
  mv "$TOOLS_LOG4J.tmp.$$" "$TOOLS_LOG4J"
}

write_broker_conf() {
  mkdir -p "$STATE_DIR" "$DATA_DIR" "$LOG_DIR"
  cat >"$BROKER_LOG4J" <<'EOF'
# Generated by scripts/kafka/kafka.sh: the broker logs to ${sys:kafka.logs.dir}/server.log, not stdout.
status = warn
name = kbatch-kafka-broker
appender.server.type = RollingFile
appender.server.name = SERVER
appender.server.fileName = ${sys:kafka.logs.dir}/server.log
appender.server.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.server.append = true
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 4
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = SERVER
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.network.name = kafka.network.RequestChannel$
logger.network.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
  cat >"$SERVER_PROPS" <<EOF
# Generated by scripts/kafka/kafka.sh on every up/restart: edit the script (or KBATCH_KAFKA_EXTRA_PROPS), not this file.
# Single-node KRaft cluster: one JVM is both broker and controller, listening on 127.0.0.1 only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@${HOST}:${CONTROLLER_PORT}
listeners=PLAINTEXT://${HOST}:${PORT},CONTROLLER://${HOST}:${CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://${HOST}:${PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${DATA_DIR}

# Topics: one partition, replication factor 1, created on first use.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=24

# Internal topics sized for one node (and fewer partitions for a faster first group/txn).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=5

# Consumer groups: both the classic protocol and KIP-848's consumer protocol
# (ConsumerGroupHeartbeat; franz-go/kgo, Java clients with group.protocol=consumer).
# group.coordinator.rebalance.protocols is NOT set: its Kafka 4.3 default is already
# classic,consumer,streams, and setting the key logs a deprecation warning (removed in 5.0).
# The storage format step finalizes group.version=1 (release 4.3-IV0), which KIP-848 needs;
# kafka.sh up checks both with the probe's -require-kip848.
group.initial.rebalance.delay.ms=0
# Faster failure detection than the defaults (45 s sessions, 5 s heartbeats), for tests.
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.session.timeout.ms=10000
group.consumer.min.session.timeout.ms=6000
group.min.session.timeout.ms=1000

# After an unclean stop (kill -9, SIGKILL after a slow SIGTERM) the restarted broker cannot
# register until the controller fences its previous incarnation: broker.session.timeout.ms
# (default 9 s; restart took ~13 s). 4 s with 0.5 s heartbeats makes that ~6-8 s.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=500

num.network.threads=3
num.io.threads=4
EOF
  if [[ "$SECURE" == 1 ]]; then
    write_secure_props
  fi
  if [[ -n "${KBATCH_KAFKA_EXTRA_PROPS:-}" ]]; then
    printf '\n# From KBATCH_KAFKA_EXTRA_PROPS:\n%s\n' "$KBATCH_KAFKA_EXTRA_PROPS" >>"$SERVER_PROPS"
  fi
}

# ---------------------------------------------------------------------------------------------
# probe (Go, franz-go): built once into $BIN_DIR, rebuilt when its source or go.mod/go.sum change.
build_probe() {
  local src="$SCRIPT_DIR/probe/main.go" f stale=0
  # The probe imports the security package: rebuild when it changes too.
  for f in "$REPO_ROOT"/security/*.go; do
    [[ -f "$f" && "$f" -nt "$PROBE_BIN" ]] && stale=1
  done
  if [[ "$stale" == 0 && -x "$PROBE_BIN" && "$PROBE_BIN" -nt "$src" && "$PROBE_BIN" -nt "$REPO_ROOT/go.mod" &&
        ( ! -f "$REPO_ROOT/go.sum" || "$PROBE_BIN" -nt "$REPO_ROOT/go.sum" ) ]]; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go not found on PATH (needed to build scripts/kafka/probe)"
  mkdir -p "$BIN_DIR"
  local tmp="$PROBE_BIN.tmp.$$" out
  if out="$(cd "$REPO_ROOT" && go build -o "$tmp" ./scripts/kafka/probe 2>&1)"; then
    mv "$tmp" "$PROBE_BIN"
  else
    rm -f "$tmp"
    if [[ -x "$PROBE_BIN" ]]; then
      log "WARNING: rebuilding the probe failed, using the previous build:"
      printf '%s\n' "$out" >&2
    else
      printf '%s\n' "$out" >&2
      die "could not build scripts/kafka/probe"
    fi
  fi
}

probe() {
  if [[ "$SECURE" == 1 ]]; then
    # As the admin user; the password goes by the environment, not the command line.
    KBATCH_PROBE_SASL_PASSWORD="$(env_value KBATCH_SECURE_ADMIN_PASSWORD)" \
      "$PROBE_BIN" -brokers "$BOOTSTRAP" -tls-ca "$TLS_DIR/ca.pem" -sasl-mechanism SCRAM-SHA-512 \
      -sasl-user admin "$@"
    return
  fi
  "$PROBE_BIN" -brokers "$BOOTSTRAP" "$@"
}

# ---------------------------------------------------------------------------------------------
# process helpers
pid_alive() {
  local pid="$1" st=""
  [[ -n "$pid" && -e "/proc/$pid" ]] || return 1
  # A zombie (exited, not yet reaped) counts as dead.
  read -r _ _ st _ <"/proc/$pid/stat" 2>/dev/null || return 1
  [[ "$st" != "Z" ]]
}

# is_ours PID: the process is a kafka.Kafka JVM started with our server.properties.
is_ours() {
  local pid="$1" cmd
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmd" == *" kafka.Kafka $SERVER_PROPS "* ]]
}

# running_pid: print the PID of our broker (from the PID file, else by its exact server.properties path).
running_pid() {
  local pid=""
  if [[ -f "$PID_FILE" ]]; then
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && pid_alive "$pid" && is_ours "$pid"; then
      echo "$pid"
      return 0
    fi
  fi
  local p
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    if pid_alive "$p" && is_ours "$p"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

show_log_tail() {
  local n="${1:-60}"
  printf '\n----- last %s lines of %s -----\n' "$n" "$SERVER_LOG" >&2
  if [[ -f "$SERVER_LOG" ]]; then tail -n "$n" "$SERVER_LOG" >&2; else echo "(no such file)" >&2; fi
  if [[ -s "$CONSOLE_LOG" ]]; then
    printf -- '----- last %s lines of %s (JVM stdout/stderr) -----\n' "$n" "$CONSOLE_LOG" >&2
    tail -n "$n" "$CONSOLE_LOG" >&2
  fi
  printf -- '----- end of log -----\n' >&2
}

tool_java() {
  # Short-lived admin JVMs (storage format): small heap, quick JIT.
  "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$(classpath)" "$@"
}

# ---------------------------------------------------------------------------------------------
# start/stop
format_storage() {
  if [[ -f "$DATA_DIR/meta.properties" ]]; then
    return 0
  fi
  local cluster_id out
  cluster_id="$(tool_java kafka.tools.StorageTool random-uuid | tail -n1)"
  [[ "$cluster_id" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid printed '$cluster_id'"
  echo "$cluster_id" >"$STATE_DIR/cluster.id"
  local scram=()
  if [[ "$SECURE" == 1 ]]; then
    local admin_pw member_pw
    admin_pw="$(env_value KBATCH_SECURE_ADMIN_PASSWORD)"
    member_pw="$(env_value KBATCH_SECURE_MEMBER_PASSWORD)"
    scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]"
           --add-scram "SCRAM-SHA-512=[name=member,password=$member_pw]"
           --add-scram "SCRAM-SHA-256=[name=member,password=$member_pw]")
  fi
  if ! out="$(tool_java kafka.tools.StorageTool format -t "$cluster_id" -c "$SERVER_PROPS" -g "${scram[@]}" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "kafka.tools.StorageTool format failed"
  fi
  log "formatted $DATA_DIR (cluster id $cluster_id): $(printf '%s' "$out" | tail -n1)"
}

# start_broker WIPE: start the JVM in the background and wait until it answers.
start_broker() {
  local wipe="$1" t0 pid
  t0="$(now)"
  if port_open "$PORT" || port_open "$CONTROLLER_PORT"; then
    die "something else already listens on $HOST:$PORT or $HOST:$CONTROLLER_PORT (not our broker: no process runs with $SERVER_PROPS)"
  fi
  if [[ "$wipe" == 1 ]]; then
    rm -rf "$DATA_DIR" "$LOG_DIR"
    [[ "$SECURE" == 1 ]] && rm -rf "$TLS_DIR" "$CLIENT_ENV" "$ADMIN_PROPS"
  fi
  [[ "$SECURE" == 1 ]] && make_secrets
  write_broker_conf
  format_storage

  printf '\n===== kafka.sh: starting broker at %s (wipe=%s) =====\n' "$(date -Is)" "$wipe" >>"$CONSOLE_LOG"
  # shellcheck disable=SC2086  # KBATCH_KAFKA_JVM_OPTS is a word list on purpose
  nohup "$JAVA" -Xms256m -Xmx"$HEAP" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOG_DIR" -Dlog4j2.configurationFile="$BROKER_LOG4J" \
    ${KBATCH_KAFKA_JVM_OPTS:-} \
    -cp "$(classpath)" kafka.Kafka "$SERVER_PROPS" \
    >>"$CONSOLE_LOG" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  log "started broker pid $pid (Kafka $KAFKA_VERSION, heap $HEAP); log: $SERVER_LOG"

  if ! wait_ready "$pid" "$WAIT_SECS"; then
    show_log_tail 60
    if pid_alive "$pid"; then
      log "stopping the broker that did not become ready (pid $pid)"
      stop_pid "$pid" 10 || true
    fi
    rm -f "$PID_FILE"
    die "broker did not become ready on $BOOTSTRAP (waited up to ${WAIT_SECS}s); full log: $SERVER_LOG"
  fi
  log "broker ready on $BOOTSTRAP in $(elapsed "$t0") (pid $pid); log: $SERVER_LOG"
  if [[ "$SECURE" == 1 ]]; then
    if ! make_acls; then
      log "stopping the secured broker: its ACLs could not be made (pid $pid)"
      stop_pid "$pid" 10 || true
      rm -f "$PID_FILE"
      die "AclCommand failed"
    fi
    print_client_settings
  fi
}

# wait_ready PID SECS: poll until the broker answers metadata, then prove the controller
# and KIP-848 support once. Fails early if the JVM dies.
wait_ready() {
  local pid="$1" secs="$2" deadline left
  deadline=$(( $(date +%s) + secs ))
  while :; do
    if ! pid_alive "$pid"; then
      log "broker process $pid exited during startup"
      return 1
    fi
    if port_open "$PORT" && probe -q -timeout 3s -attempt-timeout 2s >/dev/null 2>&1; then
      break
    fi
    if (( $(date +%s) >= deadline )); then
      log "timed out waiting for $BOOTSTRAP to answer metadata"
      probe -timeout 1s >&2 || true
      return 1
    fi
    sleep 0.5
  done
  left=$(( deadline - $(date +%s) ))
  (( left < 20 )) && left=20
  probe -timeout "${left}s" -create-topic -require-kip848 >&2
}

# stop_pid PID SECS: SIGTERM, wait up to SECS, then SIGKILL.
stop_pid() {
  local pid="$1" secs="$2" i
  kill -TERM "$pid" 2>/dev/null || true
  for (( i = 0; i < secs * 5; i++ )); do
    pid_alive "$pid" || return 0
    sleep 0.2
  done
  log "broker pid $pid still alive after ${secs}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for (( i = 0; i < 50; i++ )); do
    pid_alive "$pid" || return 0
    sleep 0.2
  done
  return 1
}

stop_broker() {
  local pid t0
  t0="$(now)"
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "broker not running"
    return 0
  fi
  log "stopping broker pid $pid ..."
  stop_pid "$pid" "$STOP_WAIT_SECS" || die "could not stop broker pid $pid"
  rm -f "$PID_FILE"
  log "broker stopped in $(elapsed "$t0")"
}

# ---------------------------------------------------------------------------------------------
# secured mode: TLS material, users, ACLs

# env_value NAME: NAME's value in the client settings file.
env_value() {
  [[ -f "$CLIENT_ENV" ]] || die "no $CLIENT_ENV (is the secured broker up? $0 --secure up)"
  sed -n "s/^$1=//p" "$CLIENT_ENV" | tail -n1
}

# make_secrets: a CA, the broker's key and certificate (PEM, for 127.0.0.1 and localhost), the
# users' random passwords and the admin's client properties, unless a previous start left them
# (restart and KBATCH_KAFKA_FRESH=0 keep the data, whose SCRAM users have these passwords).
make_secrets() {
  if [[ -f "$CLIENT_ENV" && -f "$TLS_DIR/ca.pem" && -f "$TLS_DIR/broker.pem" ]]; then
    return 0
  fi
  command -v openssl >/dev/null 2>&1 || die "openssl not found on PATH (secured mode makes its certificates with it)"
  local t0 old_umask
  t0="$(now)"
  old_umask="$(umask)"
  umask 077
  rm -rf "$TLS_DIR" "$DATA_DIR"
  mkdir -p "$TLS_DIR"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 7 -subj "/CN=kbatch secured-broker test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem"
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=127.0.0.1" \
      -keyout "$TLS_DIR/broker.key" -out "$TLS_DIR/broker.csr"
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" \
      >"$TLS_DIR/broker.ext"
    openssl x509 -req -sha256 -days 7 -in "$TLS_DIR/broker.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
      -set_serial "0x$(openssl rand -hex 8)" -extfile "$TLS_DIR/broker.ext" -out "$TLS_DIR/broker-cert.pem"
  } >"$TLS_DIR/openssl.log" 2>&1 || { cat "$TLS_DIR/openssl.log" >&2; umask "$old_umask"; die "openssl failed"; }
  # Kafka's PEM key store: the unencrypted PKCS#8 key, then the certificate chain.
  cat "$TLS_DIR/broker.key" "$TLS_DIR/broker-cert.pem" "$TLS_DIR/ca.pem" >"$TLS_DIR/broker.pem"
  local admin_pw member_pw
  admin_pw="$(openssl rand -hex 16)"
  member_pw="$(openssl rand -hex 16)"
  cat >"$CLIENT_ENV" <<EOF
KBATCH_SECURE_BROKERS=$BOOTSTRAP
KBATCH_SECURE_CA=$TLS_DIR/ca.pem
KBATCH_SECURE_ADMIN_USER=admin
KBATCH_SECURE_ADMIN_PASSWORD=$admin_pw
KBATCH_SECURE_MEMBER_USER=member
KBATCH_SECURE_MEMBER_PASSWORD=$member_pw
KBATCH_SECURE_PREFIX_INPUT=$PREFIX_INPUT
KBATCH_SECURE_PREFIX_GROUP=$PREFIX_GROUP
KBATCH_SECURE_PREFIX_DLQ=$PREFIX_DLQ
KBATCH_SECURE_PREFIX_CHANGELOG=$PREFIX_CHANGELOG
EOF
  cat >"$ADMIN_PROPS" <<EOF
# Generated by scripts/kafka/kafka.sh: Kafka's command-line tools as the secured broker's admin,
# e.g. run-class org.apache.kafka.tools.AclCommand --bootstrap-server $BOOTSTRAP --command-config $ADMIN_PROPS --list
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
EOF
  umask "$old_umask"
  log "made a CA, the broker certificate and the users' passwords in $STATE_DIR in $(elapsed "$t0")"
}

write_secure_props() {
  local admin_pw member_pw
  admin_pw="$(env_value KBATCH_SECURE_ADMIN_PASSWORD)"
  member_pw="$(env_value KBATCH_SECURE_MEMBER_PASSWORD)"
  chmod 600 "$SERVER_PROPS"
  cat >>"$SERVER_PROPS" <<EOF

# Secured mode (kafka.sh --secure): these override the listener settings above (later keys win).
# Clients: SASL_SSL only. The controller listener stays PLAINTEXT on 127.0.0.1; the broker's
# requests to it come as User:ANONYMOUS, hence that principal in super.users.
listeners=SASL_SSL://${HOST}:${PORT},CONTROLLER://${HOST}:${CONTROLLER_PORT}
advertised.listeners=SASL_SSL://${HOST}:${PORT}
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
auto.create.topics.enable=false

ssl.keystore.type=PEM
ssl.keystore.location=${TLS_DIR}/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=${TLS_DIR}/ca.pem
ssl.client.auth=none

sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${admin_pw}";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${admin_pw}" user_admin="${admin_pw}" user_member="${member_pw}";

authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
EOF
}

# acl ARGS...: one AclCommand run as the admin, bounded in time.
acl() {
  timeout 120 "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$(classpath)" org.apache.kafka.tools.AclCommand \
    --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_PROPS" "$@"
}

# make_acls: the least-privilege user's prefixed ACLs, once per data dir.
make_acls() {
  [[ -f "$ACLS_DONE" ]] && return 0
  local t0 out
  t0="$(now)"
  local p=(--add --allow-principal User:member --resource-pattern-type prefixed)
  # Three tools in parallel: each is a JVM start.
  acl "${p[@]}" --operation Read --topic "$PREFIX_INPUT" --group "$PREFIX_GROUP" >"$LOG_DIR/acl-read.log" 2>&1 &
  local a=$!
  acl "${p[@]}" --operation Write --topic "$PREFIX_DLQ" >"$LOG_DIR/acl-dlq.log" 2>&1 &
  local b=$!
  acl "${p[@]}" --operation Read --operation Write --operation DescribeConfigs --topic "$PREFIX_CHANGELOG" \
    >"$LOG_DIR/acl-changelog.log" 2>&1 &
  local c=$! rc=0
  wait "$a" || rc=1
  wait "$b" || rc=1
  wait "$c" || rc=1
  if (( rc != 0 )); then
    cat "$LOG_DIR"/acl-*.log >&2
    return 1
  fi
  if ! out="$(acl --list --principal User:member 2>&1)"; then
    printf '%s\n' "$out" >&2
    return 1
  fi
  printf '%s\n' "$out" >"$LOG_DIR/acls.txt"
  touch "$ACLS_DONE"
  log "ACLs for User:member made in $(elapsed "$t0"):"
  grep -E 'ResourcePattern|principal' "$LOG_DIR/acls.txt" | sed 's/^/kafka.sh:   /' >&2 || true
}

print_client_settings() {
  cat >&2 <<EOF
kafka.sh: secured broker client settings (passwords in $CLIENT_ENV, mode 0600; or: $0 --secure env):
kafka.sh:   bootstrap  $BOOTSTRAP  (SASL_SSL; SCRAM-SHA-512, SCRAM-SHA-256, PLAIN)
kafka.sh:   CA         $TLS_DIR/ca.pem
kafka.sh:   users      admin (super user), member (least privilege: prefixed ACLs, listed in $LOG_DIR/acls.txt)
kafka.sh:   prefixes   input topics $PREFIX_INPUT  groups $PREFIX_GROUP  dead-letter $PREFIX_DLQ  changelogs $PREFIX_CHANGELOG
kafka.sh:   tools      run-class ... --bootstrap-server $BOOTSTRAP --command-config $ADMIN_PROPS
EOF
}

cmd_env() {
  [[ "$SECURE" == 1 ]] || die "env is for the secured broker: $0 --secure env"
  [[ -f "$CLIENT_ENV" ]] || die "no $CLIENT_ENV: start the secured broker first ($0 --secure up)"
  sed -e 's/^/export /' "$CLIENT_ENV"
}

# ---------------------------------------------------------------------------------------------
# commands
do_up() {
  local t0 pid
  t0="$(now)"
  resolve_jars
  build_probe
  if pid="$(running_pid)"; then
    echo "$pid" >"$PID_FILE"
    if probe -q -timeout 5s 2>/dev/null; then
      log "broker already running (pid $pid) and answering on $BOOTSTRAP; log: $SERVER_LOG"
      [[ "$SECURE" == 1 ]] && print_client_settings
      return 0
    fi
    log "broker pid $pid is running but not answering yet; waiting up to ${WAIT_SECS}s"
    if ! wait_ready "$pid" "$WAIT_SECS"; then
      show_log_tail 60
      die "broker pid $pid does not answer on $BOOTSTRAP; try: $0 down && $0 up"
    fi
    return 0
  fi
  rm -f "$PID_FILE"
  start_broker "${KBATCH_KAFKA_FRESH:-1}"
  log "up took $(elapsed "$t0")"
}

do_restart() {
  local t0
  t0="$(now)"
  resolve_jars
  build_probe
  stop_broker
  start_broker 0
  log "restart took $(elapsed "$t0")"
}

do_wipe() {
  if pid="$(running_pid)"; then
    die "broker is running (pid $pid): run '$0 down' first"
  fi
  rm -rf "$STATE_DIR"
  log "removed $STATE_DIR"
}

cmd_status() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "not running (state: $STATE_DIR)"
    return 1
  fi
  build_probe
  echo "running: pid $pid, bootstrap $BOOTSTRAP, Kafka $KAFKA_VERSION"
  echo "data: $DATA_DIR"
  echo "log:  $SERVER_LOG"
  if probe -timeout 3s; then
    return 0
  fi
  return 3
}

cmd_logs() {
  local follow=0 n=100
  while (( $# )); do
    case "$1" in
      -f|--follow) follow=1 ;;
      [0-9]*) n="$1" ;;
      *) die "logs: unknown argument '$1' (usage: logs [-f] [N])" ;;
    esac
    shift
  done
  [[ -f "$SERVER_LOG" ]] || die "no log yet at $SERVER_LOG"
  echo "== $SERVER_LOG" >&2
  if (( follow )); then
    exec tail -n "$n" -F "$SERVER_LOG"
  fi
  tail -n "$n" "$SERVER_LOG"
  if [[ -s "$CONSOLE_LOG" ]]; then
    echo "== $CONSOLE_LOG (JVM stdout/stderr)" >&2
    tail -n 20 "$CONSOLE_LOG"
  fi
}

cmd_run_class() {
  (( $# >= 1 )) || die "usage: $0 run-class <main class> [args...]"
  ensure_jars
  # shellcheck disable=SC2086  # KBATCH_KAFKA_TOOL_OPTS is a word list on purpose
  exec "$JAVA" ${KBATCH_KAFKA_TOOL_OPTS:--Xmx512m} -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
    -cp "$(classpath)" "$@"
}

cmd_ensure_kcat() {
  if command -v kcat >/dev/null 2>&1; then
    echo "kcat: $(command -v kcat) ($(kcat -V 2>/dev/null | grep -m1 '^Version' || true))"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "kcat is not installed and apt-get is not available"
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "kcat is not installed; need root (or sudo) to apt-get install it"
    sudo=(sudo -n)
  fi
  log "installing kcat with apt-get ..."
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends kcat >&2; then
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" apt-get install -y -q --no-install-recommends kcat >&2
  fi
  command -v kcat >/dev/null 2>&1 || die "apt-get finished but kcat is still not on PATH"
  echo "kcat: $(command -v kcat) ($(kcat -V 2>/dev/null | grep -m1 '^Version' || true))"
}

cmd_paths() {
  if [[ "$SECURE" == 1 ]]; then
    cat <<EOF
mode=secure
tls_dir=$TLS_DIR
ca=$TLS_DIR/ca.pem
client_env=$CLIENT_ENV
admin_client_properties=$ADMIN_PROPS
EOF
  fi
  cat <<EOF
kafka_version=$KAFKA_VERSION
bootstrap=$BOOTSTRAP
home=$KBATCH_KAFKA_HOME
libs=$LIBS_DIR
state=$STATE_DIR
data=$DATA_DIR
server_properties=$SERVER_PROPS
log=$SERVER_LOG
console_log=$CONSOLE_LOG
pid_file=$PID_FILE
probe=$PROBE_BIN
EOF
}

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

main() {
  local cmd="${1:-}"
  (( $# )) && shift
  case "$cmd" in
    up)          with_lock do_up ;;
    down|stop)   with_lock stop_broker ;;
    restart)     with_lock do_restart ;;
    status)      cmd_status ;;
    logs|log)    cmd_logs "$@" ;;
    classpath|cp) ensure_jars; classpath ;;
    run-class)   cmd_run_class "$@" ;;
    probe)       build_probe; probe "$@" ;;
    ensure-kcat) cmd_ensure_kcat ;;
    wipe)        with_lock do_wipe ;;
    paths)       cmd_paths ;;
    env)         cmd_env ;;
    -h|--help|help) usage ;;
    "")          usage >&2; exit 2 ;;
    *)           log "unknown command '$cmd'"; usage >&2; exit 2 ;;
  esac
}

main "$@"
