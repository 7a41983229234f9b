#!/usr/bin/env bash
# The private Slurm cluster works as the slurm executor needs it to (ctest
# fixture `slurm`, SLURM_CONF from the fixture): a job array runs every
# element, a job asking for cores and memory runs, and scancel of a running
# and of a pending job shows CANCELLED in `squeue -t all`. Fails, never skips,
# when there is no cluster. Looks only at its own jobs: other tests share the
# cluster.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }

[ -n "${SLURM_CONF:-}" ] ||
  fail "SLURM_CONF is not set: run through ctest (fixture slurm) or eval \"\$(scripts/slurm-cluster.sh env DIR)\""
[ -f "$SLURM_CONF" ] ||
  fail "no cluster: $SLURM_CONF does not exist (did slurm_cluster_start fail? see its output)"
for b in sbatch squeue scancel; do
  command -v "$b" >/dev/null || fail "$b is not installed (scripts/deps.sh installs slurm-client)"
done
timeout 10 squeue -h -o %i >/dev/null ||
  fail "the controller does not answer (SLURM_CONF=$SLURM_CONF; logs in $(dirname "$SLURM_CONF")/log)"

work=$(mktemp -d)
ours=()
cleanup() {
  [ ${#ours[@]} -eq 0 ] || scancel --quiet "${ours[@]}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# STATE of every element of job $1 (one line each: ID|STATE|REASON)
states() { squeue -h -r -t all -j "$1" -o '%i|%T|%r' 2>/dev/null || true; }

# wait until job $1 has $2 elements, all in a finished state; at most $3 s
wait_done() {
  local id=$1 n=$2 limit=$3 deadline=$((SECONDS + $3)) s
  while [ $SECONDS -lt $deadline ]; do
    s=$(states "$id")
    if [ "$(grep -cE '\|(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE)\|' <<<"$s")" -eq "$n" ]; then
      return 0
    fi
    sleep 0.2
  done
  echo "job $id after ${limit} s:" >&2
  states "$id" >&2
  return 1
}

# until job $1 (one element) is in state $2; at most $3 s
wait_state() {
  local deadline=$((SECONDS + $3))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(states "$1" | cut -d'|' -f2)" = "$2" ] && return 0
    sleep 0.2
  done
  echo "job $1 is not $2 after $3 s:" >&2
  states "$1" >&2
  return 1
}

# 1. an array of 10, each element writing its own file
arr=$(sbatch --parsable --array=0-9 -J smoke-array -o "$work/out-%a.log" \
  --wrap "echo \"\$SLURM_ARRAY_TASK_ID\" >'$work/done-'\"\$SLURM_ARRAY_TASK_ID\"") ||
  fail "sbatch of an array failed"
arr=${arr%%;*}
ours+=("$arr")
wait_done "$arr" 10 60 || fail "the array did not finish within 60 s"
bad=$(states "$arr" | grep -v '|COMPLETED|' || true)
[ -z "$bad" ] || fail "array elements did not complete: $bad"
for i in $(seq 0 9); do
  [ "$(cat "$work/done-$i" 2>/dev/null)" = "$i" ] || fail "element $i wrote no file (log: $(cat "$work/out-$i.log" 2>/dev/null))"
done
echo "ok: array of 10 ran every element"

# 2. cores and memory as the executor asks for them (-c, --mem)
res=$(sbatch --parsable -J smoke-res -c 2 --mem=2048 -o "$work/res.log" --wrap 'echo "cpus=$SLURM_CPUS_ON_NODE"') ||
  fail "sbatch -c 2 --mem=2048 failed"
ours+=("$res")
wait_done "$res" 1 60 || fail "the job with -c 2 --mem=2048 did not finish within 60 s"
states "$res" | grep -q '|COMPLETED|' || fail "the job with -c 2 --mem=2048 did not complete: $(states "$res")"
grep -q 'cpus=2' "$work/res.log" || fail "the job with -c 2 did not get 2 CPUs: $(cat "$work/res.log")"
echo "ok: -c 2 --mem=2048"

# 3. scancel of a running job and of a pending one
run=$(sbatch --parsable -J smoke-run -o /dev/null --wrap 'sleep 300') || fail "sbatch failed"
ours+=("$run")
pend=$(sbatch --parsable -J smoke-pend -o /dev/null --begin=now+3600 --wrap true) || fail "sbatch --begin failed"
ours+=("$pend")
wait_state "$run" RUNNING 30 || fail "sleep 300 did not start"
wait_state "$pend" PENDING 10 || fail "a job with --begin in an hour is not pending"
scancel "$run" "$pend" || fail "scancel failed"
wait_state "$run" CANCELLED 30 || fail "the running job is not CANCELLED after scancel"
wait_state "$pend" CANCELLED 10 || fail "the pending job is not CANCELLED after scancel"
echo "ok: scancel of a running and a pending job: CANCELLED"
echo "PASS"
