#!/usr/bin/env bash
# Local server stack for wallet-worker tests: a single-node KRaft Kafka broker and a
# MongoDB-compatible server (FerretDB with SQLite storage, or mongo-java-server with its H2
# file backend, optionally its in-memory backend).
#
# Usage: scripts/stack.sh up|down [--purge]|status|env|kafka-start|kafka-stop|mongo-start|mongo-stop
#
#   up           start whatever is not running (runs scripts/bootstrap.sh if the cached servers
#                are missing), wait until both really answer, create the topics. Idempotent.
#                A running server whose settings (MONGO_IMPL, ports) differ is restarted.
#   down         stop exactly the processes this stack dir started (TERM, then KILL).
#                --purge (or WW_PURGE=1) also deletes the stack dir (all data, including the
#                FerretDB SQLite files and the mongo-java-server H2 file).
#   status       one line per server; exit 1 if one is not running.
#   env          export lines for: eval "$(scripts/stack.sh env)"
#   kafka-stop|kafka-start|mongo-stop|mongo-start   one server only; data is kept
#                (FerretDB: SQLite files in $WW_STACK_DIR/mongo/ferretdb-data; mongo-java-server:
#                H2 MVStore file $WW_STACK_DIR/mongo/mongo-java-server.mv, closed cleanly on TERM.
#                Only MONGO_JAVA_BACKEND=memory loses its data whenever it stops).
#
# Environment (all optional):
#   WW_STACK_DIR           state + logs (default: <repo>/.stack); one dir = one independent stack
#   KAFKA_PORT             broker port (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default 9093)
#   MONGO_PORT             MongoDB wire-protocol port (default 27017)
#   KAFKA_SASL_SSL_PORT    the broker's second listener, SASL_SSL (default KAFKA_PORT+2)
#   MONGO_TLS_PORT         FerretDB's TLS listener (default MONGO_PORT+1; FerretDB only:
#                          mongo-java-server has no TLS)
#   MONGO_AUTH_PORT        a second, small FerretDB that checks credentials (default
#                          MONGO_PORT+2), started whatever MONGO_IMPL is
#   MONGO_IMPL             ferretdb (default) | mongo-java-server. When unset, the implementation
#                          last started in this stack dir is kept.
#   MONGO_JAVA_BACKEND     h2 (default, persistent) | memory: mongo-java-server backend. When
#                          unset, the backend last used in this stack dir is kept.
#   WW_CACHE               bootstrap cache (default: $HOME/.cache/wallet-worker)
#   WW_START_TIMEOUT       seconds to wait for a server to answer (default 90)
#   WW_STOP_TIMEOUT        seconds between TERM and KILL (default 30)
#   KAFKA_HEAP_OPTS        broker heap (default "-Xms256m -Xmx512m")
# Unset port variables fall back to the values recorded by the last `up` in this stack dir.
#
# Secure transports (always on; see docs/testing.md): at the first start a private CA, a server
# certificate for 127.0.0.1/localhost signed by it, and a second, unrelated CA (for "untrusted
# CA" tests) are generated with openssl in $WW_STACK_DIR/tls/, plus random passwords. The broker
# then also listens on KAFKA_SASL_SSL_PORT with SASL_SSL (SCRAM-SHA-512 user "wallet", created
# with kafka-configs, and PLAIN user "wallet-plain"); FerretDB also listens with TLS on
# MONGO_TLS_PORT. Neither FerretDB's default mode nor mongo-java-server checks credentials, so a
# second FerretDB ("mongoauth", --test-enable-new-auth, user "wallet" created at its first start)
# listens on MONGO_AUTH_PORT for wrong-credential tests. `env` exports everything a client needs
# (WW_TLS_CA, KAFKA_SASL_SSL_BROKERS, KAFKA_SCRAM_*, KAFKA_PLAIN_*, MONGODB_TLS_URI, MONGO_AUTH_*).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
WW_CACHE="${WW_CACHE:-$HOME/.cache/wallet-worker}"
# Keep in sync with scripts/bootstrap.sh.
KAFKA_VERSION="${KAFKA_VERSION:-3.9.2}"
FERRETDB_VERSION="${FERRETDB_VERSION:-v1.24.2}"
MJS_VERSION="${MJS_VERSION:-1.47.0}"

STACK="$(realpath -m "${WW_STACK_DIR:-$REPO/.stack}")"

KAFKA_LIBS="$WW_CACHE/kafka-$KAFKA_VERSION/libs"
FERRETDB_BIN="$WW_CACHE/bin/ferretdb"
MJS_DIR="$WW_CACHE/mongo-java-server-$MJS_VERSION"
# The launcher compiled from this checkout's source (bootstrap.sh names the folder the same way).
MJS_CLASSES="$MJS_DIR/classes-$(sha256sum "$SCRIPT_DIR/MongoJavaServerLauncher.java" 2>/dev/null | cut -c1-16 || true)"
PING="$SCRIPT_DIR/mongo_ping.py"
START_TIMEOUT="${WW_START_TIMEOUT:-90}"
STOP_TIMEOUT="${WW_STOP_TIMEOUT:-30}"

TOPICS=(
  "wallet.commands:4" "wallet.results:4" "wallet.commands.dlq:1"
  "invite.events:4" "invite.results:4" "invite.events.dlq:1"
)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ settings
# Explicit env > recorded by the last `up` in this stack dir > default.
recorded() { # recorded <key>
  [[ -f "$STACK/settings" ]] || return 0
  sed -n "s/^$1=//p" "$STACK/settings" | tail -n 1
}
REQ_MONGO_IMPL="${MONGO_IMPL:-}"
KAFKA_PORT="${KAFKA_PORT:-$(recorded KAFKA_PORT)}"; KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$(recorded KAFKA_CONTROLLER_PORT)}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
MONGO_PORT="${MONGO_PORT:-$(recorded MONGO_PORT)}"; MONGO_PORT="${MONGO_PORT:-27017}"
MONGO_IMPL="${MONGO_IMPL:-$(recorded MONGO_IMPL)}"; MONGO_IMPL="${MONGO_IMPL:-ferretdb}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-$(recorded KAFKA_SASL_SSL_PORT)}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-$((KAFKA_PORT + 2))}"
MONGO_TLS_PORT="${MONGO_TLS_PORT:-$(recorded MONGO_TLS_PORT)}"
MONGO_TLS_PORT="${MONGO_TLS_PORT:-$((MONGO_PORT + 1))}"
MONGO_AUTH_PORT="${MONGO_AUTH_PORT:-$(recorded MONGO_AUTH_PORT)}"
MONGO_AUTH_PORT="${MONGO_AUTH_PORT:-$((MONGO_PORT + 2))}"
case "$MONGO_IMPL" in
  ferretdb | mongo-java-server) ;;
  *) die "MONGO_IMPL must be ferretdb or mongo-java-server (got '$MONGO_IMPL')" ;;
esac
MONGO_JAVA_BACKEND="${MONGO_JAVA_BACKEND:-$(recorded MONGO_JAVA_BACKEND)}"
MONGO_JAVA_BACKEND="${MONGO_JAVA_BACKEND:-h2}"
case "$MONGO_JAVA_BACKEND" in
  h2 | memory) ;;
  *) die "MONGO_JAVA_BACKEND must be h2 or memory (got '$MONGO_JAVA_BACKEND')" ;;
esac

save_settings() {
  mkdir -p "$STACK"
  cat >"$STACK/settings.tmp" <<EOF
KAFKA_PORT=$KAFKA_PORT
KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT
MONGO_PORT=$MONGO_PORT
KAFKA_SASL_SSL_PORT=$KAFKA_SASL_SSL_PORT
MONGO_TLS_PORT=$MONGO_TLS_PORT
MONGO_AUTH_PORT=$MONGO_AUTH_PORT
MONGO_IMPL=$MONGO_IMPL
MONGO_JAVA_BACKEND=$MONGO_JAVA_BACKEND
EOF
  mv "$STACK/settings.tmp" "$STACK/settings"
}

# ----------------------------------------------------------------- processes
# Each server: $STACK/<name>.pid (pid) and $STACK/<name>.sig (settings it was started with).
# A pid counts as ours only if it is alive AND its command line contains a marker that is
# unique to this stack dir (so a recycled pid is never mistaken for our server).
marker() {
  case "$1" in
    kafka) echo "$STACK/kafka/server.properties" ;;
    mongo) echo "$STACK/mongo/" ;;
    mongoauth) echo "$STACK/mongoauth/" ;;
  esac
}

pid_of() { # prints pid if alive and ours, else nothing
  local name=$1 pid cmd
  [[ -f "$STACK/$name.pid" ]] || return 0
  pid=$(<"$STACK/$name.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  [[ "$cmd" == *"$(marker "$name")"* ]] || return 0
  echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_port_free() { # check_port_free <port> <what>
  if port_busy "$1"; then
    ss -ltnp 2>/dev/null | grep -E "[:.]$1\b" >&2 || true
    die "port $1 ($2) is already in use by another process (see above); choose another port"
  fi
}

# launch <name> <logfile> <cmd...>: start detached (own session), record pid.
launch() {
  local name=$1 logf=$2; shift 2
  rm -f "$STACK/$name.pid"
  : >>"$logf"
  printf '\n===== %s start %s =====\n' "$name" "$(date -Is)" >>"$logf"
  # setsid -f forks, so record the pid from inside the child just before exec. The server
  # gets none of our descriptors above 2: one it kept would outlive stack.sh (a caller's
  # `flock LOCK scripts/stack.sh up` lock would stay held for as long as the server runs).
  setsid -f bash -c 'for fd in /proc/$$/fd/*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-"; done
    echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' \
    "$STACK/$name.pid" "$@" </dev/null >>"$logf" 2>&1
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$STACK/$name.pid" ]] && return 0
    sleep 0.1
  done
  die "$name did not start (no pid file); log: $logf"
}

stop_proc() { # stop_proc <name>
  local name=$1 pid i
  pid=$(pid_of "$name")
  if [[ -z "$pid" ]]; then
    rm -f "$STACK/$name.pid" "$STACK/$name.sig"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    [[ -d "/proc/$pid" ]] || break
    # a zombie is gone for our purposes
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && break
    sleep 0.1
  done
  if [[ -d "/proc/$pid" && -n "$(pid_of "$name")" ]]; then
    log "$name (pid $pid) ignored TERM for ${STOP_TIMEOUT}s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do [[ -d "/proc/$pid" ]] || break; sleep 0.1; done
  fi
  rm -f "$STACK/$name.pid" "$STACK/$name.sig"
}

fail_with_log() { # fail_with_log <what> <logfile>
  printf '[stack] ---- last 40 lines of %s ----\n' "$2" >&2
  tail -n 40 "$2" >&2 || true
  printf '[stack] ----\n' >&2
  die "$1"
}

# ----------------------------------------------------------------- bootstrap
ensure_bootstrap() {
  local need=0
  [[ -f "$WW_CACHE/kafka-$KAFKA_VERSION/.complete" ]] || need=1
  [[ -x "$FERRETDB_BIN" ]] || need=1
  [[ -f "$MJS_DIR/.complete" && -f "$MJS_CLASSES/MongoJavaServerLauncher.class" ]] || need=1
  # caches made before the H2 backend was added lack its jar; bootstrap.sh re-resolves them
  [[ -f "$MJS_DIR/libs/mongo-java-server-h2-backend-$MJS_VERSION.jar" ]] || need=1
  if ((need)); then
    log "cached servers missing: running scripts/bootstrap.sh"
    WW_CACHE="$WW_CACHE" KAFKA_VERSION="$KAFKA_VERSION" FERRETDB_VERSION="$FERRETDB_VERSION" \
      MJS_VERSION="$MJS_VERSION" "$SCRIPT_DIR/bootstrap.sh" >&2
  fi
}

# ----------------------------------------------------------------------- tls
# Generated once per stack dir (kept across restarts, removed by down --purge).
TLS="$STACK/tls"
SCRAM_USER=wallet
PLAIN_USER=wallet-plain

tls_ensure() {
  local pw
  mkdir -p "$TLS"
  chmod 700 "$TLS"
  for pw in scram plain mongo; do # each made once: running servers may hold the others
    [[ -s "$TLS/$pw.password" ]] || (umask 077 && openssl rand -hex 16 >"$TLS/$pw.password")
  done
  [[ -s "$TLS/server.p12" && -s "$TLS/untrusted-ca.pem" ]] && return 0
  command -v openssl >/dev/null || die "openssl is needed to generate the stack's certificates"
  log "tls: generating a private CA and a server certificate in $TLS"
  (
    set -e
    cd "$TLS"
    local gen=(openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650)
    "${gen[@]}" -keyout ca.key -out ca.pem -subj "/CN=wallet-worker test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    "${gen[@]}" -keyout untrusted-ca.key -out untrusted-ca.pem -subj "/CN=some other CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr \
      -subj "/CN=localhost"
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" \
      "basicConstraints=CA:FALSE" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -sha256 -extfile server.ext -out server.pem
    openssl rand -hex 16 >keystore.password
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name broker \
      -passout "file:keystore.password" -out server.p12
    rm -f server.csr server.ext ca.srl
    chmod 600 ./*.key ./*.password
  ) >"$STACK/tls.log" 2>&1 || fail_with_log "tls: certificate generation failed" "$STACK/tls.log"
}

# --------------------------------------------------------------------- kafka
kafka_sig() {
  echo "kafka $KAFKA_VERSION port=$KAFKA_PORT controller=$KAFKA_CONTROLLER_PORT sasl_ssl=$KAFKA_SASL_SSL_PORT"
}

kafka_java() { # kafka_java <heap> <main> <args...>  (foreground tool run)
  local heap=$1; shift
  java $heap -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Dlog4j.configuration="file:$STACK/kafka/tools-log4j.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

kafka_write_config() {
  local d="$STACK/kafka"
  mkdir -p "$d/data"
  cat >"$d/server.properties" <<EOF
# generated by scripts/stack.sh - overwritten on every start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
# second listener: SASL (SCRAM-SHA-512, PLAIN) over TLS, certificate from $TLS
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$PLAIN_USER="$(<"$TLS/plain.password")";
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$(<"$TLS/keystore.password")
listener.name.sasl_ssl.ssl.key.password=$(<"$TLS/keystore.password")
log.dirs=$d/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
EOF
  cat >"$d/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.controller=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.log=WARN
EOF
  cat >"$d/tools-log4j.properties" <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

# (The metadata is read whole before it is matched: `kcat | grep -q` under pipefail fails
# whenever grep stops first and kcat dies writing the rest.)
kafka_ready() {
  local md
  md=$(kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 3 2>/dev/null) || return 1
  [[ "$md" == *"broker 1 at 127.0.0.1:$KAFKA_PORT"* ]]
}

# The SASL_SSL listener answers metadata for the SCRAM user, verified with the stack's CA.
kafka_secure_ready() {
  local md
  md=$(kcat -b "127.0.0.1:$KAFKA_SASL_SSL_PORT" -X security.protocol=SASL_SSL \
    -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username="$SCRAM_USER" \
    -X sasl.password="$(<"$TLS/scram.password")" -X ssl.ca.location="$TLS/ca.pem" \
    -L -m 5 2>/dev/null) || return 1
  [[ "$md" == *"broker 1 at 127.0.0.1:$KAFKA_SASL_SSL_PORT"* ]]
}

# SCRAM credentials live in the cluster metadata: set them (through the PLAINTEXT listener)
# once per data dir, then wait until the SASL_SSL listener accepts them.
kafka_ensure_scram() {
  local d="$STACK/kafka" mark="$STACK/kafka/data/.ww-scram-$SCRAM_USER" i
  if [[ ! -f "$mark" ]] || ! cmp -s "$mark" "$TLS/scram.password"; then
    log "kafka: creating SCRAM-SHA-512 user $SCRAM_USER"
    kafka_java "-Xmx128m" kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
      --alter --entity-type users --entity-name "$SCRAM_USER" \
      --add-config "SCRAM-SHA-512=[iterations=4096,password=$(<"$TLS/scram.password")]" \
      >>"$d/scram.log" 2>&1 || fail_with_log "kafka: creating the SCRAM user failed" "$d/scram.log"
    cp "$TLS/scram.password" "$mark"
  fi
  for ((i = 0; i < 60; i++)); do
    kafka_secure_ready && { log "kafka: SASL_SSL listener ok on 127.0.0.1:$KAFKA_SASL_SSL_PORT"; return 0; }
    sleep 0.5
  done
  fail_with_log "kafka: SASL_SSL listener on 127.0.0.1:$KAFKA_SASL_SSL_PORT refuses the SCRAM user" "$d/kafka.log"
}

kafka_ensure_topics() {
  local have missing=() t name parts pids=() p rc=0
  have=$(kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 5 2>/dev/null) || die "kcat -L failed on port $KAFKA_PORT"
  for t in "${TOPICS[@]}"; do
    name=${t%%:*}
    grep -q "topic \"$name\" with" <<<"$have" || missing+=("$t")
  done
  if ((${#missing[@]})); then
    log "kafka: creating topics ${missing[*]}"
    for t in "${missing[@]}"; do
      name=${t%%:*}; parts=${t##*:}
      kafka_java "-Xmx128m" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --create --if-not-exists \
        --topic "$name" --partitions "$parts" --replication-factor 1 \
        >>"$STACK/kafka/topics.log" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    ((rc == 0)) || fail_with_log "kafka: topic creation failed" "$STACK/kafka/topics.log"
  fi
  # verify partition counts
  local i ok
  for ((i = 0; i < 50; i++)); do
    have=$(kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 5 2>/dev/null || true)
    ok=1
    for t in "${TOPICS[@]}"; do
      name=${t%%:*}; parts=${t##*:}
      grep -q "topic \"$name\" with $parts partitions" <<<"$have" || { ok=0; break; }
    done
    ((ok)) && break
    sleep 0.2
  done
  ((ok)) || die "kafka: topic $name does not have $parts partitions: $(grep "\"$name\"" <<<"$have" || echo missing)"
  log "kafka: topics ok (${TOPICS[*]})"
}

kafka_start() {
  local pid
  pid=$(pid_of kafka)
  if [[ -n "$pid" ]]; then
    if [[ "$(cat "$STACK/kafka.sig" 2>/dev/null)" == "$(kafka_sig)" ]]; then
      kafka_ready || wait_kafka "$pid"
      log "kafka: already running (pid $pid, 127.0.0.1:$KAFKA_PORT)"
      kafka_ensure_topics
      kafka_ensure_scram
      return 0
    fi
    log "kafka: running with other settings ($(cat "$STACK/kafka.sig" 2>/dev/null)); restarting"
    stop_proc kafka
  fi
  [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "Kafka not in cache; run scripts/bootstrap.sh"
  check_port_free "$KAFKA_PORT" KAFKA_PORT
  check_port_free "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT
  check_port_free "$KAFKA_SASL_SSL_PORT" KAFKA_SASL_SSL_PORT
  tls_ensure
  kafka_write_config
  local d="$STACK/kafka"
  if [[ ! -f "$d/data/meta.properties" ]]; then
    [[ -s "$d/cluster.id" ]] || kafka_java "-Xmx64m" kafka.tools.StorageTool random-uuid >"$d/cluster.id"
    log "kafka: formatting storage (cluster id $(<"$d/cluster.id"))"
    kafka_java "-Xmx128m" kafka.tools.StorageTool format --ignore-formatted \
      -t "$(<"$d/cluster.id")" -c "$d/server.properties" >>"$d/format.log" 2>&1 \
      || fail_with_log "kafka: storage format failed" "$d/format.log"
  fi
  log "kafka $KAFKA_VERSION: starting on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)"
  # shellcheck disable=SC2086
  launch kafka "$d/kafka.log" java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$d/log4j.properties" -Dkafka.logs.dir="$d" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$d/server.properties"
  kafka_sig >"$STACK/kafka.sig"
  wait_kafka "$(<"$STACK/kafka.pid")"
  kafka_ensure_topics
  kafka_ensure_scram
}

wait_kafka() {
  local pid=$1 t0=$SECONDS
  until kafka_ready; do
    [[ -n "$(pid_of kafka)" ]] || fail_with_log "kafka (pid $pid) exited during start-up" "$STACK/kafka/kafka.log"
    ((SECONDS - t0 < START_TIMEOUT)) \
      || fail_with_log "kafka did not answer on 127.0.0.1:$KAFKA_PORT within ${START_TIMEOUT}s" "$STACK/kafka/kafka.log"
    sleep 0.5
  done
  log "kafka: answering on 127.0.0.1:$KAFKA_PORT after $((SECONDS - t0))s"
}

# --------------------------------------------------------------------- mongo
mongo_sig() {
  case "$MONGO_IMPL" in
    ferretdb) echo "ferretdb $FERRETDB_VERSION port=$MONGO_PORT tls=$MONGO_TLS_PORT" ;;
    mongo-java-server) echo "mongo-java-server $MJS_VERSION backend=$MONGO_JAVA_BACKEND port=$MONGO_PORT" ;;
  esac
}

mongo_ready() {
  python3 "$PING" --host 127.0.0.1 --port "$MONGO_PORT" --cmd ping --timeout 2 >/dev/null 2>&1 || return 1
  [[ "$MONGO_IMPL" != ferretdb ]] && return 0
  python3 "$PING" --host 127.0.0.1 --port "$MONGO_TLS_PORT" --tls-ca "$TLS/ca.pem" --cmd ping \
    --timeout 2 >/dev/null 2>&1
}

mongo_start() {
  local pid
  pid=$(pid_of mongo)
  if [[ -n "$pid" ]]; then
    if [[ "$(cat "$STACK/mongo.sig" 2>/dev/null)" == "$(mongo_sig)" ]]; then
      mongo_ready || wait_mongo "$pid"
      log "mongo: already running ($MONGO_IMPL, pid $pid, 127.0.0.1:$MONGO_PORT)"
      return 0
    fi
    log "mongo: running as '$(cat "$STACK/mongo.sig" 2>/dev/null)', requested '$(mongo_sig)'; restarting"
    stop_proc mongo
  fi
  check_port_free "$MONGO_PORT" MONGO_PORT
  local d="$STACK/mongo"
  mkdir -p "$d"
  case "$MONGO_IMPL" in
    ferretdb)
      [[ -x "$FERRETDB_BIN" ]] || die "ferretdb not in cache; run scripts/bootstrap.sh"
      mkdir -p "$d/ferretdb-data" "$d/ferretdb-state"
      check_port_free "$MONGO_TLS_PORT" MONGO_TLS_PORT
      tls_ensure
      log "mongo: starting FerretDB $FERRETDB_VERSION (sqlite: $d/ferretdb-data) on 127.0.0.1:$MONGO_PORT"
      # No --repl-set-name: drivers would then believe transactions are available.
      # The --state-dir path ("$STACK/mongo/...") is the marker pid_of() looks for.
      launch mongo "$d/mongo.log" "$FERRETDB_BIN" \
        --handler=sqlite --sqlite-url="file:$d/ferretdb-data/" \
        --listen-addr="127.0.0.1:$MONGO_PORT" --state-dir="$d/ferretdb-state" \
        --listen-tls="127.0.0.1:$MONGO_TLS_PORT" --listen-tls-cert-file="$TLS/server.pem" \
        --listen-tls-key-file="$TLS/server.key" \
        --debug-addr=- --telemetry=disable --log-level=INFO --no-log-uuid
      ;;
    mongo-java-server)
      [[ -f "$MJS_CLASSES/MongoJavaServerLauncher.class" ]] || die "mongo-java-server not in cache; run scripts/bootstrap.sh"
      local backend_args
      if [[ "$MONGO_JAVA_BACKEND" == memory ]]; then
        backend_args=(--memory)
        log "mongo: starting mongo-java-server $MJS_VERSION (in-memory) on 127.0.0.1:$MONGO_PORT"
      else
        backend_args=(--h2 "$d/mongo-java-server.mv")
        log "mongo: starting mongo-java-server $MJS_VERSION (H2 file: $d/mongo-java-server.mv) on 127.0.0.1:$MONGO_PORT"
      fi
      # "-Dww.stack=$STACK/mongo/" is the marker pid_of() looks for.
      launch mongo "$d/mongo.log" java -Xms64m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
        "-Dww.stack=$STACK/mongo/" -cp "$MJS_DIR/libs/*:$MJS_CLASSES" \
        MongoJavaServerLauncher "${backend_args[@]}" 127.0.0.1 "$MONGO_PORT"
      ;;
  esac
  mongo_sig >"$STACK/mongo.sig"
  wait_mongo "$(<"$STACK/mongo.pid")"
}

wait_mongo() {
  local pid=$1 t0=$SECONDS
  until mongo_ready; do
    [[ -n "$(pid_of mongo)" ]] || fail_with_log "mongo ($MONGO_IMPL, pid $pid) exited during start-up" "$STACK/mongo/mongo.log"
    ((SECONDS - t0 < START_TIMEOUT)) \
      || fail_with_log "mongo ($MONGO_IMPL) did not answer ping on 127.0.0.1:$MONGO_PORT within ${START_TIMEOUT}s" "$STACK/mongo/mongo.log"
    sleep 0.2
  done
  log "mongo: $MONGO_IMPL answering ping on 127.0.0.1:$MONGO_PORT after $((SECONDS - t0))s"
}

# ----------------------------------------------------------------- mongoauth
# FerretDB 1.24 checks credentials only with --test-enable-new-auth, and then refuses every
# unauthenticated command: so it is a separate instance, only for credential tests.
MONGO_AUTH_USER=wallet

mongoauth_sig() { echo "ferretdb-auth $FERRETDB_VERSION port=$MONGO_AUTH_PORT"; }

mongoauth_ready() { # the server answers and the credentials work
  python3 "$PING" --host 127.0.0.1 --port "$MONGO_AUTH_PORT" --cmd ping --timeout 2 >/dev/null 2>&1
}

mongoauth_start() {
  local pid d="$STACK/mongoauth" t0
  pid=$(pid_of mongoauth)
  if [[ -n "$pid" && "$(cat "$STACK/mongoauth.sig" 2>/dev/null)" == "$(mongoauth_sig)" ]]; then
    log "mongoauth: already running (pid $pid, 127.0.0.1:$MONGO_AUTH_PORT)"
    return 0
  fi
  [[ -n "$pid" ]] && stop_proc mongoauth
  [[ -x "$FERRETDB_BIN" ]] || die "ferretdb not in cache; run scripts/bootstrap.sh"
  check_port_free "$MONGO_AUTH_PORT" MONGO_AUTH_PORT
  tls_ensure
  mkdir -p "$d/data" "$d/state"
  log "mongoauth: starting FerretDB $FERRETDB_VERSION with authentication on 127.0.0.1:$MONGO_AUTH_PORT"
  # --setup-* creates the user when the database does not exist yet (first start)
  launch mongoauth "$d/mongo.log" env FERRETDB_SETUP_PASSWORD="$(<"$TLS/mongo.password")" \
    "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$d/data/" \
    --listen-addr="127.0.0.1:$MONGO_AUTH_PORT" --state-dir="$d/state" \
    --debug-addr=- --telemetry=disable --log-level=WARN --no-log-uuid \
    --test-enable-new-auth --setup-database=wallet_auth --setup-username="$MONGO_AUTH_USER"
  mongoauth_sig >"$STACK/mongoauth.sig"
  t0=$SECONDS
  until mongoauth_ready; do
    [[ -n "$(pid_of mongoauth)" ]] || fail_with_log "mongoauth exited during start-up" "$d/mongo.log"
    ((SECONDS - t0 < START_TIMEOUT)) || fail_with_log "mongoauth did not answer within ${START_TIMEOUT}s" "$d/mongo.log"
    sleep 0.2
  done
  log "mongoauth: answering on 127.0.0.1:$MONGO_AUTH_PORT"
}

# ------------------------------------------------------------------ commands
cmd_env() {
  # Report the server that is actually running (its signature), not whatever
  # MONGO_IMPL the caller's shell still has from an earlier `env`.
  local impl=$MONGO_IMPL running
  running=$(awk '{print $1}' "$STACK/mongo.sig" 2>/dev/null || true)
  if [[ -n "$running" && -n "$(pid_of mongo)" ]]; then impl=$running; fi
  echo "export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
  echo "export MONGODB_URI=mongodb://127.0.0.1:$MONGO_PORT/wallet"
  # secure transports (docs/testing.md); MONGODB_TLS_URI only where FerretDB runs
  echo "export WW_TLS_CA=$TLS/ca.pem"
  echo "export WW_TLS_UNTRUSTED_CA=$TLS/untrusted-ca.pem"
  echo "export KAFKA_SASL_SSL_BROKERS=127.0.0.1:$KAFKA_SASL_SSL_PORT"
  echo "export KAFKA_SCRAM_USER=$SCRAM_USER"
  echo "export KAFKA_SCRAM_PASSWORD_FILE=$TLS/scram.password"
  echo "export KAFKA_PLAIN_USER=$PLAIN_USER"
  echo "export KAFKA_PLAIN_PASSWORD_FILE=$TLS/plain.password"
  echo "export MONGO_AUTH_PORT=$MONGO_AUTH_PORT"
  echo "export MONGO_AUTH_USER=$MONGO_AUTH_USER"
  echo "export MONGO_AUTH_PASSWORD_FILE=$TLS/mongo.password"
  if [[ "$impl" == ferretdb ]]; then
    echo "export MONGODB_TLS_URI='mongodb://127.0.0.1:$MONGO_TLS_PORT/wallet?tls=true&tlsCAFile=$TLS/ca.pem'"
  else
    echo "unset MONGODB_TLS_URI"
  fi
  echo "export MONGO_IMPL=$impl"
  echo "export MONGO_JAVA_BACKEND=$MONGO_JAVA_BACKEND"
  echo "export WW_STACK_DIR=$STACK"
}

cmd_status() {
  local rc=0 pid name what
  for name in kafka mongo mongoauth; do
    pid=$(pid_of "$name")
    what=$(cat "$STACK/$name.sig" 2>/dev/null || echo "$name")
    if [[ -z "$pid" ]]; then
      printf '%-6s %-45s pid %-8s not running\n' "$name" "$what" "$(cat "$STACK/$name.pid" 2>/dev/null || echo -)"
      rc=1
    elif [[ $name == kafka ]] && ! kafka_ready; then
      printf '%-6s %-45s pid %-8s alive, NOT answering on 127.0.0.1:%s\n' "$name" "$what" "$pid" "$KAFKA_PORT"
      rc=1
    elif [[ $name == kafka ]] && ! kafka_secure_ready; then
      printf '%-6s %-45s pid %-8s alive, SASL_SSL NOT answering on 127.0.0.1:%s\n' "$name" "$what" "$pid" "$KAFKA_SASL_SSL_PORT"
      rc=1
    elif [[ $name == mongo ]] && ! mongo_ready; then
      printf '%-6s %-45s pid %-8s alive, NOT answering on 127.0.0.1:%s\n' "$name" "$what" "$pid" "$MONGO_PORT"
      rc=1
    elif [[ $name == mongoauth ]] && ! mongoauth_ready; then
      printf '%-6s %-45s pid %-8s alive, NOT answering on 127.0.0.1:%s\n' "$name" "$what" "$pid" "$MONGO_AUTH_PORT"
      rc=1
    else
      printf '%-6s %-45s pid %-8s alive, answering\n' "$name" "$what" "$pid"
    fi
  done
  echo "stack dir: $STACK"
  return $rc
}

cmd_up() {
  ensure_bootstrap
  # MONGO_IMPL unset: keep whatever this stack dir ran last (default ferretdb).
  save_settings
  # Fail before starting anything if a port we need is taken by a foreign process.
  if [[ -z "$(pid_of kafka)" ]]; then
    check_port_free "$KAFKA_PORT" KAFKA_PORT
    check_port_free "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT
    check_port_free "$KAFKA_SASL_SSL_PORT" KAFKA_SASL_SSL_PORT
  fi
  [[ -n "$(pid_of mongo)" ]] || check_port_free "$MONGO_PORT" MONGO_PORT
  tls_ensure
  kafka_start
  mongo_start
  mongoauth_start
  log "up: $(cmd_env | tr '\n' ' ')"
}

cmd_down() {
  local purge=${WW_PURGE:-0}
  [[ "${1:-}" == --purge ]] && purge=1
  stop_proc mongoauth
  stop_proc mongo
  stop_proc kafka
  if [[ "$purge" == 1 ]]; then
    case "$STACK" in
      / | "$HOME" | "$REPO") die "refusing to purge $STACK" ;;
    esac
    log "purging $STACK"
    rm -rf "$STACK"
  fi
  log "down"
}

main() {
  local cmd=${1:-}
  shift || true
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    kafka-start) ensure_bootstrap; save_settings; kafka_start ;;
    kafka-stop) stop_proc kafka ;;
    mongo-start) ensure_bootstrap; save_settings; mongo_start ;;
    mongo-stop) stop_proc mongo ;;
    *)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
}

main "$@"
