#!/usr/bin/env bash
# Installs what is missing, builds braid, and runs the reference scenario
# (examples/wedge-mosaic.json) on the embedded default: one process, SQLite,
# local slots. The movie lands in ./wedge-mosaic-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"
./build/braid run examples/wedge-mosaic.json --store wedge-mosaic-out/braid.db "$@"
