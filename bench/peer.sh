#!/usr/bin/env bash
# The benchmark's peer: the official MongoDB Kafka sink connector in Kafka Connect
# standalone, sinking an invite topic into one collection of the same server the worker
# used. Called by scripts/bench.sh; prints ONE JSON object on stdout:
#   {"attempted":true,"ok":true,"throughput_per_s":...,"rss_peak_kib":...,"cpu_s":...,...}
#   {"attempted":true,"ok":false,"reason":"..."}   when it cannot run (the reason is precise:
#                                                  the connector's own error, not a guess)
# Usage: bench/peer.sh OUT_DIR BROKERS MONGO_BASE_URI DATABASE TOPIC COUNT SMALL(0|1)
#
# Connector settings: JsonConverter without schemas (the events are plain JSON), _id = the
# event's eventId (PartialValueStrategy), ReplaceOneDefaultStrategy (an upsert by _id, so a
# redelivery rewrites the same document: idempotent like the worker), tasks.max = the
# topic's partitions (4). Heap as connect-standalone.sh: -Xms256M -Xmx2G
# (WW_BENCH_CONNECT_HEAP). Throughput = documents that arrived after the first one was
# seen / time from then to the last (polling the collection's count every 50 ms), so JVM
# start-up and the group join are excluded, as the worker's start-up is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT=$1 BROKERS=$2 MONGO_BASE=$3 DB=$4 TOPIC=$5 COUNT=$6 SMALL=${7:-0}
WWBENCH="$ROOT/build/wwbench"
MKC_VERSION="${MKC_VERSION:-2.0.1}"
KAFKA_VERSION="${KAFKA_VERSION:-3.9.2}"
HEAP="${WW_BENCH_CONNECT_HEAP:--Xms256M -Xmx2G}"
TIMEOUT=$((SMALL ? 120 : 600))
D="$OUT/connect"
mkdir -p "$D"
NAME="wwbench-sink-$(basename "$OUT")"
PID=""
AW=""

log() { printf '[peer] %s\n' "$*" >&2; }
result_fail() { # result_fail <reason>
  log "peer did not run: $1"
  jq -nc --arg r "$1" --arg v "$MKC_VERSION" --arg k "$KAFKA_VERSION" \
    '{attempted: true, ok: false, reason: $r, connector: ("mongo-kafka-connect " + $v), connect: ("Kafka Connect standalone " + $k)}'
  exit 0
}
cleanup() {
  [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null && { kill -TERM "$PID" 2>/dev/null || true;
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done;
    kill -KILL "$PID" 2>/dev/null || true; }
  [[ -n "$AW" ]] && kill -0 "$AW" 2>/dev/null && kill -TERM "$AW" 2>/dev/null || true
  return 0
}
trap cleanup EXIT

LIBS=$("$HERE/connect-resolve.sh" 2>"$D/resolve.log") || result_fail "resolving the connector from Maven Central failed: $(tail -n 3 "$D/resolve.log" | tr '\n' ' ')"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
REST=$((18500 + RANDOM % 500)); while port_busy "$REST"; do REST=$((REST + 1)); done

cat >"$D/worker.properties" <<P
bootstrap.servers=$BROKERS
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
offset.storage.file.filename=$D/connect.offsets
offset.flush.interval.ms=10000
listeners=http://127.0.0.1:$REST
P
cat >"$D/sink.properties" <<P
name=$NAME
connector.class=com.mongodb.kafka.connect.MongoSinkConnector
tasks.max=4
topics=$TOPIC
connection.uri=$MONGO_BASE
database=$DB
collection=invite_events
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=false
document.id.strategy=com.mongodb.kafka.connect.sink.processor.id.strategy.PartialValueStrategy
document.id.strategy.partial.value.projection.type=AllowList
document.id.strategy.partial.value.projection.list=eventId
writemodel.strategy=com.mongodb.kafka.connect.sink.writemodel.strategy.ReplaceOneDefaultStrategy
P
cat >"$D/log4j.properties" <<'P'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.org.reflections=ERROR
P

# count the sink's collection; {"ready":true} first, the figures at the end
exec {FD}< <("$WWBENCH" await-docs --mongodb-uri "$MONGO_BASE/$DB" --topic invite_events \
  --count "$COUNT" --series "$OUT/peer-series.tsv" --bucket-ms $((SMALL ? 100 : 500)) \
  --idle-timeout-s 60 2>>"$D/await.log"; echo "rc=$?")
read -r -t 60 line <&"$FD" || true
[[ "$line" == '{"ready":true}' ]] || result_fail "cannot count documents on $MONGO_BASE/$DB: $(tail -n 2 "$D/await.log" | tr '\n' ' ')"

log "starting Kafka Connect standalone $KAFKA_VERSION + mongo-kafka-connect $MKC_VERSION (REST 127.0.0.1:$REST)"
# shellcheck disable=SC2086
java $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
  -Dlog4j.configuration="file:$D/log4j.properties" -cp "$LIBS/*" \
  org.apache.kafka.connect.cli.ConnectStandalone "$D/worker.properties" "$D/sink.properties" \
  >"$D/connect.log" 2>&1 &
PID=$!

failure_reason() { # the connector's own words: task/connector trace, else the log's first ERROR
  local st trace
  st=$(curl -s -m 2 "http://127.0.0.1:$REST/connectors/$NAME/status" 2>/dev/null || true)
  trace=$(jq -r '[.connector, (.tasks // [])[]] | map(select(.state == "FAILED") | .trace) | first // empty' <<<"$st" 2>/dev/null || true)
  if [[ -n "$trace" ]]; then
    # the exception line and the deepest "Caused by" carry the reason
    { head -n 1 <<<"$trace"; grep -E '^Caused by' <<<"$trace" | tail -n 2; } | cut -c1-400 | paste -sd ' ' -
    return
  fi
  grep -m 3 -E ' ERROR |Exception' "$D/connect.log" | cut -c1-400 | paste -sd ' ' -
}

OUTJ="" RC="" t0=$SECONDS
while :; do
  if read -r -t 1 line <&"$FD"; then
    case "$line" in rc=*) RC=${line#rc=}; break ;; *) OUTJ=$line ;; esac
    continue
  fi
  if ! kill -0 "$PID" 2>/dev/null; then
    wait "$PID" 2>/dev/null || true
    PID=""
    result_fail "Kafka Connect exited: $(failure_reason)"
  fi
  st=$(curl -s -m 2 "http://127.0.0.1:$REST/connectors/$NAME/status" 2>/dev/null || true)
  if grep -q '"state":"FAILED"' <<<"$st"; then
    result_fail "the sink connector failed: $(failure_reason)"
  fi
  ((SECONDS - t0 < TIMEOUT)) || result_fail "no complete sink within ${TIMEOUT}s ($(jq -r '.done // 0' <<<"$OUTJ" 2>/dev/null || echo '?') documents); $(failure_reason)"
done
CPU=$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$PID/stat" 2>/dev/null || echo -1)
HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status" 2>/dev/null || echo -1)
[[ "$RC" == 0 ]] || result_fail "the sink wrote $(jq -r '.done // 0' <<<"$OUTJ" 2>/dev/null) of $COUNT documents; $(failure_reason)"
jq -c --argjson cpu "$CPU" --argjson hwm "${HWM:--1}" --arg v "$MKC_VERSION" --arg k "$KAFKA_VERSION" --arg heap "$HEAP" \
  '. + {attempted: true, ok: true, cpu_s: $cpu, rss_peak_kib: $hwm, heap: $heap,
        connector: ("mongo-kafka-connect " + $v), connect: ("Kafka Connect standalone " + $k)}' <<<"$OUTJ"
