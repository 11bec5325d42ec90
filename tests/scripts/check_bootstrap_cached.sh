#!/usr/bin/env bash
# scripts/bootstrap.sh on a complete cache is a no-op: it must not rebuild, re-resolve or
# replace anything under WW_CACHE, because the servers of running stacks (other worktrees,
# other engineers) load their jars, binaries and the mongo-java-server launcher from there.
# A fake but complete cache (empty jars, stub binaries that report the pinned versions) is
# built in a temp dir; a bootstrap that wanted to rebuild anything would fail on it or
# change it, and either fails this test. The launcher's old-style classes/ folder is older
# than the source, as in a fresh checkout or another worktree.
#
# Usage: check_bootstrap_cached.sh <source dir>
set -euo pipefail
SRC=$(cd "${1:?usage: check_bootstrap_cached.sh <source dir>}" && pwd)
for t in java javac mvn sha256sum; do
  command -v "$t" >/dev/null || { echo "FAIL: $t is not installed (scripts/bootstrap.sh installs it)"; exit 1; }
done
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
C="$TMP/cache"
ver() { sed -n "s/^$1=\"\${$1:-\(.*\)}\"\$/\1/p" "$SRC/scripts/bootstrap.sh"; }
KV=$(ver KAFKA_VERSION) FV=$(ver FERRETDB_VERSION) MV=$(ver MJS_VERSION) HV=$(ver HELM_VERSION)
[[ -n "$KV" && -n "$FV" && -n "$MV" && -n "$HV" ]] || { echo "FAIL: cannot read the version defaults of scripts/bootstrap.sh"; exit 1; }

mkdir -p "$C/kafka-$KV/libs" "$C/mongo-java-server-$MV/libs" "$C/bin"
touch "$C/kafka-$KV/.complete" "$C/kafka-$KV/libs/kafka_2.13-$KV.jar"
m="$C/mongo-java-server-$MV"
for j in mongo-java-server-$MV mongo-java-server-core-$MV mongo-java-server-memory-backend-$MV \
         mongo-java-server-h2-backend-$MV h2-2.3.232 slf4j-simple-2.0.17; do touch "$m/libs/$j.jar"; done
touch "$m/.complete"
launcher="$m/classes-$(sha256sum "$SRC/scripts/MongoJavaServerLauncher.java" | cut -c1-16)"
mkdir -p "$m/classes" "$launcher"
touch -d '2001-01-01' "$m/classes/MongoJavaServerLauncher.class"
touch "$launcher/MongoJavaServerLauncher.class"
# as the real one: the version first, then more lines, later (a check that stops reading at
# the version line, `| grep -q` under pipefail, sees this writer die of SIGPIPE: CI's
# bootstrap once rebuilt FerretDB, and then refused the rebuilt binary, that way)
printf '#!/bin/sh\necho "version: %s"\nsleep 0.3\necho "commit: unknown"\necho "branch: unknown"\n' "$FV" >"$C/bin/ferretdb"
printf '#!/bin/sh\nprintf %%s "%s"\n' "$HV" >"$C/bin/helm"
chmod +x "$C/bin/ferretdb" "$C/bin/helm"
touch "$C/.bootstrap.lock" # made by the first bootstrap; its flock is the one write allowed

snapshot() { (cd "$C" && find . ! -name .bootstrap.lock -printf '%p %y %s %T@ %i\n' | sort); }
snapshot >"$TMP/before"
out=$(WW_CACHE="$C" WW_SKIP_APT=1 "$SRC/scripts/bootstrap.sh" 2>&1) || {
  echo "$out"; echo "FAIL: bootstrap.sh on a complete cache tried to rebuild something and failed (see above)"; exit 1; }
echo "$out"
snapshot >"$TMP/after"
if ! diff -u "$TMP/before" "$TMP/after"; then
  echo "FAIL: bootstrap.sh on a complete cache changed files under WW_CACHE (diff above: path type size mtime inode);"
  echo "      a running stack uses them. Every step must be skipped when its output is present."
  exit 1
fi
echo "ok: bootstrap.sh left a complete cache untouched"
