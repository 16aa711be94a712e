#!/usr/bin/env bash
# ci-ops.sh: checks of what kbatch ships for operating it, and of the module
# boundary that keeps an embedding service's go.mod small.
#
#   scripts/ci-ops.sh [static]     the static checks (what .ci/run calls):
#     - the testcontainers and deploy modules: go vet, go test;
#     - go mod tidy -diff in every module (root, bench, testcontainers, deploy, the PostgreSQL examples);
#     - a throwaway module that imports github.com/kbatch/kbatch/consumer has
#       no testcontainers, Docker or OpenTelemetry module in its go mod graph;
#     - the commands deploy/Dockerfile builds compile as it builds them;
#     - docker-compose -f docker-compose.yml config -q;
#     - promtool check config, check rules and test rules on deploy/prometheus;
#     - the Grafana dashboard parses, and every PromQL expression of it and of
#       the alert rules is extracted (deploy/promexprs) to $OUT/exprs.jsonl;
#       the dashboard's expressions go through promtool's parser too.
#   scripts/ci-ops.sh live [ADDR]  a real Prometheus server (the Debian
#     binary) on 127.0.0.1 scrapes the metrics endpoint ADDR (host:port,
#     path /metrics) every second and must return data for every dashboard
#     expression and every series the alert rules read; it reports each
#     one that has none and exits 1 if any. Without ADDR it first starts
#     examples/loadgen (on KAFKA_BROKERS, or on its own embedded kfake broker)
#     and examples/orders-etl -serve with its metrics on 127.0.0.1.
#
# docker-compose and promtool/prometheus come from the Debian packages
# docker-compose and prometheus, installed with apt-get when missing.
# Knobs: KBATCH_OPS_OUT (output directory, default a new temporary one),
# KBATCH_OPS_PROM_PORT (default 19090), KBATCH_OPS_METRICS_PORT (default
# 19100), KBATCH_OPS_SCRAPES (scrapes to wait for, default 15).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
OUT="${KBATCH_OPS_OUT:-$(mktemp -d -t kbatch-ops.XXXXXX)}"
mkdir -p "$OUT"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[ci-ops %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
step() { log "==== $*"; }

# need_tools CMD...: install the Debian packages that provide the missing
# commands (docker-compose: docker-compose; promtool, prometheus: prometheus;
# jq; curl).
need_tools() {
  local pkgs=() c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 && continue
    case "$c" in
      docker-compose) pkgs+=(docker-compose) ;;
      promtool | prometheus) pkgs+=(prometheus) ;;
      jq) pkgs+=(jq) ;;
      curl) pkgs+=(curl) ;;
      *) die "no package known for $c" ;;
    esac
  done
  ((${#pkgs[@]} == 0)) && return 0
  log "installing ${pkgs[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >"$OUT/apt.log" 2>&1 || { cat "$OUT/apt.log" >&2; die "apt-get update"; }
  timeout 600 apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$OUT/apt.log" 2>&1 ||
    { tail -30 "$OUT/apt.log" >&2; die "apt-get install ${pkgs[*]}"; }
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "$c still missing after installing ${pkgs[*]}"; done
}

# extract_exprs: every PromQL expression of the dashboards and the alert
# rules, one JSON object a line ({kind, source, expr, selectors}).
extract_exprs() {
  (cd deploy && go run ./promexprs) >"$OUT/exprs.jsonl"
  [[ -s "$OUT/exprs.jsonl" ]] || die "no expression extracted"
}

# check_module_graph: an embedding service must not download testcontainers,
# Docker or OpenTelemetry modules because it requires kbatch.
check_module_graph() {
  local mod="$OUT/embedder"
  rm -rf "$mod" && mkdir -p "$mod"
  cat >"$mod/go.mod" <<EOF
module example.com/embedder

go 1.26.0

require github.com/kbatch/kbatch v0.0.0-00010101000000-000000000000

replace github.com/kbatch/kbatch => $REPO_ROOT
EOF
  cat >"$mod/main.go" <<'EOF'
package main

import (
	"context"

	"github.com/kbatch/kbatch/consumer"
)

func main() {
	_, _ = consumer.New(consumer.Config{}, func(context.Context, *consumer.Batch) error { return nil })
}
EOF
  (cd "$mod" && timeout 300 go mod tidy && go build -o /dev/null . && go mod graph) >"$OUT/modgraph.txt" 2>&1 ||
    { cat "$OUT/modgraph.txt" >&2; die "building the throwaway module that imports kbatch/consumer"; }
  if grep -Ei 'testcontainers|docker|moby|opentelemetry' "$OUT/modgraph.txt" >&2; then
    die "the go mod graph of a module importing github.com/kbatch/kbatch/consumer has the modules above"
  fi
  log "go mod graph of an embedding module: $(wc -l <"$OUT/modgraph.txt") edges, no testcontainers, docker or otel module"
}

static() {
  need_tools docker-compose promtool jq

  step "testcontainers module: vet and unit tests (the container itself needs Docker)"
  go -C testcontainers vet ./...
  go -C testcontainers test -count=1 ./...

  step "deploy module: vet and tests of the dashboard, rules and compose files"
  go -C deploy vet ./...
  go -C deploy test -count=1 ./...

  step "go.mod files tidy, and the module graph of a service that embeds kbatch"
  local m
  for m in . bench testcontainers deploy examples/pg-sink examples/outbox-relay examples/rollup; do
    go -C "$m" mod tidy -diff || die "$m/go.mod is not tidy (go -C $m mod tidy)"
  done
  check_module_graph

  step "the commands deploy/Dockerfile builds"
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$OUT/bin/" ./examples/orders-etl ./examples/loadgen

  step "docker-compose config"
  docker-compose -f docker-compose.yml config -q

  step "promtool check config, check rules, test rules"
  promtool check config deploy/prometheus/prometheus.yml
  promtool check rules deploy/prometheus/alerts.yml
  promtool test rules deploy/prometheus/alerts_test.yml

  step "Grafana dashboard and PromQL expressions"
  local d
  for d in deploy/grafana/dashboards/*.json; do
    jq -e '.panels | length > 0' "$d" >/dev/null || die "$d does not parse or has no panel"
  done
  extract_exprs
  # promtool parses rule expressions: the dashboard's go through it as
  # recording rules.
  jq -rs '"groups:\n  - name: dashboard\n    rules:\n" +
      ([.[] | select(.kind == "dashboard")] | to_entries | map(
        "      - record: dashboard:expr_\(.key)\n        expr: \(.value.expr | tojson)\n") | join(""))' \
    "$OUT/exprs.jsonl" >"$OUT/dashboard-rules.yml"
  promtool check rules "$OUT/dashboard-rules.yml"
  log "$(jq -s '[.[] | select(.kind == "dashboard")] | length' "$OUT/exprs.jsonl") dashboard and $(jq -s '[.[] | select(.kind == "alert")] | length' "$OUT/exprs.jsonl") alert expressions in $OUT/exprs.jsonl"
  log "static checks passed"
}

# ---- live: a real Prometheus scraping a running example ----

STARTED_PIDS=()

# stop_pid PID NAME: SIGTERM, wait up to 20 s, then SIGKILL.
stop_pid() {
  local pid="$1" name="$2" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "WARNING: $name (pid $pid) did not stop within 20 s of SIGTERM; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup_live() {
  local i
  # Last started first: the service before the broker it talks to.
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${STARTED_PIDS[i]%%:*}" "${STARTED_PIDS[i]#*:}"
  done
}

# wait_for SECONDS WHAT CMD...: poll CMD every half second.
wait_for() {
  local secs="$1" what="$2" i
  shift 2
  for ((i = 0; i < secs * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "timed out after ${secs}s waiting for $what"
}

# query EXPR: an instant query; prints the JSON answer.
query() {
  curl -sS --max-time 10 "http://$PROM_ADDR/api/v1/query" --data-urlencode "query=$1"
}

# start_example: loadgen (on KAFKA_BROKERS or its own embedded broker) and
# orders-etl -serve with metrics on 127.0.0.1:$KBATCH_OPS_METRICS_PORT.
# Sets EXAMPLE_ADDR to the metrics address.
start_example() {
  local port="${KBATCH_OPS_METRICS_PORT:-19100}" brokers="${KAFKA_BROKERS:-}" stamp
  stamp="$(date +%H%M%S)"
  CGO_ENABLED=0 go build -o "$OUT/bin/" ./examples/orders-etl ./examples/loadgen >&2
  "$OUT/bin/loadgen" ${brokers:+-brokers "$brokers"} -topic "ops-orders-$stamp" -partitions 6 \
    -rate 400 -invalid-every 100 -report 5s >"$OUT/loadgen.log" 2>&1 &
  LOADGEN_PID="$!"
  STARTED_PIDS+=("$!:loadgen")
  if [[ -z "$brokers" ]]; then
    LOADGEN_OWNS_BROKER=1
    wait_for 60 "loadgen's embedded broker" grep -q '^loadgen: embedded kfake broker on ' "$OUT/loadgen.log"
    brokers="$(sed -n 's/^loadgen: embedded kfake broker on //p' "$OUT/loadgen.log")"
  fi
  wait_for 60 "loadgen to produce" grep -q '^loadgen: producing' "$OUT/loadgen.log"
  mkdir -p "$OUT/orders-etl"
  "$OUT/bin/orders-etl" -serve -brokers "$brokers" -topic "ops-orders-$stamp" -group "ops-orders-etl-$stamp" \
    -dir "$OUT/orders-etl" -metrics "127.0.0.1:$port" >"$OUT/orders-etl.log" 2>&1 &
  STARTED_PIDS+=("$!:orders-etl")
  wait_for 60 "orders-etl's metrics on 127.0.0.1:$port" curl -sf --max-time 2 "http://127.0.0.1:$port/metrics"
  wait_for 60 "orders-etl to be ready (/readyz)" curl -sf --max-time 2 "http://127.0.0.1:$port/readyz"
  log "orders-etl serves metrics on 127.0.0.1:$port (brokers $brokers; logs in $OUT)"
  EXAMPLE_ADDR="127.0.0.1:$port"
}

# check_live_metrics ADDR: start Prometheus on 127.0.0.1 scraping ADDR and
# check every expression of the dashboard and the alert rules has data.
check_live_metrics() {
  local target="$1" port="${KBATCH_OPS_PROM_PORT:-19090}" scrapes="${KBATCH_OPS_SCRAPES:-15}"
  local dir="$OUT/prometheus" missing=0 nodata=0 line expr src sel n
  PROM_ADDR="127.0.0.1:$port"
  need_tools prometheus promtool
  if curl -s --max-time 2 "http://$PROM_ADDR/" >/dev/null 2>&1; then
    die "something already listens on $PROM_ADDR; set KBATCH_OPS_PROM_PORT"
  fi
  [[ -s "$OUT/exprs.jsonl" ]] || extract_exprs

  rm -rf "$dir" && mkdir -p "$dir/data"
  cp deploy/prometheus/alerts.yml "$dir/alerts.yml"
  # The job name is the one the rules and the dashboard select on.
  cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: kbatch
    static_configs:
      - targets: ["$target"]
EOF
  promtool check config "$dir/prometheus.yml" >/dev/null
  prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="$PROM_ADDR" --log.level=warn >"$dir/prometheus.log" 2>&1 &
  STARTED_PIDS+=("$!:prometheus")
  wait_for 60 "Prometheus on $PROM_ADDR to be ready" curl -sf --max-time 2 "http://$PROM_ADDR/-/ready"
  log "Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') on $PROM_ADDR scrapes $target every second; waiting for $scrapes scrapes"
  scraped() {
    query "count_over_time(up{job=\"kbatch\"}[5m])" |
      jq -e --argjson n "$scrapes" '.data.result[0].value[1] | tonumber >= $n' >/dev/null
  }
  wait_for $((scrapes * 3 + 30)) "$scrapes scrapes of $target" scraped
  query 'up{job="kbatch"}' | jq -e '.data.result[0].value[1] == "1"' >/dev/null ||
    die "$target is not up in Prometheus (see $dir/prometheus.log and http://$PROM_ADDR/targets)"

  # Every series an expression reads must exist...
  while IFS= read -r sel; do
    n="$(query "count($sel)" | jq -r '.data.result[0].value[1] // "0"')"
    if [[ "$n" == "0" ]]; then
      log "missing series: $sel"
      missing=$((missing + 1))
    fi
  done < <(jq -r '.selectors[]' "$OUT/exprs.jsonl" | sort -u)
  # ... and every dashboard expression must return data. (An alert's
  # expression returns nothing while it does not fire: its series are
  # checked above, and its evaluation below.)
  while IFS= read -r line; do
    expr="$(jq -r '.expr' <<<"$line")"
    src="$(jq -r '.source' <<<"$line")"
    if ! query "$expr" | jq -e '.status == "success" and (.data.result | length > 0)' >/dev/null; then
      log "no data: $src: $expr"
      nodata=$((nodata + 1))
    fi
  done < <(jq -c 'select(.kind == "dashboard")' "$OUT/exprs.jsonl")
  # Every alert rule was loaded and evaluates without error.
  curl -sS --max-time 10 "http://$PROM_ADDR/api/v1/rules" >"$dir/rules.json"
  local loaded bad
  loaded="$(jq '[.data.groups[].rules[]] | length' "$dir/rules.json")"
  bad="$(jq -r '.data.groups[].rules[] | select(.health != "ok") | "\(.name): \(.health) \(.lastError // "")"' "$dir/rules.json")"
  [[ -n "$bad" ]] && log "rules that do not evaluate: $bad"
  [[ "$loaded" -eq "$(jq -s '[.[] | select(.kind == "alert")] | length' "$OUT/exprs.jsonl")" ]] ||
    { log "Prometheus loaded $loaded rules, alerts.yml has more"; bad="${bad}x"; }

  local total
  total="$(jq -s 'length' "$OUT/exprs.jsonl")"
  if ((missing > 0 || nodata > 0)) || [[ -n "$bad" ]]; then
    die "live metrics: $missing series missing, $nodata of $(jq -s '[.[] | select(.kind == "dashboard")] | length' "$OUT/exprs.jsonl") dashboard expressions without data ($total expressions in all; Prometheus data in $dir)"
  fi
  log "live metrics: every series and every dashboard expression has data ($total expressions), $loaded alert rules evaluate"
}

# check_lag_falls: once the load generator stops, the consumer catches up and
# Prometheus must see its lag fall to 0 on every partition it reports.
check_lag_falls() {
  local peak
  peak="$(query 'max(max_over_time(kbatch_partition_lag_records{job="kbatch"}[5m]))' | jq -r '.data.result[0].value[1] // "none"')"
  [[ "$peak" != "none" ]] || die "no kbatch_partition_lag_records series to watch"
  log "highest lag seen while loadgen ran: $peak records; stopping loadgen"
  stop_pid "$LOADGEN_PID" loadgen
  lag_zero() {
    query 'count(kbatch_partition_lag_records{job="kbatch"} > 0) or vector(0)' | jq -e '.data.result[0].value[1] == "0"' >/dev/null &&
      query 'count(kbatch_partition_lag_records{job="kbatch"})' | jq -e '(.data.result[0].value[1] // "0" | tonumber) > 0' >/dev/null
  }
  wait_for 60 "kbatch_partition_lag_records to fall to 0 on every partition" lag_zero
  log "lag fell to 0 on every partition once loadgen stopped"
}

live() {
  need_tools prometheus promtool jq curl
  trap cleanup_live EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local addr="${1:-}"
  if [[ -z "$addr" ]]; then
    start_example # not in $(...): its processes must be stopped by this shell
    addr="$EXAMPLE_ADDR"
  fi
  check_live_metrics "$addr"
  if [[ -n "${LOADGEN_PID:-}" && -z "${LOADGEN_OWNS_BROKER:-}" ]]; then
    check_lag_falls
  elif [[ -n "${LOADGEN_PID:-}" ]]; then
    log "lag check skipped: the broker lives in loadgen (set KAFKA_BROKERS to run it)"
  fi
}

case "${1:-static}" in
  static) static ;;
  live) shift; live "$@" ;;
  *) echo "usage: $0 [static | live [host:port]]" >&2; exit 2 ;;
esac
