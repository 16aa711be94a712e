#!/usr/bin/env bash
# Runs Confluent Parallel Consumer (a Java peer of kbatch's ordering modes)
# through PCBench.java, for the bench's ordering suite. The jars come from
# Maven Central (pom.xml, resolved once with mvn into the cache directory);
# PCBench.java is compiled with javac once per change.
#
#   pc.sh version             prints the driver's version line (resolves and compiles first)
#   pc.sh run ARGS...         runs PCBench with ARGS (see PCBench.java)
#
# Environment:
#   KBATCH_PC_CACHE      cache directory (default ~/.cache/kbatch-parallel-consumer)
#   KBATCH_PC_MVN_ARGS   extra mvn arguments (e.g. -o)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
CACHE="${KBATCH_PC_CACHE:-$HOME/.cache/kbatch-parallel-consumer}"
LIBS="$CACHE/libs"
CLASSES="$CACHE/classes"

die() { echo "pc.sh: $*" >&2; exit 1; }

resolve() {
  local stamp want
  want=$(sha256sum "$SCRIPT_DIR/pom.xml" | cut -d' ' -f1)
  stamp="$LIBS/.pom.sha256"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH (needed once to fetch the jars)"
  local tmp log
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/libs.XXXXXX")
  log="$tmp.log"
  if ! timeout 600 mvn -B -q -Dstyle.color=never ${KBATCH_PC_MVN_ARGS:-} -f "$SCRIPT_DIR/pom.xml" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
    cat "$log" >&2
    rm -rf "$tmp" "$log"
    die "mvn dependency:copy-dependencies failed (see above)"
  fi
  rm -f "$log"
  ls "$tmp"/parallel-consumer-core-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "mvn did not produce parallel-consumer-core"; }
  echo "$want" >"$tmp/.pom.sha256"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
}

compile() {
  local want stamp
  want=$(cat "$SCRIPT_DIR/PCBench.java" "$LIBS/.pom.sha256" | sha256sum | cut -d' ' -f1)
  stamp="$CLASSES/.src.sha256"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  command -v javac >/dev/null 2>&1 || die "javac not found on PATH"
  rm -rf "$CLASSES"
  mkdir -p "$CLASSES"
  javac -nowarn -d "$CLASSES" -cp "$LIBS/*" "$SCRIPT_DIR/PCBench.java"
  echo "$want" >"$stamp"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  version|run)
    command -v java >/dev/null 2>&1 || die "java not found on PATH"
    resolve
    compile
    if [[ "$cmd" == version ]]; then
      exec java -cp "$CLASSES:$LIBS/*" PCBench --version
    fi
    exec java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$CLASSES:$LIBS/*" PCBench "$@"
    ;;
  *)
    die "usage: pc.sh version | run ARGS..."
    ;;
esac
