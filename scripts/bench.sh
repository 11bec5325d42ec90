#!/usr/bin/env bash
# Benchmark of wallet-worker on the real local servers (docs/benchmarks.md).
#
# Usage: scripts/bench.sh [--small] [options]
#
# In one run, on a private stack (its own folder and ports, started and stopped here):
#   1. worker:  N wallet commands over W seeded wallets (key skew, duplicates, insufficient
#               funds, invalid messages) produced into Kafka while the worker runs; every
#               result is matched to its command: throughput (first produce -> last result),
#               latency produce -> result (p50/p95/p99), the worker's CPU time and peak RSS.
#               After it, `wallet-worker replay --from-beginning` of the same topic (every
#               command a duplicate then): replay commands/s. The worker's CPU per command and,
#               when it exports wallet_worker_db_round_trips_total, its round trips per command.
#      baseline: the previous release's worker (--baseline REV, built once into
#               build/bench-baseline/<commit>) on the same workload in the same run, in the
#               order baseline, new, new, baseline (--order ABBA) or baseline, new (AB):
#               throughput, replay and latency ratios measured side by side.
#      latency: one more run of each binary at a sustainable rate (half the slower side's
#               measured throughput, or --latency-rate): p50/p99 produce->result.
#   2. ceiling: the same commands through ww_wallet_apply() directly (libmongoc, no Kafka),
#               same threads, same routing by owner, on the same server: worker/ceiling.
#      raw bulk: the minimum writes for the same commands (per batch, one unordered bulk of
#               guarded $inc updates, one per wallet, and one unordered ledger insert), no
#               reads, no Kafka, same threads: worker/raw_bulk_ceiling.
#   3. invites: an invite-event workload through a fresh worker, and through the peer, the
#               official MongoDB Kafka sink connector (Kafka Connect standalone, resolved from
#               Maven Central into ~/.cache/wallet-worker by bench/connect-resolve.sh), from
#               the same topic into the same server: throughput and peak-RSS ratios.
# Output: a table, a PNG plot of throughput over time, and ONE JSON line (the last line of
# stdout) with every figure. Files go to build/bench/<run id>/.
# Exit status: 0 when every command got its expected result, 1 when the run itself failed
# (never because of speed; a peer or a baseline that cannot run is reported, not a
# failure), 2 usage.
#
# Options:
#   --small                 2,000 commands over 200 wallets, 500 invite events (CI); no
#                           baseline and no latency runs unless --baseline / --latency
#   --commands N            wallet commands (default 100000)
#   --wallets W             wallets (default 10000)
#   --zipf S                key skew: Zipf exponent over the wallets (default 0.8; 0 uniform)
#   --dup-share F           share of exact re-sends of an earlier command (default 0.05)
#   --insufficient-share F  share of debits larger than any balance (default 0.05)
#   --invalid-share F       share of invalid messages (default 0.01)
#   --invites N             invite events (default commands/5)
#   --rate R                produce at most R commands/s (default: as fast as possible)
#   --threads T             WORKER_THREADS for the worker and the ceiling (default 8)
#   --mongo IMPL            mongo-java-server (default, H2 backend) | ferretdb (slow: see
#                           docs/benchmarks.md; use it with --small or a few thousand commands)
#   --no-peer               skip the Kafka Connect peer
#   --baseline REV          the previous release to compare with (default 1a3a2b1, main
#                           before group commit); any git revision of this repository
#   --no-baseline           skip the baseline
#   --order ABBA|AB         baseline (A) and new (B) worker runs, in this order (default ABBA)
#   --latency-rate R        the rate of the latency runs (default: half the slower side's
#                           measured throughput)
#   --latency, --no-latency run (the default, except with --small) or skip the latency runs
#   --no-replay             skip the replays
#   --batch N               raw bulk: commands per batch (default 512, the engine's BATCH_MAX)
#   --keep-stack            leave the bench stack running afterwards
# Environment: WW_BENCH_STACK_DIR (default .stack-bench), WW_BENCH_KAFKA_PORT (29292),
#   WW_BENCH_KAFKA_CONTROLLER_PORT (29293), WW_BENCH_MONGO_PORT (28217),
#   WW_BENCH_CONNECT_HEAP (default "-Xms256M -Xmx2G", connect-standalone.sh's), WW_BENCH_SKIP_SETUP=1
#   (no bootstrap; the build still runs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

COMMANDS=100000 WALLETS=10000 ZIPF=0.8 DUP=0.05 INSUF=0.05 INVAL=0.01 INVITES="" RATE=0
THREADS=8 MONGO=mongo-java-server PEER=1 KEEP=0 SMALL=0
BASE_REV=1a3a2b1 BASELINE="" ORDER=ABBA LAT_RATE="" LATENCY="" REPLAY=1 BATCH=512
need() { [[ $# -ge 2 && -n "$2" ]] || { echo "bench.sh: $1 needs a value" >&2; exit 2; }; }
while (($#)); do
  case "$1" in
    --small) SMALL=1; COMMANDS=2000; WALLETS=200 ;;
    --commands) need "$@"; COMMANDS=$2; shift ;;
    --wallets) need "$@"; WALLETS=$2; shift ;;
    --zipf) need "$@"; ZIPF=$2; shift ;;
    --dup-share) need "$@"; DUP=$2; shift ;;
    --insufficient-share) need "$@"; INSUF=$2; shift ;;
    --invalid-share) need "$@"; INVAL=$2; shift ;;
    --invites) need "$@"; INVITES=$2; shift ;;
    --rate) need "$@"; RATE=$2; shift ;;
    --threads) need "$@"; THREADS=$2; shift ;;
    --mongo) need "$@"; MONGO=$2; shift ;;
    --no-peer) PEER=0 ;;
    --baseline) need "$@"; BASE_REV=$2; BASELINE=1; shift ;;
    --no-baseline) BASELINE=0 ;;
    --order) need "$@"; ORDER=$2; shift ;;
    --latency-rate) need "$@"; LAT_RATE=$2; LATENCY=1; shift ;;
    --latency) LATENCY=1 ;;
    --no-latency) LATENCY=0 ;;
    --no-replay) REPLAY=0 ;;
    --batch) need "$@"; BATCH=$2; shift ;;
    --keep-stack) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in COMMANDS WALLETS THREADS RATE BATCH; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "bench.sh: --${v,,} must be an integer" >&2; exit 2; }
done
[[ -z "$LAT_RATE" || "$LAT_RATE" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --latency-rate must be a positive integer" >&2; exit 2; }
case "$ORDER" in ABBA | AB) ;; *) echo "bench.sh: --order ABBA|AB" >&2; exit 2 ;; esac
# --small (CI) is about proving the bench works: the baseline and latency runs only on request
[[ -n "$BASELINE" ]] || BASELINE=$((SMALL ? 0 : 1))
[[ -n "$LATENCY" ]] || LATENCY=$((SMALL ? 0 : 1))
[[ -n "$INVITES" ]] || INVITES=$((SMALL ? 500 : COMMANDS / 5))
((INVITES >= 10)) || INVITES=10
case "$MONGO" in ferretdb | mongo-java-server) ;; *) echo "bench.sh: --mongo ferretdb|mongo-java-server" >&2; exit 2 ;; esac

# The bench stack: never the developer's (.stack) or the tests' (.stack-test).
export WW_STACK_DIR="${WW_BENCH_STACK_DIR:-$ROOT/.stack-bench}"
export KAFKA_PORT="${WW_BENCH_KAFKA_PORT:-29292}"
export KAFKA_CONTROLLER_PORT="${WW_BENCH_KAFKA_CONTROLLER_PORT:-29293}"
export MONGO_PORT="${WW_BENCH_MONGO_PORT:-28217}"
export MONGO_IMPL="$MONGO"
unset KAFKA_BROKERS MONGODB_URI
BROKERS="127.0.0.1:$KAFKA_PORT"
MONGO_BASE="mongodb://127.0.0.1:$MONGO_PORT"

RUN="b$(date +%Y%m%d%H%M%S)-$$"
DBP="wwb_${RUN//-/_}"
OUT="$ROOT/build/bench/$RUN"
mkdir -p "$OUT"
WORKER="$ROOT/build/wallet-worker"
WWBENCH="$ROOT/build/wwbench"
T_START=$SECONDS
PIDS=()          # processes we started: stopped on exit
STACK_UP=0
FAIL=()          # what made the run fail

log() { printf '[bench] %s\n' "$*" >&2; }
fail() { FAIL+=("$*"); log "FAILED: $*"; }

STOP_RC=0
stop_pid() { # stop_pid <pid> [timeout s]: TERM, wait, KILL; the exit status in STOP_RC
  local pid=$1 t=${2:-20} i
  STOP_RC=0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || STOP_RC=$?
}

on_exit() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do
    kill -0 "$p" 2>/dev/null && stop_pid "$p" 10
  done
  if ((STACK_UP && !KEEP)); then
    "$ROOT/scripts/stack.sh" down >"$OUT/stack-down.log" 2>&1 || true
  fi
  ((rc == 0)) || log "exit $rc (files: ${OUT#"$ROOT"/})"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { local p=$(( $1 + RANDOM % 500 )); while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }
proc_cpu_s() { # utime+stime of a live pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo -1
}
proc_hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo -1; }

# ------------------------------------------------------------------- set-up
if [[ "${WW_BENCH_SKIP_SETUP:-0}" != 1 ]]; then
  log "bootstrap"
  "$ROOT/scripts/bootstrap.sh" >"$OUT/bootstrap.log" 2>&1 || { tail -n 20 "$OUT/bootstrap.log" >&2; exit 1; }
fi
log "build (RelWithDebInfo)"
{ cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    && cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target wallet-worker wwbench wwtool; } \
  >"$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log" >&2; exit 1; }

# The previous release, built once per commit into build/bench-baseline/<commit>
# (RelWithDebInfo, the worker only). A revision this clone lacks (shallow CI
# checkout) or a build that fails is reported, not a failure of the run.
BASE_WORKER="" BASE_COMMIT="" BASE_REASON="" BASE_CACHED=false BASE_BUILD_S=0
build_baseline() {
  local t0=$SECONDS dir
  BASE_COMMIT=$(git -C "$ROOT" rev-parse --verify -q "$BASE_REV^{commit}" 2>/dev/null) \
    || { BASE_REASON="revision $BASE_REV is not in this clone (shallow? git fetch --unshallow)"; return 1; }
  dir="$ROOT/build/bench-baseline/${BASE_COMMIT:0:12}"
  if [[ -x "$dir/build/wallet-worker" ]]; then
    BASE_CACHED=true
  else
    mkdir -p "$dir"
    log "baseline: building $BASE_REV (${BASE_COMMIT:0:12}) into ${dir#"$ROOT"/} (once)"
    ( flock 9
      [[ -x "$dir/build/wallet-worker" ]] && exit 0
      rm -rf "$dir/src" "$dir/build" && mkdir -p "$dir/src" \
        && git -C "$ROOT" archive "$BASE_COMMIT" | tar -x -C "$dir/src" \
        && cmake -S "$dir/src" -B "$dir/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWW_BUILD_TESTS=OFF \
        && cmake --build "$dir/build" -j"$(nproc 2>/dev/null || echo 2)" --target wallet-worker
    ) 9>"$dir.lock" >"$OUT/baseline-build.log" 2>&1 \
      || { BASE_REASON="the build of $BASE_REV failed (see baseline-build.log)"; return 1; }
  fi
  BASE_BUILD_S=$((SECONDS - t0))
  BASE_WORKER="$dir/build/wallet-worker"
}
if ((BASELINE)) && ! build_baseline; then log "baseline: $BASE_REASON"; fi

log "stack: Kafka $BROKERS, $MONGO on $MONGO_PORT ($WW_STACK_DIR)"
# Every run seeds fresh databases and never reads an earlier run's: a stopped
# bench stack's mongo-java-server file (which grew with every earlier run: it
# took over a minute to load at 2 GB, and a server holding many runs is not
# the server the figures describe) is removed, so each run starts empty.
# Only the bench's own default folder (a WW_BENCH_STACK_DIR may be someone's
# data), and only when no process holds its server's pid file (one still
# loading the file does not answer on its port yet).
mongo_pid_alive() {
  local pid
  pid=$(cat "$WW_STACK_DIR/mongo.pid" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}
if [[ -z "${WW_BENCH_STACK_DIR:-}" && "$MONGO" == mongo-java-server \
  && -f "$WW_STACK_DIR/mongo/mongo-java-server.mv" ]] && ! mongo_pid_alive && ! port_busy "$MONGO_PORT"; then
  rm -f "$WW_STACK_DIR/mongo/mongo-java-server.mv"
fi
STACK_UP=1
"$ROOT/scripts/stack.sh" up >"$OUT/stack.log" 2>&1 || { tail -n 30 "$OUT/stack.log" >&2; exit 1; }

WL=(--commands "$COMMANDS" --wallets "$WALLETS" --zipf "$ZIPF" --dup-share "$DUP"
    --insufficient-share "$INSUF" --invalid-share "$INVAL" --run-id "$RUN" --seed 1)
B=(--brokers "$BROKERS")
# The wallet worker runs, in order: A = baseline, B = the worker under test. Each has
# its own database (wwb_<run>_<label>) and topics (bench.<run>.<label>.*).
RUNS=()
if [[ -n "$BASE_WORKER" ]]; then
  if [[ "$ORDER" == ABBA ]]; then RUNS=(base1 new1 new2 base2); else RUNS=(base1 new1); fi
else
  RUNS=(new1)
fi
LAT_RUNS=()
if ((LATENCY)); then LAT_RUNS=(newlat); [[ -n "$BASE_WORKER" ]] && LAT_RUNS+=(baselat); fi
T_INV="bench.$RUN.invites" T_IRES="bench.$RUN.invite-results" T_IDLQ="bench.$RUN.invites.dlq"
T_CMD2="bench.$RUN.idle-commands" T_RES2="bench.$RUN.idle-results" T_DLQ2="bench.$RUN.idle-dlq"
T_INV1="bench.$RUN.idle-invites" T_IRES1="bench.$RUN.idle-invite-results" T_IDLQ1="bench.$RUN.idle-invites-dlq"
TOPICS=("$T_INV" "$T_IRES" "$T_IDLQ" "$T_CMD2" "$T_RES2" "$T_DLQ2" "$T_INV1" "$T_IRES1" "$T_IDLQ1")
for l in "${RUNS[@]}" "${LAT_RUNS[@]+"${LAT_RUNS[@]}"}"; do
  for t in commands results dlq replay-results replay-dlq; do TOPICS+=("bench.$RUN.$l.$t"); done
done
"$WWBENCH" topics "${B[@]}" --partitions 4 "${TOPICS[@]}" >/dev/null 2>"$OUT/topics.log" \
  || { cat "$OUT/topics.log" >&2; exit 1; }

# start_worker <binary> <db> <commands> <results> <dlq> <invites> <invite-results> <invite-dlq> <log>
start_worker() {
  local port; port=$(free_port 18080)
  WORKER_HTTP="127.0.0.1:$port"
  KAFKA_BROKERS="$BROKERS" MONGODB_URI="$MONGO_BASE/$2" HTTP_ADDR="$WORKER_HTTP" \
    KAFKA_GROUP_ID="wwbench-$RUN-$2" WORKER_THREADS="$THREADS" LOG_LEVEL=info \
    WALLET_COMMANDS_TOPIC="$3" WALLET_RESULTS_TOPIC="$4" WALLET_DLQ_TOPIC="$5" \
    INVITE_EVENTS_TOPIC="$6" INVITE_RESULTS_TOPIC="$7" INVITE_DLQ_TOPIC="$8" \
    "$1" >"$9" 2>&1 &
  WORKER_PID=$!
  PIDS+=("$WORKER_PID")
}
await_ready() { # await_ready <log>: 0 once /readyz answers 200, 1 (and the log's end) when not
  local t0=$SECONDS
  until [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$WORKER_HTTP/readyz" || true)" == 200 ]]; do
    kill -0 "$WORKER_PID" 2>/dev/null || { tail -n 20 "$1" >&2; READY_WHY="exited during start-up"; return 1; }
    ((SECONDS - t0 < 90)) || { tail -n 20 "$1" >&2; READY_WHY="not ready within 90 s"; return 1; }
    sleep 0.2
  done
}
# The worker's wallet_worker_db_round_trips_total by op, as a JSON object, or null when
# it exports no such counter (a release before group commit) or does not answer.
round_trips() {
  { curl -s -m 5 "http://$WORKER_HTTP/metrics" 2>/dev/null || true; } | awk '
    /^wallet_worker_db_round_trips_total[{ ]/ {
      op = "all"; if (match($0, /op="[^"]*"/)) op = substr($0, RSTART + 4, RLENGTH - 5)
      v["rt:" op] += $NF; n++ }
    /^wallet_worker_db_operation_duration_seconds_(sum|count)[{ ]/ {
      op = "all"; if (match($0, /operation="[^"]*"/)) op = substr($0, RSTART + 11, RLENGTH - 12)
      k = ($0 ~ /_sum/) ? "s:" : "n:"; v[k op] += $NF }
    /^wallet_worker_batch_size_(sum|count)[{ ]/ { v[($0 ~ /_sum/) ? "b:sum" : "b:count"] += $NF }
    END { if (!n) { print "null"; exit }
          printf "{"; sep = ""; for (k in v) { printf "%s\"%s\":%.6f", sep, k, v[k]; sep = "," }
          print "}" }'
}

# worker_run <label> <binary> <rate> <replay 0|1>: one end-to-end run on a freshly seeded
# database and fresh topics, then (optionally) the replay of its commands topic. Writes
# $OUT/wr-<label>.json. A problem with the worker under test fails the run; one with
# the baseline is recorded in its figures (ok: false) and reported.
worker_run() {
  local label=$1 bin=$2 rate=$3 replay=$4 db="${DBP}_$1" side=new problems=() rc=0
  [[ "$label" == base* ]] && side=baseline
  local tc="bench.$RUN.$label.commands" tr="bench.$RUN.$label.results" td="bench.$RUN.$label.dlq"
  local rt0=null rt1=null cpu=-1 replay_json=null
  problem() { problems+=("$label: $*"); if [[ $side == new ]]; then fail "$label: $*"; else log "baseline problem: $label: $*"; fi; }
  echo '{}' >"$OUT/run-$label.json"
  if ! "$WWBENCH" seed --mongodb-uri "$MONGO_BASE/$db" "${WL[@]}" >"$OUT/seed-$label.json" 2>>"$OUT/wwbench.log"; then
    tail -n 5 "$OUT/wwbench.log" >&2; fail "seeding $db"; exit 1
  fi
  start_worker "$bin" "$db" "$tc" "$tr" "$td" "$T_INV1" "$T_IRES1" "$T_IDLQ1" "$OUT/worker-$label.log"
  if ! await_ready "$OUT/worker-$label.log"; then
    problem "the worker $READY_WHY (log: worker-$label.log)"
    stop_pid "$WORKER_PID"
  else
    log "$label: $side worker ready (pid $WORKER_PID, $THREADS threads): producing $COMMANDS commands$( ((rate > 0)) && echo " at $rate/s")"
    rt0=$(round_trips)
    "$WWBENCH" run "${B[@]}" "${WL[@]}" --commands-topic "$tc" --results-topic "$tr" \
      --rate "${rate:-0}" --worker-pid "$WORKER_PID" --series "$OUT/series-$label.tsv" \
      --bucket-ms $((SMALL ? 250 : 1000)) >"$OUT/run-$label.json" 2> >(tee -a "$OUT/wwbench.log" >&2) || rc=$?
    cpu=$(proc_cpu_s "$WORKER_PID")
    rt1=$(round_trips)
    stop_pid "$WORKER_PID"
    [[ -s "$OUT/run-$label.json" ]] || echo '{}' >"$OUT/run-$label.json"
    ((rc == 0)) || problem "not every command got its expected result (see above)"
    ((STOP_RC == 0)) || problem "the worker exited with status $STOP_RC after the run (log: worker-$label.log)"
    ((rc == 0 && replay)) && replay_json=$(replay_run "$label" "$bin" "$db" "$tc")
    if [[ "$replay_json" != null ]] && ! jq -e '.ok' <<<"$replay_json" >/dev/null; then
      problem "replay: $(jq -r '.reason' <<<"$replay_json")"
    fi
  fi
  jq -c --arg lbl "$label" --arg side "$side" --arg bin "$bin" --argjson cpu_total "$cpu" \
    --slurpfile seed "$OUT/seed-$label.json" \
    --argjson rt0 "$rt0" --argjson rt1 "$rt1" --argjson replay "$replay_json" \
    --argjson problems "$(printf '%s\n' "${problems[@]+"${problems[@]}"}" | jq -Rsc 'split("\n") | map(select(length > 0))')" '
    (.commands // 0) as $n |
    (if $rt1 == null then null   # a labelled counter may have no series before the first command
     else $rt1 | with_entries(.value -= (($rt0 // {})[.key] // 0)) end) as $all |
    (if $all == null then null
     else $all | with_entries(select(.key | startswith("rt:")) | .key |= .[3:] | .value |= round) end) as $rt |
    (if $all == null then null
     else [$all | to_entries[] | select(.key | startswith("s:")) | .key[2:] as $op |
           {key: $op, value: {calls: ($all["n:" + $op] // 0 | round), seconds: (.value * 1000 | round / 1000),
                              ms_per_call: (if ($all["n:" + $op] // 0) > 0
                                            then (.value / $all["n:" + $op] * 1e4 | round / 10) else null end)}}] |
           from_entries end) as $dbt |
    (if $all == null or ($all["b:count"] // 0) == 0 then null
     else {calls: ($all["b:count"] | round), mean_size: ($all["b:sum"] / $all["b:count"] * 10 | round / 10),
           rounds_per_call: (if ($all["n:insert_many"] // 0) > 0
                             then ($all["n:insert_many"] / $all["b:count"] * 100 | round / 100) else null end)} end) as $bat |
    { label: $lbl, side: $side, binary: $bin, ok: ($problems | length == 0), problems: $problems,
      seed_s: ($seed[0].seed_s // null),
      run: (. + {process_cpu_s_total: $cpu_total}),
      cpu_us_per_command: (if (.worker_cpu_s // -1) >= 0 and $n > 0 then (.worker_cpu_s * 1e6 / $n | round) else null end),
      db_round_trips: $rt,
      db_time: $dbt,
      batches: $bat,
      db_round_trips_per_command: (if $rt == null or $n == 0 then null
        else ((($rt | add) // 0) / $n * 1000 | round) / 1000 end),
      replay: $replay }' "$OUT/run-$label.json" >"$OUT/wr-$label.json"
}

# replay_run <label> <binary> <db> <commands topic>: `replay --from-beginning` of the
# topic the worker has just applied (every command a duplicate now), results and dead
# letters to throwaway topics (a hung replay is killed after 600 s + 1 s per 20
# commands: exit status 124). Prints a JSON object: the replay's own summary (messages,
# its elapsed time, its rate), the wall time of the whole process, and the outcomes.
replay_run() {
  local label=$1 bin=$2 db=$3 tc=$4 rc=0 t0 t1
  log "$label: replay --from-beginning of $tc"
  t0=$(date +%s%N)
  KAFKA_BROKERS="$BROKERS" MONGODB_URI="$MONGO_BASE/$db" WORKER_THREADS="$THREADS" LOG_LEVEL=warn \
    KAFKA_GROUP_ID="wwbench-$RUN-$db-replay" WALLET_COMMANDS_TOPIC="$tc" \
    WALLET_RESULTS_TOPIC="bench.$RUN.$label.replay-results" WALLET_DLQ_TOPIC="bench.$RUN.$label.replay-dlq" \
    INVITE_EVENTS_TOPIC="$T_INV1" INVITE_RESULTS_TOPIC="$T_IRES1" INVITE_DLQ_TOPIC="$T_IDLQ1" \
    timeout -k 10 $((600 + COMMANDS / 20)) \
    "$bin" replay --topic "$tc" --from-beginning >"$OUT/replay-$label.txt" 2>"$OUT/replay-$label.log" || rc=$?
  t1=$(date +%s%N)
  local re='([0-9]+) message\(s\) processed( of ([0-9]+))? in ([0-9.]+) s \(([0-9]+) msg/s\)' first
  first=$(head -n 1 "$OUT/replay-$label.txt")
  local processed=null total=null engine_s=null engine_cps=null
  if [[ "$first" =~ $re ]]; then
    processed=${BASH_REMATCH[1]} total=${BASH_REMATCH[3]:-null} engine_s=${BASH_REMATCH[4]}
    engine_cps=${BASH_REMATCH[5]}
  fi
  sed -nE 's/^  ([a-z_]+) +([0-9]+)$/\1 \2/p' "$OUT/replay-$label.txt" \
    | jq -Rnc --arg lbl "$label" --argjson rc "$rc" --argjson processed "$processed" --argjson total "$total" \
      --argjson engine_s "$engine_s" --argjson engine_cps "$engine_cps" --argjson wall_ns $((t1 - t0)) --argjson n "$COMMANDS" '
      ([inputs | split(" ") | {key: .[0], value: (.[1] | tonumber)}] | from_entries) as $out |
      ($wall_ns / 1e9) as $wall |
      { ok: ($rc == 0 and $processed == $n), exit_status: $rc, messages: $processed, total: $total,
        outcomes: $out, engine_s: $engine_s, wall_s: (($wall * 1000 | round) / 1000),
        throughput_cps: (if $engine_cps != null then $engine_cps
                         elif $wall > 0 and $processed != null then ($processed / $wall | round) else null end),
        reason: (if $rc != 0 then "exit status \($rc) (see replay-\($lbl).log)"
                 elif $processed != $n then "\($processed // "no summary") of \($n) messages processed"
                 else null end) }'
}

# ---------------------------------------------------- 1. the worker, end to end
for l in "${RUNS[@]}"; do
  if [[ "$l" == base* ]]; then worker_run "$l" "$BASE_WORKER" "$RATE" "$REPLAY"
  else worker_run "$l" "$WORKER" "$RATE" "$REPLAY"; fi
done
# latency at a sustainable rate, the same rate for both: half the slower side's mean
# throughput (half load for the baseline, less for the new worker); without a baseline, half
# the new worker's
if ((${#LAT_RUNS[@]})); then
  if [[ -z "$LAT_RATE" ]]; then
    LAT_RATE=$(jq -s '
      def half(side): [.[] | select(.side == side and .ok) | .run.throughput_cps // 0] |
        if length == 0 then null else (add / length / 2 | floor) end;
      [half("new"), half("baseline")] | map(select(. != null and . > 0)) |
      if length == 0 then 0 else min end' "$OUT"/wr-*.json)
  fi
  if ((LAT_RATE > 0)); then
    for l in "${LAT_RUNS[@]}"; do
      if [[ "$l" == base* ]]; then worker_run "$l" "$BASE_WORKER" "$LAT_RATE" 0
      else worker_run "$l" "$WORKER" "$LAT_RATE" 0; fi
    done
  else
    log "latency runs skipped: no throughput measured"
  fi
fi

# ---------------------------------------------------------------- 2. ceiling
log "ceiling: the same $COMMANDS commands through ww_wallet_apply() on $THREADS threads"
"$WWBENCH" seed --mongodb-uri "$MONGO_BASE/${DBP}_c" "${WL[@]}" >/dev/null 2>>"$OUT/wwbench.log" \
  || { tail -n 5 "$OUT/wwbench.log" >&2; exit 1; }
"$WWBENCH" ceiling --mongodb-uri "$MONGO_BASE/${DBP}_c" "${WL[@]}" --threads "$THREADS" \
  >"$OUT/ceiling.json" 2> >(tee -a "$OUT/wwbench.log" >&2) || fail "ceiling run failed"
[[ -s "$OUT/ceiling.json" ]] || echo '{}' >"$OUT/ceiling.json"

log "raw bulk ceiling: the minimum writes for the same commands, batches of $BATCH, $THREADS threads"
"$WWBENCH" seed --mongodb-uri "$MONGO_BASE/${DBP}_r" "${WL[@]}" >/dev/null 2>>"$OUT/wwbench.log" \
  || { tail -n 5 "$OUT/wwbench.log" >&2; exit 1; }
"$WWBENCH" raw-bulk --mongodb-uri "$MONGO_BASE/${DBP}_r" "${WL[@]}" --threads "$THREADS" --batch "$BATCH" \
  >"$OUT/raw-bulk.json" 2> >(tee -a "$OUT/wwbench.log" >&2) || fail "raw bulk run failed"
[[ -s "$OUT/raw-bulk.json" ]] || echo '{}' >"$OUT/raw-bulk.json"

# -------------------------------------------------- 3. invites: worker and peer
log "invites: $INVITES events into $T_INV"
"$WWBENCH" invites-produce "${B[@]}" --topic "$T_INV" --count "$INVITES" --run-id "$RUN" \
  >"$OUT/invites-produce.json" 2>>"$OUT/wwbench.log" || { tail -n 5 "$OUT/wwbench.log" >&2; exit 1; }
# await-results prints {"ready":true} once it is assigned; only then is the worker started
exec {AWAIT_FD}< <("$WWBENCH" await-results "${B[@]}" --topic "$T_IRES" --count "$INVITES" \
  --series "$OUT/invite-worker-series.tsv" --bucket-ms $((SMALL ? 100 : 500)) 2>>"$OUT/wwbench.log"; echo "rc=$?")
read -r -t 90 line <&"$AWAIT_FD" || true
[[ "$line" == '{"ready":true}' ]] || { tail -n 5 "$OUT/wwbench.log" >&2; fail "await-results did not start"; exit 1; }
start_worker "$WORKER" "${DBP}_i" "$T_CMD2" "$T_RES2" "$T_DLQ2" "$T_INV" "$T_IRES" "$T_IDLQ" "$OUT/invite-worker.log"
INV_PID=$WORKER_PID
: >"$OUT/invite-worker.json"
while read -r line <&"$AWAIT_FD"; do
  case "$line" in rc=*) INV_RC=${line#rc=} ;; *) echo "$line" >>"$OUT/invite-worker.json" ;; esac
done
exec {AWAIT_FD}<&-
INV_CPU=$(proc_cpu_s "$INV_PID") INV_HWM=$(proc_hwm_kib "$INV_PID")
stop_pid "$INV_PID"
[[ "${INV_RC:-1}" == 0 ]] || fail "invite run: not every invite event was applied (see $OUT/wwbench.log)"
((STOP_RC == 0)) || fail "the invite worker exited with status $STOP_RC (log: $OUT/invite-worker.log)"
[[ -s "$OUT/invite-worker.json" ]] || echo '{}' >"$OUT/invite-worker.json"
jq -c --argjson cpu "$INV_CPU" --argjson hwm "${INV_HWM:--1}" '. + {cpu_s: $cpu, rss_peak_kib: $hwm}' \
  "$OUT/invite-worker.json" >"$OUT/invite-worker.json.tmp" && mv "$OUT/invite-worker.json.tmp" "$OUT/invite-worker.json"

PEER_JSON='{"attempted":false}'
if ((PEER)); then
  log "peer: MongoDB Kafka sink connector (Kafka Connect standalone) on the same $INVITES events"
  PEER_JSON=$("$ROOT/bench/peer.sh" "$OUT" "$BROKERS" "$MONGO_BASE" "${DBP}_p" "$T_INV" "$INVITES" "$SMALL" \
    2> >(tee -a "$OUT/peer.log" >&2)) || PEER_JSON='{"attempted":true,"ok":false,"reason":"bench/peer.sh crashed; see peer.log"}'
fi
echo "$PEER_JSON" >"$OUT/peer.json"

# ---------------------------------------------------------------- the plot
if command -v gnuplot >/dev/null && [[ -s "$OUT/series-new1.tsv" ]]; then
  {
    echo "set terminal pngcairo size 1100,800 noenhanced" 2>/dev/null
    echo "set output '$OUT/throughput.png'"
    echo "set multiplot layout 2,1 title 'wallet-worker bench $RUN ($MONGO, $COMMANDS commands, $WALLETS wallets, zipf $ZIPF, $THREADS threads)'"
    echo "set grid; set key top right; set xlabel 'seconds since the first produce'; set ylabel 'per second'"
    echo "set y2label 'worker CPU %'; set y2tics; set ytics nomirror; set logscale y"
    BASE_PLOT=""
    [[ -s "$OUT/series-base1.tsv" ]] && BASE_PLOT=", '$OUT/series-base1.tsv' using 1:3 with lines lw 2 title 'results/s (baseline ${BASE_REV})'"
    echo "plot '$OUT/series-new1.tsv' using 1:3 with lines lw 2 title 'results/s (worker)', \
'' using 1:2 with lines title 'produced/s', '' using 1:4 axes x1y2 with lines dt 2 title 'worker CPU % (right)'$BASE_PLOT"
    echo "unset y2label; unset y2tics; unset logscale y; set xlabel 'seconds since the first output'; set ylabel 'invite events per second'"
    if [[ -s "$OUT/peer-series.tsv" ]]; then
      echo "plot '$OUT/invite-worker-series.tsv' using 1:3 with lines lw 2 title 'wallet-worker (results/s)', \
'$OUT/peer-series.tsv' using 1:3 with lines lw 2 title 'Kafka Connect MongoDB sink (documents/s)'"
    else
      echo "plot '$OUT/invite-worker-series.tsv' using 1:3 with lines lw 2 title 'wallet-worker (results/s)'"
    fi
    echo "unset multiplot"
  } >"$OUT/plot.gp"
  # pngcairo needs gnuplot-qt/-x11; gnuplot-nox has the libgd png terminal
  gnuplot -e "set terminal png size 1100,800" "$OUT/plot.gp" >"$OUT/gnuplot.log" 2>&1 \
    || { sed -i 's/^set terminal pngcairo/set terminal png/' "$OUT/plot.gp"; gnuplot "$OUT/plot.gp" >"$OUT/gnuplot.log" 2>&1; } \
    || log "gnuplot failed (see $OUT/gnuplot.log)"
fi

# ------------------------------------------------------------- the figures
MACHINE=$(jq -nc --arg uname "$(uname -srvm)" --arg cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)" \
  --argjson nproc "$(nproc)" --argjson mem "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)" \
  '{uname: $uname, cpu: $cpu, nproc: $nproc, mem_kib: $mem}')
SERVER_VERSION=$(grep -m1 -o 'mongo: starting [^(]*' "$OUT/stack.log" | sed 's/mongo: starting //; s/ *$//' || true)
FAIL_JSON=$(printf '%s\n' "${FAIL[@]+"${FAIL[@]}"}" | jq -Rsc 'split("\n") | map(select(length > 0))')
# every worker run, in the order they ran
: >"$OUT/worker-runs.jsonl"
for l in "${RUNS[@]}" "${LAT_RUNS[@]+"${LAT_RUNS[@]}"}"; do
  [[ -s "$OUT/wr-$l.json" ]] && cat "$OUT/wr-$l.json" >>"$OUT/worker-runs.jsonl"
done
BASE_INFO=$(jq -nc --argjson attempted "$BASELINE" --arg rev "$BASE_REV" --arg commit "$BASE_COMMIT" \
  --arg reason "$BASE_REASON" --argjson cached "$BASE_CACHED" --argjson build_s "$BASE_BUILD_S" \
  --arg binary "$BASE_WORKER" --arg order "$ORDER" '
  {attempted: ($attempted == 1), built: ($binary != ""), rev: $rev,
   commit: (if $commit == "" then null else $commit end), binary: (if $binary == "" then null else $binary end),
   order: $order, build_cached: $cached, build_s: $build_s,
   reason: (if $reason == "" then null else $reason end)}')
ALL=$(jq -nc --arg run "$RUN" --arg mongo "$MONGO" --arg server "${SERVER_VERSION:-$MONGO}" \
  --argjson machine "$MACHINE" --argjson threads "$THREADS" --argjson small "$SMALL" \
  --slurpfile runs "$OUT/worker-runs.jsonl" --slurpfile ceiling "$OUT/ceiling.json" \
  --slurpfile raw "$OUT/raw-bulk.json" --slurpfile inv "$OUT/invite-worker.json" \
  --argjson peer "$PEER_JSON" --argjson failures "$FAIL_JSON" --argjson base "$BASE_INFO" \
  --argjson lat_rate "${LAT_RATE:-0}" --argjson wall $((SECONDS - T_START)) \
  --arg png "$OUT/throughput.png" '
  def r(x): if x == null then null else (x * 1000 | round) / 1000 end;
  def ratio(a; b): if a == null or b == null or b == 0 then null else r(a / b) end;
  def mean(a): if (a | length) == 0 then null else (a | add / length) end;
  def tput(rs): mean([rs[] | select(.ok) | .run.throughput_cps // empty | select(. > 0)]);
  def rcps(rs): mean([rs[] | select(.ok) | .replay.throughput_cps // empty | select(. > 0)]);
  def lat(x): if x == null then null else
    {ok: x.ok, throughput_cps: x.run.throughput_cps, latency_ms: x.run.latency_ms,
     cpu_us_per_command: x.cpu_us_per_command, db_round_trips_per_command: x.db_round_trips_per_command} end;
  ($runs | map(select(.label | endswith("lat") | not))) as $main |
  ($main | map(select(.side == "new"))) as $newr | ($main | map(select(.side == "baseline"))) as $baser |
  ($newr[0] // {}) as $n1 |
  ($runs | map(select(.label == "newlat")) | .[0]) as $nl |
  ($runs | map(select(.label == "baselat")) | .[0]) as $bl |
  ($ceiling[0]) as $c | ($raw[0]) as $rb | ($inv[0]) as $i |
  tput($newr) as $wt | tput($baser) as $bt |
  { bench: "wallet-worker", run: $run, ok: ($failures | length == 0), failures: $failures,
    small: ($small == 1), server: $mongo, server_detail: $server, machine: $machine,
    worker_threads: $threads, seed_s: ($n1.seed_s // null),
    worker: (($n1.run // {}) + {cpu_us_per_command: $n1.cpu_us_per_command,
      db_round_trips: $n1.db_round_trips, db_time: $n1.db_time, batches: $n1.batches, db_round_trips_per_command: $n1.db_round_trips_per_command,
      replay: $n1.replay}),
    worker_throughput_cps_mean: (if $wt == null then null else ($wt | round) end),
    ceiling: $c,
    worker_vs_ceiling: ratio($wt; $c.throughput_cps),
    raw_bulk: $rb,
    worker_vs_raw_bulk_ceiling: ratio($wt; $rb.throughput_cps),
    replay: {new_cps: (rcps($newr) | if . == null then null else round end),
             baseline_cps: (rcps($baser) | if . == null then null else round end),
             new_vs_baseline: ratio(rcps($newr); rcps($baser))},
    baseline: ($base + {ok: ($base.built and ($baser | length) > 0 and all($baser[]; .ok)),
      runs: ($baser | length), throughput_cps_mean: (if $bt == null then null else ($bt | round) end),
      problems: [$baser[].problems[], (($bl // {}).problems // [])[]]}),
    worker_vs_baseline: ratio($wt; $bt),
    latency_at_rate: {rate_cps: (if $lat_rate > 0 and $nl != null then $lat_rate else null end),
      new: lat($nl), baseline: lat($bl),
      p99_new_vs_baseline: ratio($nl.run.latency_ms.p99; $bl.run.latency_ms.p99),
      baseline_overloaded: (if $bl == null or $bt == null then null else $lat_rate > $bt end)},
    worker_runs: [$runs[] | {label: .label, side, ok, throughput_cps: .run.throughput_cps,
      latency_ms: .run.latency_ms, rate_limit: .run.rate_limit, cpu_us_per_command,
      db_round_trips_per_command, replay_cps: .replay.throughput_cps, problems}],
    invites: { events: ($i.count), worker: $i, peer: $peer,
      throughput_ratio_worker_vs_peer: r(if ($peer.ok // false) and ($peer.throughput_per_s // 0) > 0
        then ($i.throughput_per_s // 0) / $peer.throughput_per_s else null end),
      rss_ratio_worker_vs_peer: r(if ($peer.ok // false) and ($peer.rss_peak_kib // 0) > 0
        then ($i.rss_peak_kib // 0) / $peer.rss_peak_kib else null end) },
    plot: $png, bench_wall_s: $wall }')
echo "$ALL" >"$OUT/bench.json"

# human table
jq -r '
  def f(x; d): if x == null then "-" else (x * pow(10; d) | round / pow(10; d) | tostring) end;
  def pad(s; w): s + ([range(0; [0, w - (s | length)] | max)] | map(" ") | join(""));
  "",
  "wallet-worker benchmark  run \(.run)  server \(.server_detail)",
  "machine: \(.machine.uname), \(.machine.nproc) cpu (\(.machine.cpu)), \(.machine.mem_kib / 1048576 | floor) GiB",
  "workload: \(.worker.commands // "-") commands over \(.worker.wallets // "-") wallets, zipf \(.worker.zipf // "-"), dup \(.worker.dup_share // "-"), insufficient \(.worker.insufficient_share // "-"), invalid \(.worker.invalid_share // "-"), \(.worker_threads) threads",
  "",
  "  figure                                   value",
  "  ---------------------------------------  ------------",
  "  worker throughput (commands/s)           \(f(.worker.throughput_cps; 0))\(if (.worker_runs | map(select(.side == "new" and (.label | endswith("lat") | not))) | length) > 1 then "  (mean of the new runs \(f(.worker_throughput_cps_mean; 0)))" else "" end)",
  "  worker elapsed, first produce->last (s)  \(f(.worker.elapsed_s; 2))",
  "  latency produce->result p50 / p95 / p99  \(f(.worker.latency_ms.p50; 1)) / \(f(.worker.latency_ms.p95; 1)) / \(f(.worker.latency_ms.p99; 1)) ms",
  "  worker CPU during the run (s)            \(f(.worker.worker_cpu_s; 2))  (\(f(.worker.worker_cpu_ms_per_1k; 0)) ms per 1000 commands, \(f(.worker.worker_cpu_util * 100; 0))% of one core)",
  "  worker CPU per command (µs)              \(f(.worker.cpu_us_per_command; 0))",
  "  DB round trips per command               \(if .worker.db_round_trips_per_command == null then "- (this worker exports no wallet_worker_db_round_trips_total)" else "\(f(.worker.db_round_trips_per_command; 3))  (\(.worker.db_round_trips | to_entries | map("\(.key) \(.value)") | join(", ")))" end)",
  "  worker peak RSS (MiB)                    \(f(.worker.worker_rss_peak_kib / 1024; 1))",
  "  results applied/dup/insuff./invalid      \(.worker.by_status.applied // "-")/\(.worker.by_status.duplicate // "-")/\(.worker.by_status.insufficient_funds // "-")/\(.worker.by_status.invalid // "-")  (expected \(.worker.expected.applied // "-")/\(.worker.expected.duplicate // "-")/\(.worker.expected.insufficient_funds // "-")/\(.worker.expected.invalid // "-"))",
  "  replay of the applied topic (commands/s) \(if .worker.replay == null then "- (not run)" else "\(f(.worker.replay.throughput_cps; 0))  (\(.worker.replay.messages // "-") messages in \(f(.worker.replay.engine_s; 2)) s; process wall \(f(.worker.replay.wall_s; 2)) s)" end)",
  "  ceiling throughput (commands/s)          \(f(.ceiling.throughput_cps; 0))  (ww_wallet_apply, no Kafka; service p50 \(f(.ceiling.service_ms.p50; 2)) ms)",
  "  worker / ceiling                         \(f(.worker_vs_ceiling; 3))",
  "  raw bulk ceiling (commands/s)            \(f(.raw_bulk.throughput_cps; 0))  (batches of \(.raw_bulk.batch // "-"), \(f(.raw_bulk.round_trips_per_command; 3)) round trips per command, no reads)",
  "  worker / raw_bulk_ceiling                \(f(.worker_vs_raw_bulk_ceiling; 3))",
  (if .baseline.built then
  "\(pad("  baseline \(.baseline.rev) (commands/s)"; 42)) \(f(.baseline.throughput_cps_mean; 0))  (\(.baseline.runs) run(s), order \(.baseline.order); \(if .baseline.ok then "ok" else "PROBLEM: \(.baseline.problems | join("; "))" end))",
  "  worker / baseline (same run)             \(f(.worker_vs_baseline; 3))",
  "  replay: worker / baseline                \(f(.replay.new_vs_baseline; 3))  (\(f(.replay.new_cps; 0)) vs \(f(.replay.baseline_cps; 0)) commands/s)"
  elif .baseline.attempted then
  "\(pad("  baseline \(.baseline.rev)"; 42)) DID NOT RUN: \(.baseline.reason)"
  else "  baseline                                 not run (--no-baseline, or --small)" end),
  (if .latency_at_rate.rate_cps != null then
  "\(pad("  at \(.latency_at_rate.rate_cps)/s: worker p50 / p99"; 42)) \(f(.latency_at_rate.new.latency_ms.p50; 1)) / \(f(.latency_at_rate.new.latency_ms.p99; 1)) ms",
  (if .latency_at_rate.baseline != null then
  "  same rate: baseline p50 / p99            \(f(.latency_at_rate.baseline.latency_ms.p50; 1)) / \(f(.latency_at_rate.baseline.latency_ms.p99; 1)) ms\(if .latency_at_rate.baseline_overloaded then "  (above the baseline'"'"'s throughput: queueing)" else "" end)",
  "  p99 at that rate: worker / baseline      \(f(.latency_at_rate.p99_new_vs_baseline; 3))"
  else empty end)
  else "  latency at a sustainable rate            not run (--no-latency, or --small)" end),
  "  invites: worker (events/s)               \(f(.invites.worker.throughput_per_s; 0))  (peak RSS \(f(.invites.worker.rss_peak_kib / 1024; 1)) MiB, CPU \(f(.invites.worker.cpu_s; 2)) s)",
  (if .invites.peer.ok then
  "  invites: Kafka Connect sink (events/s)   \(f(.invites.peer.throughput_per_s; 0))  (peak RSS \(f(.invites.peer.rss_peak_kib / 1024; 1)) MiB, CPU \(f(.invites.peer.cpu_s; 2)) s)",
  "  invites: worker / peer throughput        \(f(.invites.throughput_ratio_worker_vs_peer; 3))",
  "  invites: worker / peer peak RSS          \(f(.invites.rss_ratio_worker_vs_peer; 3))"
  elif .invites.peer.attempted then
  "  invites: Kafka Connect sink              DID NOT RUN: \(.invites.peer.reason)"
  else "  invites: Kafka Connect sink              not attempted (--no-peer)" end),
  "",
  "plot: \(.plot)",
  (if .ok then "result: OK (every command got its expected result)" else "result: FAILED: \(.failures | join("; "))" end),
  ""' "$OUT/bench.json"
echo "$ALL"
((${#FAIL[@]} == 0))
