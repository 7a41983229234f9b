#!/usr/bin/env bash
# Runs braid's fuzz targets (fuzz/fuzz-NAME.c) with libFuzzer, under
# AddressSanitizer and UndefinedBehaviorSanitizer, each for SECONDS (60 by
# default), from its seeds in fuzz/corpus/NAME. Inputs that reach new code
# are kept in build-fuzz/corpus/NAME; a failing input is written to
# build-fuzz/crashes/ and the script stops with its name. To keep a failure
# as a test, fix it and copy the input into fuzz/corpus/NAME: ctest replays
# every seed there (fuzz/replay.c) with the ordinary build.
#
# usage: scripts/fuzz.sh [SECONDS] [NAME...]   e.g. scripts/fuzz.sh 600 manifest bundle
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
[ $# -gt 0 ] && shift
bash scripts/deps.sh --fuzz
BUILD=${BRAID_FUZZ_BUILD:-build-fuzz}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in fuzz/fuzz-*.c; do n=${f#fuzz/fuzz-}; names+=("${n%.c}"); done
fi
CC=clang cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DBRAID_SANITIZE=ON -DBRAID_FUZZ=ON >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target "${names[@]/#/fuzz-}"
mkdir -p "$BUILD/crashes"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for n in "${names[@]}"; do
  mkdir -p "$BUILD/corpus/$n"
  echo "fuzz: $n for ${SECS}s"
  if ! "$BUILD/fuzz-$n" -max_total_time="$SECS" -print_final_stats=1 -max_len=65536 \
      -artifact_prefix="$BUILD/crashes/$n-" "$BUILD/corpus/$n" "fuzz/corpus/$n" 2>"$BUILD/fuzz-$n.log"; then
    tail -40 "$BUILD/fuzz-$n.log"
    echo "fuzz: $n failed; the input is in $BUILD/crashes/ (full log: $BUILD/fuzz-$n.log)" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$BUILD/fuzz-$n.log" | tr '\n' ' '
  echo
done
