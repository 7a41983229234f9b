#!/usr/bin/env bash
# bench/farm: one braid server against 1,000 simulated agents on loopback
# (bench/farm.c): dispatches per second with a backlog, the latency from a
# ready job to an agent holding it (median, p99) while agents wait, and the
# server's CPU and memory. Targets: >= 5,000 dispatches/s, p99 < 20 ms.
#
# usage: bench/farm.sh [bench-farm options: --agents N --tasks N --rate R --seconds S]
#        (builds build-rel if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build-rel/bench-farm ] || { cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build-rel -j"$(nproc)" >/dev/null; }
exec build-rel/bench-farm "$@"
