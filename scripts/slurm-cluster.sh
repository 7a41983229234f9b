#!/usr/bin/env bash
# A private one-node Slurm cluster for braid's tests and benchmarks.
#
#   scripts/slurm-cluster.sh start DIR   # start it under DIR (created); waits until the node is idle
#   scripts/slurm-cluster.sh stop DIR    # cancel every job, shut it all down, wait (idempotent)
#   scripts/slurm-cluster.sh env DIR     # print `export SLURM_CONF=...` (also in DIR/env)
#   eval "$(scripts/slurm-cluster.sh env DIR)"; sbatch --wrap true
#
# Everything lives in DIR: its own munge key and socket, slurm.conf, state,
# spool, logs and pid files (the sockets go to /tmp when DIR's path is long).
# The daemons listen on loopback (see write_conf), on free ports chosen at
# each start, so two clusters, or a studio's own Slurm on this machine, do not
# collide. The node declares more CPUs than the machine has
# (SlurmdParameters=config_overrides; BRAID_SLURM_CPUS, default 8) and plenty
# of memory (BRAID_SLURM_MEMORY_MB, default 16384; nothing enforces it), so
# many small test jobs run at once. No accounting: squeue only, and finished
# jobs stay visible to it for MinJobAge (300 s).
#
# Slurm 22.05 starts pending jobs mostly on its 1-second background tick, not
# at once when others finish: short jobs run about BRAID_SLURM_CPUS per second.
#
# Needs root (slurmd starts jobs as their user; munged runs as `munge`) and
# Debian's slurmctld, slurmd, slurm-client and munge (scripts/deps.sh).
# Every daemon carries BRAID_SLURM_CLUSTER=DIR in its environment: `stop`
# ends exactly those, their slurmstepd and jobs, even after a partial start.
set -euo pipefail

usage() { echo "usage: $0 start|stop|env DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
DIR=$(realpath -m "$2")
CONF=$DIR/slurm.conf
CPUS=${BRAID_SLURM_CPUS:-8}
MEM=${BRAID_SLURM_MEMORY_MB:-16384}
START_TIMEOUT=${BRAID_SLURM_START_TIMEOUT:-30}
# munged's socket and slurmd's spool (slurmstepd's sockets) live in DIR when
# its path is short (unix socket paths are limited to 107 bytes) and the munge
# user can reach it; else in a folder in /tmp named after DIR. The choice made
# at start is kept in DIR/sockdir for stop.
set_sock() {
  if [ -s "$DIR/sockdir" ]; then
    SOCK=$(cat "$DIR/sockdir")
  elif [ ${#DIR} -le 60 ] && runuser -u munge -- test -x "$DIR" 2>/dev/null; then
    SOCK=$DIR
  else
    SOCK=/tmp/braid-slurmcluster-$(printf %s "$DIR" | sha256sum | cut -c1-16)
  fi
  MUNGE=$SOCK/munge
}
set_sock

die() { echo "slurm-cluster: $*" >&2; exit 1; }

# The tail of every log in DIR, for an error message.
logs_tail() {
  local f
  for f in "$DIR"/log/*.log "$MUNGE/munged.log"; do
    [ -s "$f" ] || continue
    echo "--- tail of $f" >&2
    tail -n 15 "$f" >&2
  done
}

# $1 runs (a zombie has exited: only its parent can reap it)
alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null &&
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# $1's environment in ENV, one variable per line, between newlines.
environ_of() {
  local -a vars=()
  ENV=
  mapfile -d '' vars 2>/dev/null <"/proc/$1/environ" || return 1
  local IFS=$'\n'
  ENV=$'\n'"${vars[*]}"$'\n'
}

# $1 runs and was started for this cluster: its environment holds the marker
# (so a stale pid file never names a stranger).
ours() {
  alive "$1" && environ_of "$1" && [[ $ENV == *$'\n'"BRAID_SLURM_CLUSTER=$DIR"$'\n'* ]]
}

# Every process of this cluster: those carrying the marker (the daemons),
# its slurmstepd (by their working folder), jobs of this cluster (SLURM_JOB_ID
# and this SLURM_CONF; still there if their slurmstepd died), and all their
# descendants.
our_pids() {
  local p st
  local -a f
  local -A parent=() mine=()
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    read -r st 2>/dev/null <"/proc/$p/stat" || continue
    read -ra f <<<"${st##*) }" # state ppid ...
    [ "${f[0]}" = Z ] && continue
    parent[$p]=${f[1]}
    environ_of "$p" || continue
    if [[ $ENV == *$'\n'"BRAID_SLURM_CLUSTER=$DIR"$'\n'* ]] ||
      [[ $ENV == *$'\n'"SLURM_CONF=$CONF"$'\n'* && $ENV == *$'\n'SLURM_JOB_ID=* ]]; then
      mine[$p]=1
    elif [ "/proc/$p/exe" -ef /usr/sbin/slurmstepd ]; then
      # slurmstepd overwrites its environment (its title): it is ours if it
      # works in this cluster's folders (slurmd's working folder, the log's)
      case $(readlink "/proc/$p/cwd" 2>/dev/null) in
        "$DIR" | "$DIR"/* | "$SOCK" | "$SOCK"/*) mine[$p]=1 ;;
      esac
    fi
  done
  local more=1
  while [ $more = 1 ]; do
    more=0
    for p in "${!parent[@]}"; do
      if [ -z "${mine[$p]:-}" ] && [ -n "${mine[${parent[$p]}]:-}" ]; then
        mine[$p]=1
        more=1
      fi
    done
  done
  echo "${!mine[@]}"
}

pidfile_pid() { [ -s "$1" ] && cat "$1" 2>/dev/null || true; }

# A port no TCP socket uses (from /proc/net/tcp*: no iproute2 needed), and
# not one of those given.
free_port() {
  local used p f
  used=$(for f in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$f" ] && tail -n +2 "$f"
  done | while read -r _ local _; do echo $((16#${local##*:})); done | sort -u)
  while :; do
    p=$((20000 + RANDOM % 30000))
    case " $* " in *" $p "*) continue ;; esac
    grep -qx "$p" <<<"$used" || { echo "$p"; return; }
  done
}

do_stop() {
  local quiet=${1:-}
  if ours "$(pidfile_pid "$DIR/run/slurmctld.pid")" && [ -S "$MUNGE/munge.sock" ] &&
    command -v scontrol >/dev/null; then
    export SLURM_CONF=$CONF
    # cancel every job and give them up to 10 s to end, then shut down
    # the controller and the node daemon
    if timeout 5 squeue -h -o %i >/dev/null 2>&1; then
      local u
      for u in $(timeout 5 squeue -h -o %u 2>/dev/null | sort -u); do
        timeout 10 scancel --quiet --user="$u" 2>/dev/null || true
      done
      local i
      for i in $(seq 40); do
        [ -z "$(timeout 5 squeue -h -t R,CG,CF,PD,S -o %i 2>/dev/null)" ] && break
        sleep 0.25
      done
      timeout 10 scontrol shutdown >/dev/null 2>&1 || true
    fi
  fi
  # whatever is left (munged; after a partial start or a crash, daemons, slurmstepd
  # and jobs): SIGTERM, SIGKILL after 5 s
  local pids p
  pids=$(our_pids)
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  local left=
  for i in $(seq 25); do
    left=
    for p in $pids; do
      if alive "$p"; then left="$left $p"; fi
    done
    [ -z "$left" ] && break
    sleep 0.2
  done
  for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
  rm -f "$DIR"/run/*.pid "$MUNGE/munged.pid"
  [ "$SOCK" = "$DIR" ] || rm -rf "$SOCK"
  rm -f "$DIR/sockdir"
  [ -n "$quiet" ] || echo "slurm-cluster: stopped ($DIR)"
}

# Loopback only where Slurm allows it: with NoCtldInAddrAny/NoInAddrAny the
# daemons bind to the address the host name resolves to (not to the configured
# addresses), so that is used when it is a loopback address (127.0.0.1 or
# Debian's 127.0.1.1). Otherwise they bind to every address; only holders of
# this cluster's own munge key can talk to them.
write_conf() {
  local host=$1 ctld_port=$2 d_port=$3 addr comm=
  addr=$(getent ahostsv4 "$host" 2>/dev/null | awk 'NR == 1 {print $1}')
  case $addr in
    127.*) comm="CommunicationParameters=NoCtldInAddrAny,NoInAddrAny" ;;
    *) addr=127.0.0.1 ;;
  esac
  cat >"$CONF" <<EOF
# A private one-node cluster (braid scripts/slurm-cluster.sh). Loopback only.
ClusterName=braid
SlurmctldHost=$host($addr)
SlurmctldAddr=$addr
$comm
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/munge
AuthInfo=socket=$MUNGE/munge.sock
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$SOCK/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default every job takes all the node's memory and they run one at a time
DefMemPerCPU=100
# the node declares the CPUs and memory below even if the machine has fewer
SlurmdParameters=config_overrides
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MaxArraySize=10001
MaxJobCount=100000
# finished jobs stay visible to squeue for 5 minutes (there is no sacct here)
MinJobAge=300
# SIGTERM to SIGKILL: longer than an agent takes to stop when its server is
# gone (its final report is tried for 5 s), so the job script's trap still
# removes the job's work dir (Slurm's own default is 30 s)
KillWait=12
InactiveLimit=0
OverTimeLimit=0
NodeName=$host NodeAddr=$addr CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  mkdir -p "$MUNGE"
  chown munge:munge "$MUNGE"
  chmod 711 "$MUNGE" # munged wants its socket reachable by all (the key is 0400)
  rm -f "$MUNGE/munge.key" "$MUNGE/munged.log"
  dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
  chown munge:munge "$MUNGE/munge.key"
  chmod 400 "$MUNGE/munge.key"
  env BRAID_SLURM_CLUSTER="$DIR" runuser -u munge -- /usr/sbin/munged \
    --key-file="$MUNGE/munge.key" --socket="$MUNGE/munge.sock" \
    --pid-file="$MUNGE/munged.pid" --seed-file="$MUNGE/seed" \
    --log-file="$MUNGE/munged.log" \
    || { logs_tail; die "munged did not start"; }
  local i
  for i in $(seq 50); do
    [ -S "$MUNGE/munge.sock" ] && return 0
    sleep 0.1
  done
  logs_tail
  die "munged did not create its socket $MUNGE/munge.sock"
}

# Starts slurmctld and slurmd on fresh ports; returns 1 if a port was taken
# meanwhile (the caller tries other ports).
start_slurm() {
  local host=$1 ctld_port d_port
  ctld_port=$(free_port)
  d_port=$(free_port "$ctld_port")
  write_conf "$host" "$ctld_port" "$d_port"
  rm -rf "$DIR/state" "$SOCK/spool" "$DIR/log"
  mkdir -p "$DIR/state" "$SOCK/spool" "$DIR/log" "$DIR/run"
  # an absolute -f: with a relative one slurmctld dies after a minute
  env BRAID_SLURM_CLUSTER="$DIR" SLURM_CONF="$CONF" /usr/sbin/slurmctld -f "$CONF" -i \
    || { logs_tail; die "slurmctld did not start"; }
  env BRAID_SLURM_CLUSTER="$DIR" SLURM_CONF="$CONF" /usr/sbin/slurmd -f "$CONF" \
    || { logs_tail; die "slurmd did not start"; }
  export SLURM_CONF=$CONF
  local deadline=$((SECONDS + START_TIMEOUT)) state=
  while [ $SECONDS -lt $deadline ]; do
    if grep -qs 'Address already in use' "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; then
      return 1
    fi
    local d
    for d in slurmctld slurmd; do
      if [ -s "$DIR/run/$d.pid" ] && ! alive "$(pidfile_pid "$DIR/run/$d.pid")"; then
        logs_tail
        die "$d exited (logs above, all in $DIR)"
      fi
    done
    state=$(timeout 5 sinfo -h -N -o %T 2>/dev/null || true)
    [ "$state" = idle ] && return 0
    sleep 0.2
  done
  logs_tail
  die "the node is not idle after ${START_TIMEOUT} s (sinfo says: '${state:-no answer}'); logs above, all in $DIR"
}

do_start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (slurmd runs jobs as their user, munged as munge)"
  [[ $CPUS =~ ^[1-9][0-9]*$ && $MEM =~ ^[1-9][0-9]*$ ]] ||
    die "BRAID_SLURM_CPUS ($CPUS) and BRAID_SLURM_MEMORY_MB ($MEM) must be whole numbers"
  local missing=() b
  for b in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd; do
    [ -x "$b" ] || missing+=("$b")
  done
  for b in sbatch squeue sinfo scontrol scancel; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  id munge >/dev/null 2>&1 || missing+=("user munge")
  [ ${#missing[@]} -eq 0 ] ||
    die "Slurm or munge is not installed (missing: ${missing[*]}); scripts/deps.sh installs slurmctld slurmd slurm-client munge"
  mkdir -p "$DIR"
  # a cluster left running in DIR (a crashed run): stop it first
  do_stop quiet
  set_sock
  if [ "$SOCK" != "$DIR" ]; then
    rm -rf "$SOCK"
    mkdir -m 711 "$SOCK" || die "cannot make $SOCK (for the daemons' sockets: DIR's path is long or closed to munge)"
  fi
  echo "$SOCK" >"$DIR/sockdir"
  local host attempt
  host=$(hostname -s)
  # a failed start stops what it started (the logs stay)
  trap 'do_stop quiet' EXIT
  start_munge
  for attempt in 1 2 3; do
    if start_slurm "$host"; then
      trap - EXIT
      printf 'export SLURM_CONF=%q\n' "$CONF" >"$DIR/env"
      echo "slurm-cluster: up in $DIR (node $host: $CPUS CPUs, $MEM MB; ports $(grep -E '^Slurm(ctld|d)Port=' "$CONF" | cut -d= -f2 | paste -sd/)); eval \"\$($0 env $DIR)\""
      return 0
    fi
    echo "slurm-cluster: a port was taken meanwhile, trying others" >&2
    do_stop quiet
    start_munge
  done
  logs_tail
  die "could not find free ports after 3 attempts"
}

case $cmd in
  start) do_start ;;
  stop) do_stop ;;
  env) printf 'export SLURM_CONF=%q\n' "$CONF" ;;
  *) usage ;;
esac
