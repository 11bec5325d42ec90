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
#   2. ceiling: the same commands through ww_wallet_apply() directly (libmongoc, no Kafka),
#               same threads, same routing by owner, on the same server: worker/ceiling.
#   3. invites: an invite-event workload through a fresh worker, and through the peer, the
#               official MongoDB Kafka sink connector (Kafka Connect standalone, resolved from
#               Maven Central into ~/.cache/wallet-worker by bench/connect-resolve.sh), from
#               the same topic into the same server: throughput and peak-RSS ratios.
# Output: a table, a PNG plot of throughput over time, and ONE JSON line (the last line of
# stdout) with every figure. Files go to build/bench/<run id>/.
# Exit status: 0 when every command got its expected result, 1 when the run itself failed
# (never because of speed; a peer that cannot run is reported, not a failure), 2 usage.
#
# Options:
#   --small                 2,000 commands over 200 wallets, 500 invite events (CI)
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
#   --keep-stack            leave the bench stack running afterwards
# Environment: WW_BENCH_STACK_DIR (default .stack-bench), WW_BENCH_KAFKA_PORT (49092),
#   WW_BENCH_KAFKA_CONTROLLER_PORT (49093), WW_BENCH_MONGO_PORT (57017),
#   WW_BENCH_CONNECT_HEAP (default "-Xms256M -Xmx2G", connect-standalone.sh's), WW_BENCH_SKIP_SETUP=1
#   (no bootstrap; the build still runs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

COMMANDS=100000 WALLETS=10000 ZIPF=0.8 DUP=0.05 INSUF=0.05 INVAL=0.01 INVITES="" RATE=0
THREADS=8 MONGO=mongo-java-server PEER=1 KEEP=0 SMALL=0
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
    --keep-stack) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in COMMANDS WALLETS THREADS RATE; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "bench.sh: --${v,,} must be an integer" >&2; exit 2; }
done
[[ -n "$INVITES" ]] || INVITES=$((SMALL ? 500 : COMMANDS / 5))
((INVITES >= 10)) || INVITES=10
case "$MONGO" in ferretdb | mongo-java-server) ;; *) echo "bench.sh: --mongo ferretdb|mongo-java-server" >&2; exit 2 ;; esac

# The bench stack: never the developer's (.stack) or the tests' (.stack-test).
export WW_STACK_DIR="${WW_BENCH_STACK_DIR:-$ROOT/.stack-bench}"
export KAFKA_PORT="${WW_BENCH_KAFKA_PORT:-49092}"
export KAFKA_CONTROLLER_PORT="${WW_BENCH_KAFKA_CONTROLLER_PORT:-49093}"
export MONGO_PORT="${WW_BENCH_MONGO_PORT:-57017}"
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
log "stack: Kafka $BROKERS, $MONGO on $MONGO_PORT ($WW_STACK_DIR)"
STACK_UP=1
"$ROOT/scripts/stack.sh" up >"$OUT/stack.log" 2>&1 || { tail -n 30 "$OUT/stack.log" >&2; exit 1; }

WL=(--commands "$COMMANDS" --wallets "$WALLETS" --zipf "$ZIPF" --dup-share "$DUP"
    --insufficient-share "$INSUF" --invalid-share "$INVAL" --run-id "$RUN" --seed 1)
B=(--brokers "$BROKERS")
T_CMD="bench.$RUN.commands" T_RES="bench.$RUN.results" T_DLQ="bench.$RUN.commands.dlq"
T_INV="bench.$RUN.invites" T_IRES="bench.$RUN.invite-results" T_IDLQ="bench.$RUN.invites.dlq"
T_CMD2="bench.$RUN.idle-commands" T_RES2="bench.$RUN.idle-results" T_DLQ2="bench.$RUN.idle-dlq"
T_INV1="bench.$RUN.idle-invites" T_IRES1="bench.$RUN.idle-invite-results" T_IDLQ1="bench.$RUN.idle-invites-dlq"
"$WWBENCH" topics "${B[@]}" --partitions 4 "$T_CMD" "$T_RES" "$T_DLQ" "$T_INV" "$T_IRES" "$T_IDLQ" \
  "$T_CMD2" "$T_RES2" "$T_DLQ2" "$T_INV1" "$T_IRES1" "$T_IDLQ1" >/dev/null 2>"$OUT/topics.log" \
  || { cat "$OUT/topics.log" >&2; exit 1; }

# start_worker <db> <commands> <results> <dlq> <invites> <invite-results> <invite-dlq> <log>
start_worker() {
  local port; port=$(free_port 18080)
  WORKER_HTTP="127.0.0.1:$port"
  KAFKA_BROKERS="$BROKERS" MONGODB_URI="$MONGO_BASE/$1" HTTP_ADDR="$WORKER_HTTP" \
    KAFKA_GROUP_ID="wwbench-$RUN-$1" WORKER_THREADS="$THREADS" LOG_LEVEL=info \
    WALLET_COMMANDS_TOPIC="$2" WALLET_RESULTS_TOPIC="$3" WALLET_DLQ_TOPIC="$4" \
    INVITE_EVENTS_TOPIC="$5" INVITE_RESULTS_TOPIC="$6" INVITE_DLQ_TOPIC="$7" \
    "$WORKER" >"$8" 2>&1 &
  WORKER_PID=$!
  PIDS+=("$WORKER_PID")
}
await_ready() { # await_ready <log>
  local t0=$SECONDS
  until [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$WORKER_HTTP/readyz" || true)" == 200 ]]; do
    kill -0 "$WORKER_PID" 2>/dev/null || { tail -n 20 "$1" >&2; fail "the worker exited during start-up"; exit 1; }
    ((SECONDS - t0 < 90)) || { tail -n 20 "$1" >&2; fail "the worker was not ready within 90 s"; exit 1; }
    sleep 0.2
  done
}

# ---------------------------------------------------- 1. the worker, end to end
log "seeding $WALLETS wallets twice (worker and ceiling databases)"
"$WWBENCH" seed --mongodb-uri "$MONGO_BASE/${DBP}_w" "${WL[@]}" >"$OUT/seed.json" 2>>"$OUT/wwbench.log" \
  || { tail -n 5 "$OUT/wwbench.log" >&2; exit 1; }
"$WWBENCH" seed --mongodb-uri "$MONGO_BASE/${DBP}_c" "${WL[@]}" >/dev/null 2>>"$OUT/wwbench.log" \
  || { tail -n 5 "$OUT/wwbench.log" >&2; exit 1; }
start_worker "${DBP}_w" "$T_CMD" "$T_RES" "$T_DLQ" "$T_INV1" "$T_IRES1" "$T_IDLQ1" "$OUT/worker.log"
await_ready "$OUT/worker.log"
log "worker ready (pid $WORKER_PID, ${THREADS} threads): producing $COMMANDS commands"
RUN_RC=0
"$WWBENCH" run "${B[@]}" "${WL[@]}" --commands-topic "$T_CMD" --results-topic "$T_RES" \
  --rate "$RATE" --worker-pid "$WORKER_PID" --series "$OUT/worker-series.tsv" \
  --bucket-ms $((SMALL ? 250 : 1000)) >"$OUT/run.json" 2> >(tee -a "$OUT/wwbench.log" >&2) || RUN_RC=$?
WORKER_TOTAL_CPU=$(proc_cpu_s "$WORKER_PID")
stop_pid "$WORKER_PID"
[[ -s "$OUT/run.json" ]] || echo '{}' >"$OUT/run.json"
((RUN_RC == 0)) || fail "worker run: not every command got its expected result (see above)"
((STOP_RC == 0)) || fail "the worker exited with status $STOP_RC after the run (log: $OUT/worker.log)"

# ---------------------------------------------------------------- 2. ceiling
log "ceiling: the same $COMMANDS commands through ww_wallet_apply() on $THREADS threads"
"$WWBENCH" ceiling --mongodb-uri "$MONGO_BASE/${DBP}_c" "${WL[@]}" --threads "$THREADS" \
  >"$OUT/ceiling.json" 2> >(tee -a "$OUT/wwbench.log" >&2) || fail "ceiling run failed"
[[ -s "$OUT/ceiling.json" ]] || echo '{}' >"$OUT/ceiling.json"

# -------------------------------------------------- 3. invites: worker and peer
log "invites: $INVITES events into $T_INV"
"$WWBENCH" invites-produce "${B[@]}" --topic "$T_INV" --count "$INVITES" --run-id "$RUN" \
  >"$OUT/invites-produce.json" 2>>"$OUT/wwbench.log" || { tail -n 5 "$OUT/wwbench.log" >&2; exit 1; }
# await-results prints {"ready":true} once it is assigned; only then is the worker started
exec {AWAIT_FD}< <("$WWBENCH" await-results "${B[@]}" --topic "$T_IRES" --count "$INVITES" \
  --series "$OUT/invite-worker-series.tsv" --bucket-ms $((SMALL ? 100 : 500)) 2>>"$OUT/wwbench.log"; echo "rc=$?")
read -r -t 90 line <&"$AWAIT_FD" || true
[[ "$line" == '{"ready":true}' ]] || { tail -n 5 "$OUT/wwbench.log" >&2; fail "await-results did not start"; exit 1; }
start_worker "${DBP}_i" "$T_CMD2" "$T_RES2" "$T_DLQ2" "$T_INV" "$T_IRES" "$T_IDLQ" "$OUT/invite-worker.log"
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
if command -v gnuplot >/dev/null && [[ -s "$OUT/worker-series.tsv" ]]; then
  {
    echo "set terminal pngcairo size 1100,800 noenhanced" 2>/dev/null
    echo "set output '$OUT/throughput.png'"
    echo "set multiplot layout 2,1 title 'wallet-worker bench $RUN ($MONGO, $COMMANDS commands, $WALLETS wallets, zipf $ZIPF, $THREADS threads)'"
    echo "set grid; set key top right; set xlabel 'seconds since the first produce'; set ylabel 'per second'"
    echo "set y2label 'worker CPU %'; set y2tics; set ytics nomirror; set logscale y"
    echo "plot '$OUT/worker-series.tsv' using 1:3 with lines lw 2 title 'results/s (worker)', \
'' using 1:2 with lines title 'produced/s', '' using 1:4 axes x1y2 with lines dt 2 title 'worker CPU % (right)'"
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
ALL=$(jq -nc --arg run "$RUN" --arg mongo "$MONGO" --arg server "${SERVER_VERSION:-$MONGO}" \
  --argjson machine "$MACHINE" --argjson threads "$THREADS" --argjson small "$SMALL" \
  --slurpfile worker "$OUT/run.json" --slurpfile ceiling "$OUT/ceiling.json" \
  --slurpfile seed "$OUT/seed.json" --slurpfile inv "$OUT/invite-worker.json" \
  --argjson peer "$PEER_JSON" --argjson failures "$FAIL_JSON" \
  --argjson total_cpu "$WORKER_TOTAL_CPU" --argjson wall $((SECONDS - T_START)) \
  --arg png "$OUT/throughput.png" '
  def r(x): if x == null then null else (x * 1000 | round) / 1000 end;
  ($worker[0]) as $w | ($ceiling[0]) as $c | ($inv[0]) as $i |
  { bench: "wallet-worker", run: $run, ok: ($failures | length == 0), failures: $failures,
    small: ($small == 1), server: $mongo, server_detail: $server, machine: $machine,
    worker_threads: $threads, seed_s: $seed[0].seed_s,
    worker: ($w + {process_cpu_s_total: $total_cpu}),
    ceiling: $c,
    worker_vs_ceiling: r(if ($c.throughput_cps // 0) > 0 then ($w.throughput_cps // 0) / $c.throughput_cps else null end),
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
  "",
  "wallet-worker benchmark  run \(.run)  server \(.server_detail)",
  "machine: \(.machine.uname), \(.machine.nproc) cpu (\(.machine.cpu)), \(.machine.mem_kib / 1048576 | floor) GiB",
  "workload: \(.worker.commands // "-") commands over \(.worker.wallets // "-") wallets, zipf \(.worker.zipf // "-"), dup \(.worker.dup_share // "-"), insufficient \(.worker.insufficient_share // "-"), invalid \(.worker.invalid_share // "-"), \(.worker_threads) threads",
  "",
  "  figure                                   value",
  "  ---------------------------------------  ------------",
  "  worker throughput (commands/s)           \(f(.worker.throughput_cps; 0))",
  "  worker elapsed, first produce->last (s)  \(f(.worker.elapsed_s; 2))",
  "  latency produce->result p50 / p95 / p99  \(f(.worker.latency_ms.p50; 1)) / \(f(.worker.latency_ms.p95; 1)) / \(f(.worker.latency_ms.p99; 1)) ms",
  "  worker CPU during the run (s)            \(f(.worker.worker_cpu_s; 2))  (\(f(.worker.worker_cpu_ms_per_1k; 0)) ms per 1000 commands, \(f(.worker.worker_cpu_util * 100; 0))% of one core)",
  "  worker peak RSS (MiB)                    \(f(.worker.worker_rss_peak_kib / 1024; 1))",
  "  results applied/dup/insuff./invalid      \(.worker.by_status.applied // "-")/\(.worker.by_status.duplicate // "-")/\(.worker.by_status.insufficient_funds // "-")/\(.worker.by_status.invalid // "-")  (expected \(.worker.expected.applied // "-")/\(.worker.expected.duplicate // "-")/\(.worker.expected.insufficient_funds // "-")/\(.worker.expected.invalid // "-"))",
  "  ceiling throughput (commands/s)          \(f(.ceiling.throughput_cps; 0))  (ww_wallet_apply, no Kafka; service p50 \(f(.ceiling.service_ms.p50; 2)) ms)",
  "  worker / ceiling                         \(f(.worker_vs_ceiling; 3))",
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
