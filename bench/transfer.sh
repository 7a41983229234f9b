#!/usr/bin/env bash
# Builds braid (release) and runs bench-transfer: braid push/pull against an
# rsync daemon on loopback, and through the test proxy with 30 ms RTT and a
# 200 Mbit/s cap. The depot runs as `braid depot`, a process of its own, as
# a studio runs it (and as the rsync daemon runs). Arguments go to
# bench-transfer:
#   bench/transfer.sh --quick            # about a tenth of the sizes: minutes
#   bench/transfer.sh                    # the full cases (needs ~60 GB of disk)
#   bench/transfer.sh --only large       # one case: small, medium, large, latency
#   bench/transfer.sh --repeat 5         # medians of 5 runs (a shared machine is noisy)
#   bench/transfer.sh --no-page-reporting  # on a VM whose balloon takes freed memory
#                                        # back: off for the run (root), see README
# Work files go to /var/tmp (same disk as cp's baseline) unless --dir DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BRAID_BENCH_BUILD:-build-bench}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target bench-transfer braid >/dev/null
exec "$BUILD/bench-transfer" --braid "$(cd "$BUILD" && pwd)/braid" "$@"
