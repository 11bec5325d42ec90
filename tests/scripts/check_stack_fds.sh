#!/usr/bin/env bash
# The servers scripts/stack.sh starts inherit none of its caller's file descriptors. A caller
# that holds a lock while it starts a stack (`flock LOCK scripts/stack.sh up`, as the helpers
# of a shared machine do) must get the lock back when stack.sh returns; a server that kept
# the lock's descriptor would hold the lock for as long as it runs, and every later
# `flock LOCK ...` would wait for that stack to stop. Starts one FerretDB in a temporary stack
# folder on free ports and stops it again.
#
# Usage: check_stack_fds.sh <source dir>
set -euo pipefail
SRC=$(cd "${1:?usage: check_stack_fds.sh <source dir>}" && pwd)
TMP=$(mktemp -d)
# Free ports below the ephemeral range (an outgoing connection cannot take them before the
# server binds) and away from every stack's ports: 27100-27999, from a pid-derived start.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p i
  for ((i = 0; i < 900; i++)); do
    p=$((27100 + ($$ + i + ${1:-0}) % 900))
    port_busy "$p" || { echo "$p"; return 0; }
  done
  echo "check_stack_fds.sh: no free port in 27100-27999" >&2; return 1
}
P=$(free_port 0)
export WW_STACK_DIR="$TMP/stack" MONGO_PORT=$P MONGO_TLS_PORT=$(free_port 450) MONGO_IMPL=ferretdb
cleanup() { "$SRC/scripts/stack.sh" down >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT

exec 9>"$TMP/caller.lock"
flock 9                                        # the caller's lock, held on fd 9 like flock(1) does
"$SRC/scripts/stack.sh" mongo-start >"$TMP/start.log" 2>&1 || { cat "$TMP/start.log"; echo "FAIL: stack.sh mongo-start failed"; exit 1; }
exec 9>&-                                      # the caller is done with its lock
pid=$(<"$WW_STACK_DIR/mongo.pid")
leaked=$(ls -l "/proc/$pid/fd" 2>/dev/null | awk '$NF ~ /caller\.lock/ {print $(NF-2)}' || true)
if [[ -n "$leaked" ]] || ! flock -n "$TMP/caller.lock" true; then
  echo "FAIL: the FerretDB that stack.sh started (pid $pid) holds its caller's lock file on fd ${leaked:-?}:"
  echo "      servers must be started with the caller's descriptors above 2 closed (launch() in scripts/stack.sh)"
  exit 1
fi
echo "ok: the server stack.sh started inherited no descriptor of its caller (the caller's lock is free)"
