#!/usr/bin/env bash
# bench/exec: N invocations of `true` through `braid run` with 2 slots, against
# `xargs -P2` running `true` N times, in interleaved rounds of the same run
# (the machine is shared and noisy: compare within a round). Then the local
# executor alone (bench-exec): its throughput and the latency from a ready
# invocation to its process existing (median, p99).
#
# usage: bench/exec.sh [N=10000] [ROUNDS=3]   (builds build-rel if needed)
# Target: braid/xargs <= 1.3.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
ROUNDS=${2:-3}
[ -x build-rel/braid ] || { cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build-rel -j"$(nproc)" >/dev/null; }
BRAID=$PWD/build-rel/braid
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
results=()
for r in $(seq "$ROUNDS"); do
  t0=$(now); seq "$N" | xargs -P2 -I{} true; t1=$(now)
  x=$(echo "$t1 - $t0" | bc -l)
  for sync in full normal; do
    rm -rf "$work"/b*
    t0=$(now)
    (cd "$work" && "$BRAID" run "$OLDPWD/bench/exec-true.json" --store "b.db?sync=$sync" --slots 2 --quiet --set n="$N" 2>/dev/null)
    t1=$(now)
    b=$(echo "$t1 - $t0" | bc -l)
    printf 'round %d: xargs -P2 %.3f s, braid run (sync=%s) %.3f s, ratio %.2f\n' "$r" "$x" "$sync" "$b" "$(echo "$b / $x" | bc -l)"
    results+=("$sync $(echo "$b / $x" | bc -l)")
  done
done
for sync in full normal; do
  printf '%s\n' "${results[@]}" | awk -v s="$sync" '$1 == s {print $2}' | sort -n |
    awk -v s="$sync" '{v[NR] = $1} END {printf "braid run (sync=%s) / xargs -P2: best %.2f, median %.2f over %d rounds (target <= 1.3)\n", s, v[1], v[int((NR + 1) / 2)], NR}'
done
echo
echo "local executor alone (bench-exec):"
./build-rel/bench-exec 2>&1 | tail -4
