#!/usr/bin/env bash
# scripts/stack.sh env and scripts/demo.sh honour a custom stack: WW_STACK_DIR, KAFKA_PORT,
# MONGO_PORT (given, or recorded by the stack dir's last `up`), and demo.sh takes HTTP_ADDR,
# so a second stack and the demo can run beside one already in use. No server is started.
#
# Usage: check_stack_env.sh <source dir>
set -euo pipefail
SRC=$(cd "${1:?usage: check_stack_env.sh <source dir>}" && pwd)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
# Hermetic: every script runs with only what each case sets, never the caller's
# stack (after `eval "$(scripts/stack.sh env)"` the shell exports MONGO_AUTH_PORT,
# KAFKA_SASL_SSL_PORT, MONGO_IMPL, ... which would otherwise win).
clean=(env -i PATH="$PATH" HOME="$HOME" TMPDIR="${TMPDIR:-/tmp}")
fail=0
bad() { echo "FAIL: $*"; fail=1; }
# expect <output> <line>: the env output has exactly this line
expect() { grep -qxF -- "$2" <<<"$1" || bad "stack.sh env ($3) lacks '$2'; it printed:"$'\n'"$1"; }

# 1. ports and folder given in the environment
out=$("${clean[@]}" WW_STACK_DIR="$TMP/a" KAFKA_PORT=41092 \
      KAFKA_CONTROLLER_PORT=41093 MONGO_PORT=41017 "$SRC/scripts/stack.sh" env)
expect "$out" "export KAFKA_BROKERS=127.0.0.1:41092" "ports given"
expect "$out" "export MONGODB_URI=mongodb://127.0.0.1:41017/wallet" "ports given"
expect "$out" "export KAFKA_SASL_SSL_BROKERS=127.0.0.1:41094" "ports given"
expect "$out" "export MONGO_AUTH_PORT=41019" "ports given"
expect "$out" "export WW_STACK_DIR=$TMP/a" "ports given"
expect "$out" "export WW_TLS_CA=$TMP/a/tls/ca.pem" "ports given"

# 2. only the folder given: the ports its last `up` recorded (the settings file it writes)
mkdir -p "$TMP/b"
printf '%s\n' KAFKA_PORT=42092 KAFKA_CONTROLLER_PORT=42093 MONGO_PORT=42017 KAFKA_SASL_SSL_PORT=42094 \
  MONGO_TLS_PORT=42018 MONGO_AUTH_PORT=42019 MONGO_IMPL=mongo-java-server MONGO_JAVA_BACKEND=h2 \
  >"$TMP/b/settings"
out=$("${clean[@]}" WW_STACK_DIR="$TMP/b" "$SRC/scripts/stack.sh" env)
expect "$out" "export KAFKA_BROKERS=127.0.0.1:42092" "recorded ports"
expect "$out" "export MONGODB_URI=mongodb://127.0.0.1:42017/wallet" "recorded ports"
expect "$out" "export MONGO_IMPL=mongo-java-server" "recorded ports"
expect "$out" "export WW_STACK_DIR=$TMP/b" "recorded ports"

# 3. demo.sh: no address or stack folder of its own. Every port, host:port or .stack in its
# code (comments aside) would be one that ignores WW_STACK_DIR, KAFKA_PORT, MONGO_PORT.
demo="$SRC/scripts/demo.sh"
hits=$(grep -nE '9092|9093|27017|2701[89]|localhost|\.stack' "$demo" | grep -vE '^[0-9]+:[[:space:]]*#' \
       | grep -vF '${WW_STACK_DIR:-$ROOT/.stack}' | grep -vF '"$ROOT/.stack" ]]' || true)
[[ -z "$hits" ]] || bad "scripts/demo.sh hard-codes a stack address or folder instead of using scripts/stack.sh env:"$'\n'"$hits"
grep -q 'unset[^#]*\b\(WW_STACK_DIR\|KAFKA_PORT\|MONGO_PORT\|HTTP_ADDR\)\b' "$demo" \
  && bad "scripts/demo.sh unsets WW_STACK_DIR/KAFKA_PORT/MONGO_PORT/HTTP_ADDR (they must select the stack)"
# demo.sh run from a copy whose bootstrap.sh is a stub that records where the demo writes
# and stops it (nothing is built or started): a malformed HTTP_ADDR is refused (exit 2)
# before anything runs, and the set-up logs go to the stack folder WW_STACK_DIR names.
mkdir -p "$TMP/root/scripts"
cp "$demo" "$TMP/root/scripts/demo.sh"
printf '#!/bin/sh
echo "stub bootstrap: stopping the demo here"
exit 97
' >"$TMP/root/scripts/bootstrap.sh"
chmod +x "$TMP/root/scripts/bootstrap.sh"
rc=0; "${clean[@]}" HTTP_ADDR=not-an-address WW_STACK_DIR="$TMP/c" "$TMP/root/scripts/demo.sh" >"$TMP/demo.out" 2>&1 || rc=$?
if [[ $rc != 2 ]] || ! grep -q "HTTP_ADDR must be IP:PORT" "$TMP/demo.out"; then
  bad "demo.sh with HTTP_ADDR=not-an-address: wanted exit 2 and 'HTTP_ADDR must be IP:PORT' before set-up, got exit $rc:"$'\n'"$(cat "$TMP/demo.out")"
fi
rc=0; "${clean[@]}" HTTP_ADDR=127.0.0.1:1 WW_STACK_DIR="$TMP/d" "$TMP/root/scripts/demo.sh" >"$TMP/demo.out" 2>&1 || rc=$?
if [[ $rc != 97 ]] || ! grep -q "stub bootstrap" "$TMP/d/demo-bootstrap.log" 2>/dev/null; then
  bad "demo.sh with WW_STACK_DIR=$TMP/d: wanted its set-up log in that folder (stub bootstrap, exit 97), got exit $rc:"$'\n'"$(cat "$TMP/demo.out")"
fi
[[ ! -e "$TMP/root/.stack" ]] || bad "demo.sh with WW_STACK_DIR set still wrote into <repo>/.stack"

((fail == 0)) && echo "ok: stack.sh env and demo.sh honour WW_STACK_DIR, KAFKA_PORT, MONGO_PORT, HTTP_ADDR"
exit "$fail"
