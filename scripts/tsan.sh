#!/usr/bin/env bash
# Runs braid's test suite under ThreadSanitizer: builds build-tsan with
# -fsanitize=thread and runs ctest there (all tests, or those whose names
# match the ctest -R pattern given). A data race, a lock-order inversion or
# a use of a destroyed mutex fails the test it happens in (exit code 66),
# in the test program or in any braid process it starts; the report is in
# the test's output. Known reports from libraries are in scripts/tsan.supp.
# Not part of scripts/test.sh (ASan and UBSan): run it after changes to
# threaded code (pull's writers, the depot, the servers, the agent).
#
# usage: scripts/tsan.sh [PATTERN]   e.g. scripts/tsan.sh xfer
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD=${BRAID_TSAN_BUILD:-build-tsan}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DBRAID_TSAN=ON >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp}
cd "$BUILD" && ctest --output-on-failure -j "$(nproc)" --timeout 2400 ${1:+-R "$1"}
