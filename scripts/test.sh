#!/usr/bin/env bash
# Sets up and runs every test tier on this machine:
#   1. unit tests (cmocka, no servers)
#   2. the same unit tests built with AddressSanitizer + UndefinedBehaviorSanitizer
#   3. scripts/fuzz.sh: each libFuzzer target (clang, ASan + UBSan) for
#      WW_FUZZ_SECONDS (default 60) on its seed corpus; a finding fails it
#   4. integration tests against a real Kafka broker and each MongoDB-compatible
#      server (FerretDB, then mongo-java-server), started by scripts/stack.sh
#   5. the integration tests once more with the sanitizer build of the worker
#   6. scripts/chaos.sh --small: fault injection, invariants checked
#   7. scripts/bench.sh --small: proves the benchmark runs (speed never fails it)
#   8. scripts/build-matrix.sh: every standard build type (Debug, RelWithDebInfo,
#      Release, MinSizeRel) with gcc and clang, warning-free (-Werror)
# A tier that cannot start its servers fails; nothing is skipped.
# The test stack lives in its own folder and ports (WW_TEST_STACK_DIR, default
# .stack-test) so a developer's own `scripts/stack.sh up` is never touched,
# and it is stopped on exit.
#
# Options: --unit (tiers 1-3 only), --no-asan (skip tiers 2 and 5), --no-fuzz,
# --no-chaos, --no-bench, --no-matrix: for quick local runs; CI runs everything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

UNIT_ONLY=0
ASAN=1
FUZZ=1
CHAOS=1
BENCH=1
MATRIX=1
for arg in "$@"; do
  case "$arg" in
    --unit) UNIT_ONLY=1 ;;
    --no-asan) ASAN=0 ;;
    --no-fuzz) FUZZ=0 ;;
    --no-chaos) CHAOS=0 ;;
    --no-bench) BENCH=0 ;;
    --no-matrix) MATRIX=0 ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf '\n=== %s\n' "$*"; }
JOBS=$(nproc 2>/dev/null || echo 2)

say "bootstrap"
"$ROOT/scripts/bootstrap.sh"

say "build (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"
if [ "$ASAN" = 1 ]; then
  say "build (ASan + UBSan)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWW_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$JOBS"
fi

PASSED=0
FAILED=0
FAILURES=()
# Runs ctest and adds its counts to the totals.
run_ctest() {
  local name="$1"; shift
  local out rc=0
  out=$(mktemp)
  ctest "$@" --output-on-failure 2>&1 | tee "$out" || rc=$?
  local line total failed
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -n1 || true)
  if [ -z "$line" ]; then
    echo "test.sh: $name: ctest ran no test or crashed (rc=$rc)" >&2
    FAILED=$((FAILED + 1)); FAILURES+=("$name: no result")
  else
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    if [ "$total" -eq 0 ]; then
      FAILED=$((FAILED + 1)); FAILURES+=("$name: zero tests")
    fi
    PASSED=$((PASSED + total - failed)); FAILED=$((FAILED + failed))
    [ "$failed" -eq 0 ] || FAILURES+=("$name: $failed failed")
  fi
  rm -f "$out"
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# A script tier counts as one test: its exit status decides.
run_script() {
  local name="$1"; shift
  say "$name"
  if "$@"; then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1)); FAILURES+=("$name (exit $?)")
  fi
}

say "unit tests"
run_ctest unit --test-dir build -L unit -j"$JOBS"
if [ "$ASAN" = 1 ]; then
  say "unit tests (ASan + UBSan)"
  run_ctest unit-asan --test-dir build-asan -L unit -j"$JOBS"
fi

FUZZ_SECONDS="${WW_FUZZ_SECONDS:-60}"
[ "$FUZZ" = 1 ] && run_script "fuzz ${FUZZ_SECONDS} s per target" \
  "$ROOT/scripts/fuzz.sh" --seconds "$FUZZ_SECONDS"

if [ "$UNIT_ONLY" = 0 ]; then
  export WW_STACK_DIR="${WW_TEST_STACK_DIR:-$ROOT/.stack-test}"
  export KAFKA_PORT="${WW_TEST_KAFKA_PORT:-29092}"
  export KAFKA_CONTROLLER_PORT="${WW_TEST_KAFKA_CONTROLLER_PORT:-29093}"
  export MONGO_PORT="${WW_TEST_MONGO_PORT:-28017}"
  trap '"$ROOT/scripts/stack.sh" down >/dev/null 2>&1 || true' EXIT
  for impl in ferretdb mongo-java-server; do
    say "integration tests: Kafka + $impl"
    MONGO_IMPL="$impl" "$ROOT/scripts/stack.sh" up
    eval "$(MONGO_IMPL="$impl" "$ROOT/scripts/stack.sh" env)"
    [ "$MONGO_IMPL" = "$impl" ] || { echo "test.sh: stack reports $MONGO_IMPL, wanted $impl" >&2; exit 1; }
    run_ctest "integration-$impl" --test-dir build -L integration
    if [ "$ASAN" = 1 ] && [ "$impl" = ferretdb ]; then
      say "integration tests: Kafka + $impl, sanitizer build"
      run_ctest "integration-$impl-asan" --test-dir build-asan -L integration
    fi
  done
  "$ROOT/scripts/stack.sh" down
  trap - EXIT

  [ "$CHAOS" = 1 ] && run_script "chaos --small" "$ROOT/scripts/chaos.sh" --small --no-build
  [ "$BENCH" = 1 ] && run_script "bench --small" env WW_BENCH_SKIP_SETUP=1 "$ROOT/scripts/bench.sh" --small
fi

[ "$MATRIX" = 1 ] && run_script "build matrix (gcc, clang x 4 build types)" "$ROOT/scripts/build-matrix.sh"

say "summary"
for f in "${FAILURES[@]+"${FAILURES[@]}"}"; do echo "  FAILED: $f"; done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
