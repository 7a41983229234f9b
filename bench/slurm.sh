#!/usr/bin/env bash
# bench/slurm: N invocations of `true` through `braid run --executor slurm`
# (which submits them as job arrays) against the same N jobs submitted by
# plain `sbatch --wrap true` in a shell loop and waited for by polling squeue
# every 0.2 s, on a private one-node cluster (scripts/slurm-cluster.sh),
# in interleaved rounds of the same run. Each measurement starts on a freshly
# started cluster (not timed), so no run sees another's finished jobs.
#
# usage: bench/slurm.sh [--quick] [N=1000] [ROUNDS=3]   (--quick: N=200)
#   BRAID=path/to/braid (default build-rel/braid, built if needed)
#   BRAID_SLURM_CPUS=64: CPUs the node declares (jobs at once); Slurm 22.05
#   starts pending jobs mostly on a 1-second tick, about that many per second.
# Prints both times and sbatch-loop / braid (higher is better). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
N=1000
if [ "${1:-}" = --quick ]; then N=200; shift; fi
N=${1:-$N}
ROUNDS=${2:-3}
export BRAID_SLURM_CPUS=${BRAID_SLURM_CPUS:-64}
if [ -z "${BRAID:-}" ]; then
  [ -x build-rel/braid ] || { cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build-rel -j"$(nproc)" >/dev/null; }
  BRAID=$PWD/build-rel/braid
fi
SRC=$PWD
work=$(mktemp -d)
cluster=$work/cluster
trap 'bash "$SRC/scripts/slurm-cluster.sh" stop "$cluster" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
export SLURM_CONF=$cluster/slurm.conf
now() { date +%s.%N; }

fresh_cluster() { bash scripts/slurm-cluster.sh start "$cluster" >"$work/cluster.log" 2>&1 || { cat "$work/cluster.log" >&2; exit 1; }; }

# number of jobs (array elements counted one by one) in each state, e.g. "1000 COMPLETED"
job_states() { squeue -h -r -t all -o %T | sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}'; }

# N jobs by sbatch in a loop, then poll squeue until none is left to run.
# Prints the seconds taken.
baseline() {
  local t0 t1 i left
  t0=$(now)
  for ((i = 0; i < N; i++)); do
    sbatch --parsable -o /dev/null -J true --wrap true >/dev/null
  done
  while :; do
    left=$(squeue -h -t PD,R,CG,CF,S,RQ,RS,RH,SO,SI,ST -o %i | wc -l)
    [ "$left" -eq 0 ] && break
    sleep 0.2
  done
  t1=$(now)
  local done
  done=$(squeue -h -r -t CD -o %i | wc -l)
  [ "$done" -eq "$N" ] || { echo "baseline: $done of $N jobs COMPLETED ($(job_states))" >&2; exit 1; }
  echo "$t1 - $t0" | bc -l
}

# braid run through the slurm executor; prints the seconds taken, or fails
# (its output is in $work/braid.err).
braid_run() {
  local t0 t1 rc=0
  rm -rf "$work"/s.db*
  t0=$(now)
  (cd "$work" && timeout $((300 + N)) "$BRAID" run "$SRC/bench/slurm-true.json" --store "$work/s.db" \
    --executor slurm --slurm-listen 127.0.0.1:0 --quiet --set n="$N" >"$work/braid.err" 2>&1) || rc=$?
  t1=$(now)
  [ "$rc" -eq 0 ] || { echo "exit status $rc" >>"$work/braid.err"; return 1; }
  echo "$t1 - $t0" | bc -l
}

echo "bench/slurm: $N jobs of \`true\`, $ROUNDS rounds, one node declaring $BRAID_SLURM_CPUS CPUs (Slurm $(dpkg-query -W -f="\${Version}" slurm-client 2>/dev/null))"
braid_ok=1
ratios=()
bases=()
for r in $(seq "$ROUNDS"); do
  fresh_cluster
  s=$(baseline)
  bases+=("$s")
  if [ "$braid_ok" = 1 ]; then
    fresh_cluster
    if b=$(braid_run); then
      jobs=$(squeue -h -r -t all -o %i | wc -l)
      ratio=$(echo "$s / $b" | bc -l)
      ratios+=("$ratio")
      printf 'round %d: sbatch loop %.3f s, braid run --executor slurm %.3f s (%s Slurm jobs: %s), ratio %.2f\n' \
        "$r" "$s" "$b" "$jobs" "$(job_states)" "$ratio"
      continue
    fi
    braid_ok=0
    echo "braid run --executor slurm FAILED (is the slurm executor in $BRAID?); its output:" >&2
    awk '{l[NR] = $0} END {for (i = 1; i <= NR; i++) if (NR <= 14 || i <= 6 || i > NR - 6) print "  | " l[i]; else if (i == 7) print "  | ..."}' "$work/braid.err" >&2
    echo "measuring the baseline only from now on" >&2
  fi
  printf 'round %d: sbatch loop %.3f s (%.1f jobs/s)\n' "$r" "$s" "$(echo "$N / $s" | bc -l)"
done
printf '%s\n' "${bases[@]}" | sort -n |
  awk -v n="$N" '{v[NR] = $1} END {m = v[int((NR + 1) / 2)]; printf "sbatch loop: median %.3f s (%.1f jobs/s) over %d rounds\n", m, n / m, NR}'
if [ ${#ratios[@]} -gt 0 ]; then
  printf '%s\n' "${ratios[@]}" | sort -n |
    awk '{v[NR] = $1} END {printf "sbatch loop / braid run --executor slurm: median %.2f, worst %.2f, best %.2f over %d rounds (higher is better)\n", v[int((NR + 1) / 2)], v[1], v[NR], NR}'
else
  echo "no braid figures: braid run --executor slurm failed (see above); only the baseline was measured" >&2
  exit 1
fi
