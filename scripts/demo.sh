#!/usr/bin/env bash
# A five-minute tour of wallet-worker on the local stack: three wallets, a batch of
# commands that shows every outcome (applied, duplicate, conflict, insufficient_funds,
# wallet_not_found, invalid -> dead letter), the result events, the ledgers, health
# and metrics, then a clean SIGTERM stop.
#
# Usage: scripts/demo.sh            (re-runnable: every run uses fresh idempotency keys)
#
# Starts (or reuses) the stack of scripts/stack.sh and leaves it running at the end
# (scripts/stack.sh down stops it). By default that is .stack with Kafka 127.0.0.1:9092 and
# MongoDB 127.0.0.1:27017; WW_STACK_DIR, KAFKA_PORT, KAFKA_CONTROLLER_PORT, MONGO_PORT (and
# MONGO_IMPL) select another one, as for stack.sh, so the demo can run beside a stack that
# is already in use. The worker runs with HTTP_ADDR (default 127.0.0.1:8080, or the next free
# port), consumer group wallet-worker-demo, and logs to <stack dir>/demo-worker.log; it is
# always stopped on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case "${1:-}" in
  -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

# The stack is the one WW_STACK_DIR names (default .stack), on the ports given or recorded
# there by its last `up`; the worker and wwtool get its addresses from `stack.sh env`, never
# from addresses an earlier `eval "$(scripts/stack.sh env)"` left in this shell.
unset KAFKA_BROKERS MONGODB_URI
STACK_DIR="$(realpath -m "${WW_STACK_DIR:-$ROOT/.stack}")"
export WW_STACK_DIR="$STACK_DIR"
LOG="$STACK_DIR/demo-worker.log"
PIDFILE="$STACK_DIR/demo-worker.pid"
WORKER="$ROOT/build/wallet-worker"
WWTOOL="$ROOT/build/wwtool"
GROUP=wallet-worker-demo
WORKER_PID=""
STEP_LOG=""
mkdir -p "$STACK_DIR"

if [[ -t 1 ]]; then B=$'\033[1m' D=$'\033[2m' G=$'\033[32m' R=$'\033[31m' N=$'\033[0m'
else B="" D="" G="" R="" N=""; fi
STEP=0
heading() { STEP=$((STEP + 1)); printf '\n%s%d. %s%s\n' "$B" "$STEP" "$*" "$N"; }
say() { printf '   %s\n' "$*"; }
note() { printf '   %s%s%s\n' "$D" "$*" "$N"; }
indent() { sed 's/^/   /'; }

# quietly <log> <cmd...>: run a noisy step into a log; show its tail only if it fails.
quietly() {
  STEP_LOG=$1; shift
  "$@" >"$STEP_LOG" 2>&1
  STEP_LOG=""
}

stop_worker() { # stop_worker <signal>: prints the exit status
  local rc=0
  kill "-$1" "$WORKER_PID" 2>/dev/null || true
  wait "$WORKER_PID" 2>/dev/null || rc=$?
  WORKER_PID=""
  rm -f "$PIDFILE"
  return "$rc"
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$WORKER_PID" ]]; then
    stop_worker TERM || true
  fi
  if ((rc != 0)); then
    printf '\n%sdemo failed (exit %d)%s\n' "$R" "$rc" "$N" >&2
    if [[ -n "$STEP_LOG" && -s "$STEP_LOG" ]]; then
      printf -- '--- last 30 lines of %s ---\n' "$STEP_LOG" >&2
      tail -n 30 "$STEP_LOG" >&2
    fi
    if [[ -s "$LOG" ]]; then
      printf -- '--- last 30 lines of %s ---\n' "$LOG" >&2
      tail -n 30 "$LOG" >&2
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$HTTP_URL$1" || true; }

# HTTP_ADDR given: used as it is (checked here, before anything starts; a busy port is an
# error); not given: 127.0.0.1:8080 or the next free port. The worker accepts only IP:PORT.
HTTP_GIVEN=${HTTP_ADDR:-}
if [[ -n "$HTTP_GIVEN" ]]; then
  [[ "$HTTP_GIVEN" =~ ^(.*):([0-9]+)$ ]] || { echo "demo.sh: HTTP_ADDR must be IP:PORT (got '$HTTP_GIVEN')" >&2; exit 2; }
  HTTP_HOST=${BASH_REMATCH[1]} HTTP_PORT=${BASH_REMATCH[2]}
  [[ "$HTTP_HOST" == 0.0.0.0 ]] && HTTP_HOST=127.0.0.1
  HTTP_URL="$HTTP_HOST:$HTTP_PORT"
fi

# --------------------------------------------------------------------- set-up
heading "Set-up: bootstrap, build, stack"
quietly "$STACK_DIR/demo-bootstrap.log" "$ROOT/scripts/bootstrap.sh"
say "bootstrap ok"
JOBS=$(nproc 2>/dev/null || echo 2)
quietly "$STACK_DIR/demo-build.log" bash -c "cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  && cmake --build build -j$JOBS --target wallet-worker wwtool"
say "built build/wallet-worker and build/wwtool (RelWithDebInfo)"
quietly "$STACK_DIR/demo-stack.log" "$ROOT/scripts/stack.sh" up
eval "$("$ROOT/scripts/stack.sh" env)"
export KAFKA_BROKERS MONGODB_URI
say "stack up: Kafka $KAFKA_BROKERS, $MONGO_IMPL at ${MONGODB_URI}"

# A worker left behind by an interrupted demo run (ours: same binary, pid file).
if [[ -s "$PIDFILE" ]]; then
  old=$(<"$PIDFILE")
  if [[ "$old" =~ ^[0-9]+$ && "$(tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null)" == "$WORKER "* ]]; then
    note "stopping the worker an earlier demo run left behind (pid $old)"
    kill -TERM "$old" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d /proc/$old ]] || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
fi

if [[ -n "$HTTP_GIVEN" ]]; then
  ! port_busy "$HTTP_HOST" "$HTTP_PORT" || { echo "demo.sh: HTTP_ADDR $HTTP_ADDR is already in use" >&2; exit 1; }
else
  HTTP_HOST=127.0.0.1 HTTP_PORT=8080
  while port_busy "$HTTP_HOST" "$HTTP_PORT"; do HTTP_PORT=$((HTTP_PORT + 1)); done
  HTTP_ADDR="$HTTP_HOST:$HTTP_PORT" HTTP_URL="$HTTP_HOST:$HTTP_PORT"
  [[ $HTTP_PORT == 8080 ]] || note "port 8080 is busy: the worker's HTTP sidecar uses $HTTP_ADDR instead"
fi

printf '\n===== demo run %s =====\n' "$(date -Is)" >>"$LOG"
HTTP_ADDR="$HTTP_ADDR" KAFKA_GROUP_ID="$GROUP" LOG_LEVEL=info INVITE_SWEEP_INTERVAL_MS=1000 \
  "$WORKER" >>"$LOG" 2>&1 &
WORKER_PID=$!
echo "$WORKER_PID" >"$PIDFILE"
t0=$SECONDS
until [[ "$(http_code /readyz)" == 200 ]]; do
  kill -0 "$WORKER_PID" 2>/dev/null || { WORKER_PID=""; echo "worker exited during start-up" >&2; exit 1; }
  ((SECONDS - t0 < 60)) || { echo "worker not ready after 60s (/readyz $(http_code /readyz))" >&2; exit 1; }
  sleep 0.2
done
say "wallet-worker running (pid $WORKER_PID, http://$HTTP_URL, group $GROUP), ready after $((SECONDS - t0))s"
note "log: ${LOG#"$ROOT"/}"

# Commands an interrupted earlier run produced but did not get processed are
# consumed first (same group): let them finish before the wallets are re-seeded.
consumed() {
  curl -sf -m 2 "http://$HTTP_URL/metrics" \
    | awk '/^wallet_worker_messages_consumed_total\{topic="wallet.commands"/ {n += $NF} END {print n + 0}'
}
last=$(consumed); stable=0; t0=$SECONDS
while ((stable < 5 && SECONDS - t0 < 20)); do
  sleep 0.2
  now=$(consumed)
  if [[ $now == "$last" ]]; then stable=$((stable + 1)); else stable=0; last=$now; fi
done
((last == 0)) || note "first processed $last message(s) already waiting on wallet.commands (e.g. from an interrupted run)"

# -------------------------------------------------------------------- wallets
ASHA=64d0a0000000000000000a51
BILAL=64d0a0000000000000000b17
CHITRA=64d0a0000000000000000c4e
# a fresh owner id per run: nobody has a wallet, and its ledger shows only this run
NOBODY=$(printf '64d0dead%016x' "$(($(date +%s%N) / 1000))")
RUN="demo-$(date +%Y%m%d-%H%M%S)-$$"

heading "Three wallets with ₹100.00 each"
for who in ASHA BILAL CHITRA; do
  printf '   %-7s ' "${who,,}"
  "$WWTOOL" seed-wallet "${!who}" 10000
done
note "run stamp $RUN: every idempotencyKey starts with it, so re-runs never collide"

# ---------------------------------------------------------------------- batch
heading "A batch of 12 messages on wallet.commands"
say "5 that apply, asha-coffee resent (duplicate) and resent for ₹99.00 (conflict),"
say "₹500.00 from Bilal (insufficient_funds), an owner without a wallet (wallet_not_found),"
say "and 3 invalid: not JSON, amountPaise 10.5, ownerUserId {\"\$ne\": null}"
cmd() { # cmd <type> <key> <owner> <amount>
  printf '{"type":"wallet.%s","idempotencyKey":"%s-%s","ownerUserId":"%s","amountPaise":%s}\n' \
    "$1" "$RUN" "$2" "$3" "$4"
}
{
  cmd debit  asha-coffee    "$ASHA"   2500   # applied: 7500
  cmd credit bilal-refund   "$BILAL"  5000   # applied: 15000
  cmd debit  chitra-tickets "$CHITRA" 1200   # applied: 8800
  cmd debit  asha-coffee    "$ASHA"   2500   # the same command again: duplicate
  cmd debit  asha-coffee    "$ASHA"   9900   # same key, other amount: conflict
  cmd debit  bilal-laptop   "$BILAL"  50000  # more than ₹150.00: insufficient_funds
  cmd debit  chitra-snack   "$CHITRA" 800    # applied: 8000
  cmd credit asha-cashback  "$ASHA"   1000   # applied: 8500
  cmd debit  nobody-gift    "$NOBODY" 100    # no such wallet: wallet_not_found
  printf '%s-junk\tthis is not JSON\n' "$RUN"
  printf '{"type":"wallet.debit","idempotencyKey":"%s-asha-fraction","ownerUserId":"%s","amountPaise":10.5}\n' "$RUN" "$ASHA"
  printf '{"type":"wallet.debit","idempotencyKey":"%s-injection","ownerUserId":{"$ne":null},"amountPaise":100}\n' "$RUN"
} | "$WWTOOL" produce wallet.commands | indent

# -------------------------------------------------------------------- results
heading "Result events on wallet.results (one per message)"
"$WWTOOL" results wallet.results --count 12 --match "$RUN" --timeout-ms 30000 | indent
note "amounts and balances in paise; same-owner commands share a partition, so they stay in order"

heading "Dead letters on wallet.commands.dlq"
"$WWTOOL" results wallet.commands.dlq --count 3 --match "$RUN" --timeout-ms 15000 | indent

heading "Balances and ledgers in MongoDB (newest first)"
"$WWTOOL" wallets "$ASHA" "$BILAL" "$CHITRA" "$NOBODY" | indent

# -------------------------------------------------------------------- invites
heading "Invite events on invite.events"
say "an agency invites a brand (created), the brand signs up (used), the same event"
say "again (duplicate), a late revoke (rejected: already used), a used event for an"
say "unknown code (dead-lettered), and an invite that expired yesterday (the sweeper,"
say "every second in this demo, marks it expired; MongoDB's TTL index deletes it 30 days later)"
INV="$RUN-inv"
SWEPT_BEFORE=$(grep -c "sweeper expired=" "$LOG" || true)
TOMORROW=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
YESTERDAY=$(date -u -d '-1 day' +%Y-%m-%dT%H:%M:%SZ)
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# ev <type> <event> <code> <fields>: KEY<TAB>VALUE, the key is the invite code
ev() { printf '%s\t{"type":"invite.%s","eventId":"%s-%s","code":"%s",%s}\n' "$3" "$1" "$INV" "$2" "$3" "$4"; }
{
  ev created e1 "$INV-BRAND"  "\"parentCode\":\"AGENCY-7\",\"role\":\"brand\",\"expiresAt\":\"$TOMORROW\""
  ev used    e2 "$INV-BRAND"  "\"usedByUserId\":\"$BILAL\",\"occurredAt\":\"$NOW\""
  ev used    e2 "$INV-BRAND"  "\"usedByUserId\":\"$BILAL\",\"occurredAt\":\"$NOW\""
  ev revoked e3 "$INV-BRAND"  "\"occurredAt\":\"$NOW\""
  ev used    e4 "$INV-NOSUCH" "\"usedByUserId\":\"$ASHA\",\"occurredAt\":\"$NOW\""
  ev created e5 "$INV-OLD"    "\"parentCode\":\"AGENCY-7\",\"role\":\"mediator\",\"expiresAt\":\"$YESTERDAY\""
} \
  | "$WWTOOL" produce invite.events | indent
heading "Invite results on invite.results"
"$WWTOOL" results invite.results --count 6 --match "$INV" --timeout-ms 30000 | indent
say "the invite that expired yesterday, as the sweeper logs it:"
for _ in $(seq 20); do
  (($(grep -c "sweeper expired=" "$LOG") > SWEPT_BEFORE)) && break
  sleep 0.5
done
grep "sweeper expired=" "$LOG" | tail -n 1 | cut -d' ' -f2- | indent
say "dead letter:"
"$WWTOOL" results invite.events.dlq --count 1 --match "$INV" --timeout-ms 15000 | indent

# ------------------------------------------------------------ health, metrics
heading "Health and metrics"
say "GET /api/health"
if command -v jq >/dev/null 2>&1; then
  curl -sf -m 5 "http://$HTTP_URL/api/health" | jq . | indent | indent
else
  curl -sf -m 5 "http://$HTTP_URL/api/health" | indent | indent
  echo
fi
say "GET /metrics (excerpt)"
curl -sf -m 5 "http://$HTTP_URL/metrics" \
  | grep -E '^wallet_worker_(messages_processed_total|dead_letters_total)' | indent | indent || true

# ----------------------------------------------------------------------- stop
heading "Stopping the worker (SIGTERM)"
t0=$(date +%s%N)
rc=0
stop_worker TERM || rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
if ((rc == 0)); then
  say "${G}wallet-worker exited with status 0 after ${ms} ms${N} (log: ${LOG#"$ROOT"/})"
else
  say "${R}wallet-worker exited with status $rc${N}"
  exit 1
fi

printf '\n%sDone.%s The stack is still running (Kafka %s, %s %s);\n' "$B" "$N" \
  "$KAFKA_BROKERS" "$MONGO_IMPL" "${MONGODB_URI#mongodb://}"
if [[ "$STACK_DIR" == "$ROOT/.stack" ]]; then
  printf 'scripts/stack.sh down stops it. Run this demo again any time.\n'
else
  printf 'WW_STACK_DIR=%s scripts/stack.sh down stops it. Run this demo again any time.\n' "$STACK_DIR"
fi
