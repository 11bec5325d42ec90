#!/usr/bin/env bash
# The container image is built the way CI builds: the Dockerfile's cmake
# configure and build commands are the ones scripts/test.sh runs (only the
# test suites are left out of the image), and every Debian -dev package the
# image builds with is one scripts/bootstrap.sh installs for CI.
# Usage: check_dockerfile.sh <source dir>
set -euo pipefail
cd "$1"
fail=0
configure='cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo'
grep -q -- "$configure" scripts/test.sh || { echo "FAIL: scripts/test.sh does not configure with: $configure"; fail=1; }
grep -q -- "RUN $configure -DWW_BUILD_TESTS=OFF" Dockerfile \
  && echo "ok: the Dockerfile configures like CI: $configure (tests off)" \
  || { echo "FAIL: the Dockerfile does not configure with: $configure -DWW_BUILD_TESTS=OFF"; fail=1; }
grep -q -- 'cmake --build build' Dockerfile && grep -q -- 'cmake --build build' scripts/test.sh \
  && echo "ok: both build with cmake --build build" \
  || { echo "FAIL: the Dockerfile and scripts/test.sh do not both run cmake --build build"; fail=1; }
grep -q '^FROM debian:bookworm' Dockerfile && echo "ok: the image is Debian bookworm, like CI" \
  || { echo "FAIL: the build stage is not Debian bookworm"; fail=1; }
# -dev packages of the build stage must be in bootstrap's list
for pkg in $(sed -n '/AS build/,/^FROM/p' Dockerfile | grep -o '[a-z0-9.+-]*-dev' | sort -u); do
  if grep -q -- "$pkg" scripts/bootstrap.sh; then echo "ok: $pkg is installed by bootstrap too"
  else echo "FAIL: the Dockerfile builds with $pkg, which scripts/bootstrap.sh does not install"; fail=1; fi
done
grep -q '^ENV MONGOC_DISABLE_SHM=1' Dockerfile && echo "ok: libmongoc's shared-memory counters off" \
  || { echo "FAIL: no ENV MONGOC_DISABLE_SHM=1 (a killed worker leaves /dev/shm/mongoc-<pid>)"; fail=1; }
grep -q '^USER 10001' Dockerfile && echo "ok: runs as a non-root user" || { echo "FAIL: no non-root USER"; fail=1; }
joined=$(sed -e ':a' -e '/\\$/{N;s/\\\n//;ba}' Dockerfile) # whole, then matched: no SIGPIPE race
grep -q 'HEALTHCHECK.*livez' <<<"$joined" && echo "ok: HEALTHCHECK on /livez" || { echo "FAIL: no HEALTHCHECK on /livez"; fail=1; }
# .dockerignore keeps local builds and stacks out of the build context, and none of what
# the Dockerfile copies
if [[ -f .dockerignore ]]; then
  for p in build build-asan .stack .stack-h1; do
    python3 - "$p" <<'PY' && echo "ok: .dockerignore excludes $p" || { echo "FAIL: .dockerignore does not exclude $p"; fail=1; }
import fnmatch, sys
pats = [l.strip().rstrip("/") for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
sys.exit(0 if any(fnmatch.fnmatch(sys.argv[1], p) for p in pats) else 1)
PY
  done
  for p in $(grep '^COPY' Dockerfile | grep -v -- '--from' | awk '{print $2}'); do
    python3 - "$p" <<'PY' && echo "ok: .dockerignore keeps $p" || { echo "FAIL: .dockerignore excludes $p, which the Dockerfile copies"; fail=1; }
import fnmatch, sys
pats = [l.strip().rstrip("/") for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
sys.exit(1 if any(fnmatch.fnmatch(sys.argv[1], p) for p in pats) else 0)
PY
  done
else
  echo "FAIL: no .dockerignore (build/ and .stack*/ would be sent as build context)"; fail=1
fi
exit $fail
