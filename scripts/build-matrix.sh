#!/usr/bin/env bash
# Builds every standard CMake build type (Debug, RelWithDebInfo, Release,
# MinSizeRel) with gcc and with clang, warnings as errors (-Werror is in
# CMakeLists.txt), into build-matrix/<compiler>-<type>. Exit 1 on the first
# build that fails. Called by scripts/test.sh; usable alone:
#   scripts/build-matrix.sh [--types "Release MinSizeRel"] [--compilers "gcc clang"]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TYPES="Debug RelWithDebInfo Release MinSizeRel"
COMPILERS="gcc clang"
while [ $# -gt 0 ]; do
  case "$1" in
    --types) TYPES="$2"; shift 2 ;;
    --compilers) COMPILERS="$2"; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-matrix.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
JOBS=$(nproc 2>/dev/null || echo 2)
for cc in $COMPILERS; do
  command -v "$cc" >/dev/null || { echo "build-matrix.sh: $cc not installed" >&2; exit 1; }
  for type in $TYPES; do
    dir="build-matrix/$cc-$type"
    printf '[build-matrix] %s %s\n' "$cc" "$type"
    if ! { CC="$cc" cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" >/dev/null &&
           cmake --build "$dir" -j"$JOBS" >"$dir.log" 2>&1; }; then
      grep -E 'error|warning' "$dir.log" | head -20 >&2 || true
      echo "build-matrix.sh: $cc $type FAILED (log: $dir.log)" >&2
      exit 1
    fi
  done
done
echo "[build-matrix] all builds clean"
