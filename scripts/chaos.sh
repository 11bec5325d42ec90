#!/usr/bin/env bash
# Fault-injection run for wallet-worker: a workload flows while the worker is SIGKILLed,
# the database and the Kafka broker are restarted, a three-worker group loses a member,
# a worker is paused past its session timeout (a zombie) and resumed, commands are
# delivered twice and replayed while live, and the worker runs against librdkafka's mock
# cluster with injected Produce/OffsetCommit errors. Wallet invariants are sampled during
# the run and checked at the end. See docs/chaos.md.
#
# Usage: scripts/chaos.sh [--small] [--seed N] [--keep-stack] [--no-build]
#
#   --small       the CI size: 10 SIGKILLs, short outages, ~1.5k commands (a few minutes)
#   --seed N      workload and timing seed (default: random; printed, so a run can be repeated)
#   --keep-stack  leave the chaos stack running afterwards (default: down and purged)
#   --no-build    use build/ as it is
#
# Environment (all optional):
#   CHAOS_STACK_DIR        default <repo>/.stack-chaos (never .stack or .stack-test)
#   CHAOS_KAFKA_PORT       29392     CHAOS_KAFKA_CONTROLLER_PORT 29393
#   CHAOS_MONGO_PORT       28317     CHAOS_HTTP_BASE 31120 (worker sidecars use BASE..BASE+3;
#                          keep it below the ephemeral port range, or an outgoing connection
#                          may take the port between two worker restarts)
#   CHAOS_MONGO_IMPL       mongo-java-server (default; every fault runs on it) | ferretdb
#                          (runs only the single-writer faults: FerretDB's conditional updates
#                          are not atomic under concurrent writers, see docs/testing.md)
#   CHAOS_TIMEOUT          global bound in seconds (default 480 small, 1500 full)
#   CHAOS_LOG_DIR          logs (default /tmp/ww-chaos-<run id>; kept after the run)
#   WW_BUILD_DIR           default <repo>/build
# Exit status: 0 every invariant held; 1 a violation (or a step failed); 124 global timeout;
# 130 interrupted.
set -uo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"

SMALL=0 KEEP_STACK=0 BUILD=1 SEED=""
while (($#)); do
  case "$1" in
    --small) SMALL=1 ;;
    --seed) SEED=${2:?--seed needs a value}; shift ;;
    --keep-stack) KEEP_STACK=1 ;;
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "chaos: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$SEED" ]] || SEED=$(( (RANDOM << 15 | RANDOM) % 1000000 ))
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "chaos: --seed must be a number" >&2; exit 2; }
RANDOM=$SEED

STACK_DIR="$(realpath -m "${CHAOS_STACK_DIR:-$REPO/.stack-chaos}")"
case "$STACK_DIR" in
  "$REPO/.stack" | "$REPO/.stack-test" | "$REPO" | / | "$HOME")
    echo "chaos: refusing to use $STACK_DIR as the chaos stack" >&2; exit 2 ;;
esac
KAFKA_PORT=${CHAOS_KAFKA_PORT:-29392}
KAFKA_CONTROLLER_PORT=${CHAOS_KAFKA_CONTROLLER_PORT:-29393}
MONGO_PORT=${CHAOS_MONGO_PORT:-28317}
HTTP_BASE=${CHAOS_HTTP_BASE:-31120}
MONGO_IMPL=${CHAOS_MONGO_IMPL:-mongo-java-server}
case "$MONGO_IMPL" in
  mongo-java-server) SERVER="mongo-java-server 1.47.0 (H2)" ;;
  ferretdb) SERVER="FerretDB v1.24.2 (SQLite)" ;;
  *) echo "chaos: CHAOS_MONGO_IMPL must be mongo-java-server or ferretdb" >&2; exit 2 ;;
esac
BUILD_DIR=${WW_BUILD_DIR:-$REPO/build}
WORKER="$BUILD_DIR/wallet-worker"
CHAOS="$BUILD_DIR/wwchaos"

if ((SMALL)); then
  KILLS=10 MID_KILL_EVERY=3 OUTAGE=5 ZOMBIES=1 RATE=40 BATCH=200 TIMEOUT=${CHAOS_TIMEOUT:-480}
  OWNERS=16 MOCK_COUNT=300 SIZE=small
else
  KILLS=20 MID_KILL_EVERY=2 OUTAGE=10 ZOMBIES=2 RATE=60 BATCH=300 TIMEOUT=${CHAOS_TIMEOUT:-1500}
  OWNERS=32 MOCK_COUNT=800 SIZE=full
fi
MISSING=2 INITIAL=5000 DUP_PCT=10 PARTITIONS=6

RUN_ID="chaos-$(date +%s)-$$"
LOG_DIR=${CHAOS_LOG_DIR:-/tmp/ww-$RUN_ID}
mkdir -p "$LOG_DIR"
CMD_TOPIC="chaos.$RUN_ID.commands" RES_TOPIC="chaos.$RUN_ID.results" DLQ_TOPIC="chaos.$RUN_ID.dlq"
GROUP="chaos-$RUN_ID"
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT/chaos"
T0=$SECONDS

log() { printf '[chaos %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
FAULTS="$LOG_DIR/faults.tsv" CHECKS="$LOG_DIR/checks.tsv"
: >"$FAULTS"; : >"$CHECKS"
fault() { # fault <name> <server> <detail>
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$FAULTS"
  log "FAULT $1 [$2] $3"
}
VIOLATIONS=0
check() { # check <invariant> ok|VIOLATION <detail>
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$CHECKS"
  [[ "$2" == ok ]] || VIOLATIONS=$((VIOLATIONS + 1))
  log "CHECK $1: $2 ($3)"
}

# ------------------------------------------------------------ processes we own
declare -a WPID=() WSTOPPED=()
FG="" PRODUCER="" SAMPLER="" WATCHDOG="" CLEANED=0

run() { # run a command in the background and wait for it, so signals are handled at once
  "$@" &
  FG=$!
  wait "$FG"
  local rc=$?
  FG=""
  return $rc
}

stack() {
  run env WW_STACK_DIR="$STACK_DIR" KAFKA_PORT="$KAFKA_PORT" \
    KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT" MONGO_PORT="$MONGO_PORT" \
    MONGO_IMPL="$MONGO_IMPL" MONGO_JAVA_BACKEND=h2 WW_STOP_TIMEOUT=20 \
    "$REPO/scripts/stack.sh" "$@" >>"$LOG_DIR/stack.log" 2>&1
}

start_worker() { # start_worker <slot>
  local slot=$1
  env -i PATH=/usr/bin:/bin KAFKA_BROKERS="$KAFKA_BROKERS" MONGODB_URI="$MONGODB_URI" \
    KAFKA_GROUP_ID="$GROUP" WALLET_COMMANDS_TOPIC="$CMD_TOPIC" WALLET_RESULTS_TOPIC="$RES_TOPIC" \
    WALLET_DLQ_TOPIC="$DLQ_TOPIC" INVITE_EVENTS_TOPIC="chaos.$RUN_ID.invites" \
    INVITE_RESULTS_TOPIC="chaos.$RUN_ID.invite-results" INVITE_DLQ_TOPIC="chaos.$RUN_ID.invite-dlq" \
    INVITE_SWEEP_INTERVAL_MS=0 HTTP_ADDR="127.0.0.1:$((HTTP_BASE + slot))" LOG_LEVEL=info \
    "$WORKER" >>"$LOG_DIR/worker-$slot.log" 2>&1 &
  WPID[$slot]=$!
  WSTOPPED[$slot]=0
  sleep 0.3
  if ! kill -0 "${WPID[$slot]}" 2>/dev/null; then # e.g. its sidecar port was taken
    wait "${WPID[$slot]}" 2>/dev/null
    fatal worker-start "worker $slot exited at start: $(grep -m1 'level=error' "$LOG_DIR/worker-$slot.log" | tail -c 200)"
  fi
  printf '\n===== start pid %s at %ss =====\n' "${WPID[$slot]}" "$((SECONDS - T0))" >>"$LOG_DIR/worker-$slot.log"
}

worker_alive() { [[ -n "${WPID[$1]:-}" ]] && kill -0 "${WPID[$1]}" 2>/dev/null; }

kill_worker() { # kill_worker <slot> <signal>; reaps it
  local slot=$1 sig=$2 pid=${WPID[$1]:-}
  [[ -n "$pid" ]] || return 0
  kill -CONT "$pid" 2>/dev/null
  kill -"$sig" "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  local rc=$?
  WPID[$slot]=""
  return $rc
}

cleanup() {
  ((CLEANED)) && return
  CLEANED=1
  touch "$LOG_DIR/stop-watchdog" "$LOG_DIR/stop-producer" "$LOG_DIR/stop-sampler"
  [[ -n "$WATCHDOG" ]] && kill "$WATCHDOG" 2>/dev/null
  [[ -n "$FG" ]] && { kill -TERM "$FG" 2>/dev/null; sleep 0.5; kill -KILL "$FG" 2>/dev/null; }
  local p f
  for p in "$PRODUCER" "$SAMPLER"; do
    [[ -n "$p" ]] && { kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; }
  done
  for f in producer sampler; do # the loops' current wwchaos, if one is still running
    p=$(cat "$LOG_DIR/$f.child" 2>/dev/null)
    [[ "$p" =~ ^[0-9]+$ ]] && grep -q wwchaos "/proc/$p/cmdline" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  local s
  for s in "${!WPID[@]}"; do
    p=${WPID[$s]}
    [[ -n "$p" ]] || continue
    kill -CONT "$p" 2>/dev/null # a paused (SIGSTOPped) worker cannot die otherwise
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    WPID[$s]=""
  done
  if ((KEEP_STACK)); then
    log "stack left running in $STACK_DIR (--keep-stack)"
  else
    FG="" stack down --purge || log "stack down failed; see $LOG_DIR/stack.log"
  fi
}

print_summary() {
  echo
  echo "==================== chaos summary ($SIZE, seed $SEED, $((SECONDS - T0)) s) ===================="
  echo "Faults injected:"
  awk -F'\t' '!($1 in n) {names[++k] = $1} {n[$1]++; srv[$1] = $2; last[$1] = $3}
    END {for (i = 1; i <= k; i++) {f = names[i]; printf "  %-20s x%-3d on %s\n  %-25s %s\n", f, n[f], srv[f], "", last[f]}}' "$FAULTS"
  echo "Invariants checked:"
  awk -F'\t' '{printf "  %-30s %-9s %s\n", $1, $2, $3}' "$CHECKS"
  echo "Logs: $LOG_DIR"
}

on_signal() {
  local why=$1
  if [[ -e "$LOG_DIR/timed-out" ]]; then
    log "GLOBAL TIMEOUT after ${TIMEOUT}s: stopping"
    check global-timeout VIOLATION "run exceeded ${TIMEOUT}s"
    cleanup
    print_summary
    echo "RESULT: FAILED (global timeout)"
    exit 124
  fi
  log "interrupted ($why)"
  cleanup
  exit 130
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap cleanup EXIT

# ------------------------------------------------------------------ helpers
ledger() { "$CHAOS" count 2>/dev/null || echo -1; }

wait_progress() { # wait_progress <entries> <timeout s>: ledger grows by that much
  local want=$1 limit=$2 start now t=$SECONDS
  start=$(ledger)
  while ((SECONDS - t < limit)); do
    now=$(ledger)
    ((start >= 0 && now >= start + want)) && return 0
    ((start < 0)) && start=$now
    sleep 0.1
  done
  return 1
}

assigned() { # assigned <slot>: partitions the worker owns (0 when it does not answer)
  local n
  n=$(curl -s -m 1 "http://127.0.0.1:$((HTTP_BASE + $1))/metrics" 2>/dev/null |
    sed -n 's/^wallet_worker_kafka_consumer_assigned_partitions \([0-9]*\).*/\1/p')
  echo "${n:-0}"
}

assigned_sum() { local s t=0; for s in "$@"; do t=$((t + $(assigned "$s"))); done; echo $t; }

wait_assigned() { # wait_assigned <total> <timeout s> <slots...>: the slots own `total`
  local want=$1 limit=$2 t=$SECONDS
  shift 2
  while ((SECONDS - t < limit)); do
    (($(assigned_sum "$@") == want)) && return 0
    sleep 0.5
  done
  return 1
}

wait_spread() { # wait_spread <total> <timeout s> <slots...>: each slot owns some, together all
  local want=$1 limit=$2 t=$SECONDS s n sum ok
  shift 2
  while ((SECONDS - t < limit)); do
    sum=0 ok=1
    for s in "$@"; do
      n=$(assigned "$s")
      ((n > 0)) || ok=0
      sum=$((sum + n))
    done
    ((ok && sum == want)) && return 0
    sleep 0.5
  done
  return 1
}

rand_ms() { echo $((RANDOM % $1)); } # 0..n-1
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

fatal() { # a step that could not be done: stop everything, summarise, fail
  check "$1" VIOLATION "$2"
  cleanup
  print_summary
  echo "RESULT: FAILED ($1)"
  exit 1
}

# ------------------------------------------------------------------- start
(
  end=$((SECONDS + TIMEOUT))
  while ((SECONDS < end)); do
    [[ -e "$LOG_DIR/stop-watchdog" ]] && exit 0
    sleep 1
  done
  touch "$LOG_DIR/timed-out"
  kill -TERM $$
) 2>/dev/null &
WATCHDOG=$!

log "wallet-worker chaos run ($SIZE), seed $SEED, run id $RUN_ID, global timeout ${TIMEOUT}s"
log "stack $STACK_DIR (kafka 127.0.0.1:$KAFKA_PORT, controller $KAFKA_CONTROLLER_PORT, $SERVER 127.0.0.1:$MONGO_PORT); logs $LOG_DIR"
if ((BUILD)); then
  log "building ($BUILD_DIR)"
  { cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
    cmake --build "$BUILD_DIR" -j2 --target wallet-worker wwchaos; } >>"$LOG_DIR/build.log" 2>&1 ||
    fatal build "build failed; see $LOG_DIR/build.log"
fi
[[ -x "$WORKER" && -x "$CHAOS" ]] || fatal build "$WORKER or $CHAOS missing"

# A clean chaos stack every run: only our own dir is ever purged.
stack down --purge || true
stack up || fatal stack "stack.sh up failed; see $LOG_DIR/stack.log"
for ((s = 0; s < 4; s++)); do
  (exec 3<>"/dev/tcp/127.0.0.1/$((HTTP_BASE + s))") 2>/dev/null &&
    fatal ports "port $((HTTP_BASE + s)) (worker sidecar) is in use; set CHAOS_HTTP_BASE"
done
run "$CHAOS" topics "$CMD_TOPIC:$PARTITIONS" "$RES_TOPIC:$PARTITIONS" "$DLQ_TOPIC:1" \
  "chaos.$RUN_ID.invites:1" "chaos.$RUN_ID.invite-results:1" "chaos.$RUN_ID.invite-dlq:1" \
  >>"$LOG_DIR/tool.log" 2>&1 || fatal topics "topic creation failed"
run "$CHAOS" seed --owners "$OWNERS" --initial "$INITIAL" >>"$LOG_DIR/tool.log" 2>&1 ||
  fatal seed "seeding failed"
log "seeded $OWNERS wallets of $INITIAL paise (int32/int64/double); $MISSING owners without a wallet"

# Workload: batches of commands at $RATE/s until the faults are over; ~${DUP_PCT}% re-sent.
(
  i=0
  while [[ ! -e "$LOG_DIR/stop-producer" ]]; do
    "$CHAOS" produce --topic "$CMD_TOPIC" --run "$RUN_ID" --first "$i" --count "$BATCH" \
      --rate "$RATE" --owners "$OWNERS" --missing "$MISSING" --dup-pct "$DUP_PCT" \
      --seed $((SEED + i + 1)) &
    echo $! >"$LOG_DIR/producer.child"
    wait $! || echo "PRODUCE FAILED (batch $i)"
    i=$((i + BATCH))
  done
) >>"$LOG_DIR/producer.log" 2>&1 &
PRODUCER=$!

# Sampler: the in-flight balance rule, about once a second, all run long.
(
  while [[ ! -e "$LOG_DIR/stop-sampler" ]]; do
    "$CHAOS" sample --owners "$OWNERS" --initial "$INITIAL" &
    echo $! >"$LOG_DIR/sampler.child"
    wait $!
    sleep 1
  done
) >>"$LOG_DIR/samples.log" 2>&1 &
SAMPLER=$!

start_worker 0
wait_progress 20 60 || fatal startup "the worker processed nothing in 60 s; see $LOG_DIR/worker-0.log"
log "workload flowing (ledger $(ledger))"

# ---- fault 1: SIGKILL at random moments ---------------------------------------------
# Every MID_KILL_EVERY-th kill waits until the worker is deciding commands (mid-batch);
# the others strike 0.2-2.5 s after start (joining the group, fetching, first batch).
for ((k = 1; k <= KILLS; k++)); do
  worker_alive 0 || start_worker 0
  if ((k % MID_KILL_EVERY == 1 || MID_KILL_EVERY == 1)); then
    wait_progress $((5 + RANDOM % 30)) 40 || log "no progress before kill $k"
    sleep_ms "$(rand_ms 300)"
    when="mid-batch"
  else
    ms=$((200 + $(rand_ms 2300)))
    sleep_ms "$ms"
    when="${ms} ms after start"
  fi
  before=$(ledger)
  kill_worker 0 KILL
  fault sigkill "$SERVER" "kill $k/$KILLS: worker SIGKILLed $when (ledger $before)"
  start_worker 0
done
wait_progress 20 60 || fatal progress "no progress after the kills"

# ---- fault 2: the database server stopped and restarted -----------------------------
stack mongo-stop || fatal db-restart "mongo-stop failed"
t=$SECONDS
sleep "$OUTAGE"
stack mongo-start || fatal db-restart "mongo-start failed"
fault db-restart "$SERVER" "stopped $((SECONDS - t)) s under load (stack.sh mongo-stop/mongo-start), one worker waiting"
wait_progress 20 90 || fatal progress "no progress after the database restart"

# ---- fault 3: the Kafka broker restarted ----------------------------------------------
stack kafka-stop || fatal kafka-restart "kafka-stop failed"
t=$SECONDS
sleep 3
stack kafka-start || fatal kafka-restart "kafka-start failed"
fault kafka-restart "Kafka 3.9.2 KRaft + $SERVER" "broker down $((SECONDS - t)) s (stack.sh kafka-stop/kafka-start); worker and producer kept running"
wait_progress 20 120 || fatal progress "no progress after the Kafka restart"

if [[ "$MONGO_IMPL" == mongo-java-server ]]; then
  # ---- fault 4: three workers in one group, one killed (rebalance) --------------------
  worker_alive 0 || start_worker 0
  start_worker 1
  start_worker 2
  TOTAL=$((PARTITIONS + 1)) # the commands topic + the invite topic
  wait_spread "$TOTAL" 60 0 1 2 ||
    check group-assignment VIOLATION "3-way assignment not seen within 60 s ($(assigned 0)/$(assigned 1)/$(assigned 2))"
  log "3 workers in group: partitions $(assigned 0)/$(assigned 1)/$(assigned 2)"
  wait_progress 20 30
  sleep_ms "$(rand_ms 500)"
  held=$(assigned 1)
  kill_worker 1 KILL
  t=$SECONDS
  wait_assigned "$TOTAL" 40 0 2 && moved="partitions moved to the 2 others after $((SECONDS - t)) s" ||
    moved="partitions NOT all moved within 40 s"
  fault group-kill "$SERVER" "3 workers in one group, one (holding $held partitions) SIGKILLed mid-run; $moved"
  if [[ $moved == *NOT* ]]; then check rebalance VIOLATION "$moved"; fi

  # ---- fault 5: a zombie: paused past the session timeout, then resumed ----------------
  for ((z = 1; z <= ZOMBIES; z++)); do
    if ((z % 2 == 1)); then victim=2 other=0; else victim=0 other=2; fi
    worker_alive $victim || start_worker $victim
    wait_spread "$TOTAL" 60 0 2 || log "zombie $z: the victim holds no partitions ($(assigned 0)/$(assigned 2))"
    held=$(assigned $victim)
    wait_progress 10 30
    kill -STOP "${WPID[$victim]}"
    WSTOPPED[$victim]=1
    t=$SECONDS
    if wait_assigned "$TOTAL" 45 $other; then
      moved_after=$((SECONDS - t))
      sleep 2 # let the new owner start on the moved partitions
      kill -CONT "${WPID[$victim]}"
      WSTOPPED[$victim]=0
      fault zombie "$SERVER" "worker $victim (held $held partitions) SIGSTOPped; its partitions moved after ${moved_after} s (session timeout 10 s); SIGCONT after $((SECONDS - t)) s"
    else
      kill -CONT "${WPID[$victim]}"
      WSTOPPED[$victim]=0
      fault zombie "$SERVER" "worker $victim SIGSTOPped $((SECONDS - t)) s, resumed"
      check zombie-partitions-moved VIOLATION "partitions did not move to worker $other within 45 s"
    fi
    wait_progress 20 60 || log "no progress after zombie $z"
  done

  # ---- fault 6: duplicated deliveries --------------------------------------------------
  # (a) the first batch produced again, byte for byte (same seed); (b) a replay of the
  # whole topic by a private consumer while the live group keeps working.
  run "$CHAOS" produce --topic "$CMD_TOPIC" --run "$RUN_ID" --first 0 --count "$BATCH" \
    --rate 0 --owners "$OWNERS" --missing "$MISSING" --dup-pct "$DUP_PCT" --seed $((SEED + 1)) \
    >>"$LOG_DIR/producer.log" 2>&1 || fatal resend "re-sending the first batch failed"
  fault resend-batch "$SERVER" "the first $BATCH commands (+ their re-sends) produced a second time, verbatim"
  t=$SECONDS
  run env -i PATH=/usr/bin:/bin KAFKA_BROKERS="$KAFKA_BROKERS" MONGODB_URI="$MONGODB_URI" \
    WALLET_COMMANDS_TOPIC="$CMD_TOPIC" WALLET_RESULTS_TOPIC="$RES_TOPIC" WALLET_DLQ_TOPIC="$DLQ_TOPIC" \
    INVITE_EVENTS_TOPIC="chaos.$RUN_ID.invites" INVITE_RESULTS_TOPIC="chaos.$RUN_ID.invite-results" \
    INVITE_DLQ_TOPIC="chaos.$RUN_ID.invite-dlq" HTTP_ADDR="127.0.0.1:$((HTTP_BASE + 3))" \
    "$WORKER" replay --topic "$CMD_TOPIC" --from-beginning >"$LOG_DIR/replay-live.out" 2>"$LOG_DIR/replay-live.log"
  rc=$?
  fault replay-while-live "$SERVER" "wallet-worker replay --from-beginning while 2 live workers and the producer run: exit $rc, $((SECONDS - t)) s"
  ((rc == 0)) || check replay-while-live VIOLATION "replay exited $rc; see $LOG_DIR/replay-live.log"
else
  log "$SERVER: skipping the concurrent-writer faults (group kill, zombie, replay while live)"
  fault concurrency-faults "$SERVER" "SKIPPED: FerretDB's conditional updates are not atomic under concurrent writers"
fi

# ---- drain -------------------------------------------------------------------------
touch "$LOG_DIR/stop-producer"
wait "$PRODUCER" 2>/dev/null
PRODUCER=""
worker_alive 0 || start_worker 0
log "workload stopped (ledger $(ledger)); draining"
run "$CHAOS" lag --group "$GROUP" --topic "$CMD_TOPIC" --wait-ms 180000 >"$LOG_DIR/lag-live.out" 2>&1
log "live $(cat "$LOG_DIR/lag-live.out")"
sleep 2
touch "$LOG_DIR/stop-sampler"
wait "$SAMPLER" 2>/dev/null
SAMPLER=""
stops=""
for s in "${!WPID[@]}"; do
  [[ -n "${WPID[$s]}" ]] || continue
  kill_worker "$s" TERM
  rc=$?
  stops+=" worker$s:$rc"
  ((rc == 0)) || check clean-stop VIOLATION "worker $s exited $rc on SIGTERM"
done
log "workers stopped (SIGTERM exit status:$stops)"

produced=$(grep -c '^produced' "$LOG_DIR/producer.log")
resent=$(sed -n 's/.* \([0-9]*\) re-sent verbatim/\1/p' "$LOG_DIR/producer.log" | awk '{s+=$1} END {print s+0}')
pfail=$(grep -c 'PRODUCE FAILED' "$LOG_DIR/producer.log")
fault duplicates "$SERVER" "$resent messages re-sent verbatim by the producer over $produced batches"
((pfail == 0)) || log "note: $pfail producer batches reported unacknowledged sends (the topic is the truth)"

# ---- invariants --------------------------------------------------------------------
ok=$(grep -c '^sample ok' "$LOG_DIR/samples.log")
inflight=$(grep -c '^sample ok.*, [1-9][0-9]* markers awaiting' "$LOG_DIR/samples.log")
bad=$(grep -c '^sample VIOLATION' "$LOG_DIR/samples.log")
skipped=$(grep -c '^sample skipped' "$LOG_DIR/samples.log")
moving=$(sed -n 's/^sample ok: .*(\([0-9]*\) still moving.*/\1/p' "$LOG_DIR/samples.log" | awk '{s+=$1} END {print s+0}')
if ((bad == 0 && ok > 0)); then
  check sampled-balances ok "$ok samples during the run: balance = initial + applied markers + applied entries, none negative; $inflight of them saw markers awaiting their ledger entry; $skipped skipped (database down), ${moving:-0} wallet reads still moving"
else
  check sampled-balances VIOLATION "$bad of $((ok + bad)) samples violated; see $LOG_DIR/samples.log"
  grep -m 20 'VIOLATION' "$LOG_DIR/samples.log" | sed 's/^/    /'
fi

if run "$CHAOS" lag --group "$GROUP" --topic "$CMD_TOPIC" --wait-ms 10000 >"$LOG_DIR/lag.out" 2>&1; then
  check consumer-lag ok "$(cat "$LOG_DIR/lag.out")"
else
  check consumer-lag VIOLATION "$(cat "$LOG_DIR/lag.out")"
fi

run "$CHAOS" check --topic "$CMD_TOPIC" --results "$RES_TOPIC" --owners "$OWNERS" \
  --initial "$INITIAL" >"$LOG_DIR/check.out" 2>&1
rc=$?
sed 's/^/    /' "$LOG_DIR/check.out"
((rc == 0)) && check ledger-balances-results ok "one entry per key, balances, results ($(grep -c . "$LOG_DIR/check.out") lines above)" ||
  check ledger-balances-results VIOLATION "see above"

run "$CHAOS" digest >"$LOG_DIR/digest-before.out" 2>&1 || fatal digest "digest failed"
t=$SECONDS
run env -i PATH=/usr/bin:/bin KAFKA_BROKERS="$KAFKA_BROKERS" MONGODB_URI="$MONGODB_URI" \
  WALLET_COMMANDS_TOPIC="$CMD_TOPIC" WALLET_RESULTS_TOPIC="$RES_TOPIC" WALLET_DLQ_TOPIC="$DLQ_TOPIC" \
  INVITE_EVENTS_TOPIC="chaos.$RUN_ID.invites" INVITE_RESULTS_TOPIC="chaos.$RUN_ID.invite-results" \
  INVITE_DLQ_TOPIC="chaos.$RUN_ID.invite-dlq" HTTP_ADDR="127.0.0.1:$((HTTP_BASE + 3))" \
  "$WORKER" replay --topic "$CMD_TOPIC" --from-beginning >"$LOG_DIR/replay-final.out" 2>"$LOG_DIR/replay-final.log"
rc=$?
run "$CHAOS" digest >"$LOG_DIR/digest-after.out" 2>&1 || fatal digest "digest failed"
before=$(cat "$LOG_DIR/digest-before.out") after=$(cat "$LOG_DIR/digest-after.out")
if ((rc == 0)) && [[ "$before" == "$after" ]]; then
  check final-replay-digest ok "replay from offset 0 (exit 0, $((SECONDS - t)) s) left wallets + ledger identical: ${after#digest }"
else
  check final-replay-digest VIOLATION "replay exit $rc; before: $before; after: $after"
fi
run "$CHAOS" check --topic "$CMD_TOPIC" --results "$RES_TOPIC" --owners "$OWNERS" \
  --initial "$INITIAL" >"$LOG_DIR/check-after-replay.out" 2>&1
rc=$?
res=$(grep '  results:' "$LOG_DIR/check-after-replay.out" | sed 's/^ *//')
((rc == 0)) && check outcomes-stable-after-replay ok "$res" ||
  { check outcomes-stable-after-replay VIOLATION "see $LOG_DIR/check-after-replay.out"; sed 's/^/    /' "$LOG_DIR/check-after-replay.out"; }

# ---- fault 7: the worker against librdkafka's mock cluster ------------------------------
log "mock cluster run (Produce/OffsetCommit request errors, SIGKILL, broker stalled)"
run "$CHAOS" mock --worker "$WORKER" --mongodb-uri "mongodb://127.0.0.1:$MONGO_PORT/chaos_mock" \
  --owners 12 --initial "$INITIAL" --count "$MOCK_COUNT" --log "$LOG_DIR/worker-mock.log" \
  >"$LOG_DIR/mock.out" 2>&1
rc=$?
sed 's/^/    /' "$LOG_DIR/mock.out"
fault mock-request-errors "librdkafka mock cluster + $SERVER" "$(grep -h 'round 1' "$LOG_DIR/mock.out" | sed 's/^ *round 1: //')"
fault mock-broker-stall "librdkafka mock cluster + $SERVER" "$(grep -h 'round 2' "$LOG_DIR/mock.out" | sed 's/^ *round 2: //')"
((rc == 0)) && check mock-nothing-lost ok "every key decided once, answered, committed (lag 0)" ||
  check mock-nothing-lost VIOLATION "see $LOG_DIR/mock.out and $LOG_DIR/worker-mock.log"

# ---- summary -------------------------------------------------------------------------
touch "$LOG_DIR/stop-watchdog"
kill "$WATCHDOG" 2>/dev/null
WATCHDOG=""
print_summary
if ((VIOLATIONS)); then
  echo "RESULT: FAILED ($VIOLATIONS invariant violations)"
  exit 1
fi
echo "RESULT: ok (every invariant held)"
exit 0
