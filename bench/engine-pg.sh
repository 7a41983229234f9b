#!/usr/bin/env bash
# bench/engine on both stores: SQLite, then PostgreSQL in a private cluster
# (a temporary folder, unix socket only), stopped at the end.
# usage: bench/engine-pg.sh [--ks 1,10,100,1000]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build-rel/bench-engine ] || { cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build-rel -j"$(nproc)" >/dev/null; }
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
dir=$(mktemp -d)
as_pg() { if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$bin/initdb" -D "$dir/data" -A trust -U braid -E UTF8 >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-k $dir -c listen_addresses=''" start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null; rm -rf "$dir"' EXIT
./build-rel/bench-engine --pg "postgresql://braid@/postgres?host=$dir" "$@"
