#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, ASan and UBSan, and
# runs each for a bounded time on its seed corpus. Fails on any crash, leak,
# sanitizer report, timeout or broken invariant (the targets abort).
#   fuzz_command  ww_command_parse   seeds: tests/fuzz/corpus/command + wallet-commands fixtures
#   fuzz_invite   ww_invite_parse    seeds: tests/fuzz/corpus/invite + invite-events fixtures
#   fuzz_lines    apply's line reader seeds: tests/fuzz/corpus/lines
# New inputs go to a scratch corpus (WW_FUZZ_WORK, default build-fuzz/corpus),
# never into the repository; a crashing input is kept as
# build-fuzz/crash-<target>-* and its path printed. To keep one as a
# regression seed, copy it into tests/fuzz/corpus/<target>/.
#
# Options: --seconds N (per target, default 60), --target NAME (repeatable;
# default all), --no-build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECONDS_PER=60
TARGETS=()
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER="$2"; shift 2 ;;
    --target) TARGETS+=("$2"); shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ "$SECONDS_PER" =~ ^[0-9]+$ ]] && [ "$SECONDS_PER" -gt 0 ] ||
  { echo "fuzz.sh: --seconds needs a positive integer" >&2; exit 2; }
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(command invite lines)

BUILD_DIR="$ROOT/build-fuzz"
WORK="${WW_FUZZ_WORK:-$BUILD_DIR/corpus}"
if [ "$BUILD" = 1 ]; then
  command -v clang >/dev/null || { echo "fuzz.sh: clang is missing (scripts/bootstrap.sh)" >&2; exit 1; }
  CC=clang cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Debug -DWW_SANITIZE=ON -DWW_FUZZ=ON >/dev/null
  cmake --build "$BUILD_DIR" -j"$(nproc 2>/dev/null || echo 2)" \
    --target "${TARGETS[@]/#/fuzz_}"
fi

seeds_for() {
  case "$1" in
    command) echo "tests/fuzz/corpus/command tests/fixtures/wallet-commands/valid tests/fixtures/wallet-commands/invalid" ;;
    invite) echo "tests/fuzz/corpus/invite tests/fixtures/invite-events/valid tests/fixtures/invite-events/invalid" ;;
    lines) echo "tests/fuzz/corpus/lines" ;;
    *) echo "fuzz.sh: unknown target $1" >&2; return 1 ;;
  esac
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
for t in "${TARGETS[@]}"; do
  seeds=$(seeds_for "$t")
  mkdir -p "$WORK/$t"
  log="$BUILD_DIR/fuzz_$t.log"
  printf '=== fuzz_%s: %s s\n' "$t" "$SECONDS_PER"
  # -max_len fits a 64 KiB message; -timeout catches a hang of one input
  # shellcheck disable=SC2086
  if "$BUILD_DIR/tests/fuzz_$t" -max_total_time="$SECONDS_PER" -max_len=70000 -timeout=10 \
       -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$BUILD_DIR/crash-$t-" \
       "$WORK/$t" $seeds >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^#[0-9]+ *DONE' "$log" | tail -n 2 || true
  else
    echo "fuzz.sh: fuzz_$t FAILED, log: $log" >&2
    tail -n 40 "$log" >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#TARGETS[@]} target(s) ran ${SECONDS_PER} s each without a finding"
