#!/usr/bin/env bash
# `cmake --install` gives a braid that a farm can run as docs/install.md says:
# the program, docs, sample settings, the braid user (systemd-sysusers makes
# it in a scratch root) and three systemd units that systemd-analyze accepts.
# Then each unit's own command line, with its sample settings, runs the
# installed braid (state in a scratch folder instead of /var/lib/braid, on
# loopback ports instead of every interface): the server answers and makes
# its admin token, an agent started as its unit says runs a submitted job, a
# depot takes a push and gives it back, and each stops on SIGTERM as systemd
# stops it (KillMode=mixed: the main process first).
# Usage: install.sh CMAKE BUILD_DIR
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
[ $# -eq 2 ] || fail "usage: install.sh CMAKE BUILD_DIR"
cmake=$1 build=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/braid-test-install-XXXXXX")
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ $rc -eq 0 ] && [ -z "${BRAID_TEST_KEEP:-}" ]; then rm -rf "$work"
  else echo "install test: kept $work" >&2; fi
}
trap cleanup EXIT

prefix=$work/usr
"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" ||
  fail "cmake --install failed: $(tail -5 "$work/install.log")"
braid=$prefix/bin/braid
units=$prefix/lib/systemd/system
for f in bin/braid lib/systemd/system/braid-server.service lib/systemd/system/braid-agent.service \
         lib/systemd/system/braid-depot.service lib/sysusers.d/braid.conf \
         share/braid/etc/server.env share/braid/etc/agent.env share/braid/etc/depot.env \
         share/doc/braid/README.md share/doc/braid/install.md share/doc/braid/farm.md \
         share/doc/braid/examples/wedge-mosaic.json; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
"$braid" version >/dev/null || fail "the installed braid does not run"

# The units name what was installed, not the build's paths.
for u in server agent depot; do
  unit=$units/braid-$u.service
  grep -q "^ExecStart=$braid $u " "$unit" || fail "braid-$u.service does not run $braid: $(grep ExecStart "$unit")"
  # shellcheck disable=SC2013 # words: Documentation= holds several addresses
  for d in $(sed -n 's/^Documentation=//p' "$unit"); do
    [ -e "${d#file://}" ] || fail "braid-$u.service: its Documentation $d is not installed"
  done
  grep -q '@' "$unit" && fail "braid-$u.service has an unreplaced @VARIABLE@"
done

# systemd reads the units and makes the user (in a scratch root).
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (scripts/deps.sh installs systemd)"
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$units"/braid-*.service 2>&1) ||
  fail "systemd-analyze verify: $out"
echo "$out" | grep -i "braid-" && fail "systemd-analyze warns about a unit: $out"
mkdir -p "$work/root/etc"
systemd-sysusers --root="$work/root" "$prefix/lib/sysusers.d/braid.conf" 2>"$work/sysusers.log" ||
  fail "systemd-sysusers: $(cat "$work/sysusers.log")"
grep -q '^braid:.*:/var/lib/braid:' "$work/root/etc/passwd" ||
  fail "systemd-sysusers made no user braid with home /var/lib/braid: $(cat "$work/root/etc/passwd")"

# A unit's command as systemd would run it: its Environment= lines, then its
# sample EnvironmentFile (KEY=VALUE, # comments, values with spaces), then
# ExecStart with $VAR split into words. /var/lib/braid and /etc/braid move to
# scratch folders; 0.0.0.0:PORT becomes 127.0.0.1:0 (tests stay on loopback).
state=$work/state etc=$work/etc
mkdir -p "$state" "$etc"
unit_environment() { # UNIT ENVFILE: exports what systemd would give the unit's command
  while IFS= read -r l; do eval "export ${l#Environment=}"; done < <(grep '^Environment=' "$1")
  while IFS= read -r l; do
    case $l in '#'* | '') continue ;; esac
    export "${l%%=*}=${l#*=}"
  done <"$2"
}
scratch() { # WORD: /var/lib/braid and /etc/braid in it moved to the scratch folders
  local a=${1//\/var\/lib\/braid/$state}
  printf '%s' "${a//\/etc\/braid/$etc}"
}
unit_argv() { # UNIT ENVFILE: prints the command's words, one per line
  (
    unit_environment "$1" "$2"
    cmd=$(sed -n 's/^ExecStart=//p' "$1")
    eval "set -- $cmd"
    for a in "$@"; do
      a=$(scratch "$a")
      [[ $a =~ ^0\.0\.0\.0:[0-9]+$ ]] && a=127.0.0.1:0
      printf '%s\n' "$a"
    done
  )
}
unit_env() { # UNIT ENVFILE NAME: the value NAME has in the unit's environment
  (
    unit_environment "$1" "$2"
    scratch "${!3:-}"
  )
}
wait_for() { # SECONDS WHAT PID LOG COMMAND...: COMMAND succeeds while PID runs
  local n=$(($1 * 10)) what=$2 pid=$3 log=$4
  shift 4
  for _ in $(seq "$n"); do
    "$@" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || fail "$what: it exited: $(tail -5 "$log")"
    sleep 0.1
  done
  fail "$what: not within $((n / 10)) s: $(tail -5 "$log")"
}
stop() { # PID NAME: SIGTERM to the main process, as KillMode=mixed does; it must end in time
  local limit
  limit=$(sed -n 's/^TimeoutStopSec=//p' "$units/braid-$2.service")
  kill -TERM "$1"
  for _ in $(seq $((limit * 10))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && fail "braid-$2 still runs ${limit} s after SIGTERM"
  wait "$1" || fail "braid-$2 exited $? on SIGTERM"
}

# Server and depot listen on every interface, with or without the sample settings.
for u in server depot; do
  for env in "$prefix/share/braid/etc/$u.env" /dev/null; do
    unit_argv "$units/braid-$u.service" "$env" | grep -qx 127.0.0.1:0 ||
      fail "braid-$u.service with $env does not listen on 0.0.0.0: $(unit_argv "$units/braid-$u.service" "$env" | tr '\n' ' ')"
  done
done

# The server.
mapfile -t argv < <(unit_argv "$units/braid-server.service" "$prefix/share/braid/etc/server.env")
[ "${argv[1]}" = server ] || fail "the server unit's command: ${argv[*]}"
(cd "$state" && exec "${argv[@]}" --url-file "$work/server.url") >"$work/server.log" 2>&1 &
server=$!
pids+=("$server")
wait_for 30 "the server's URL file" "$server" "$work/server.log" test -s "$work/server.url"
url=$(cat "$work/server.url")
[ -s "$state/farm.braid.admin-token" ] || fail "no admin token in the state folder: $(ls "$state")"
curl -fsS -H "Authorization: Bearer $(cat "$state/farm.braid.admin-token")" "$url/health" >/dev/null ||
  fail "the server does not answer $url/health"

# An agent, with the token the install guide makes.
(cd "$state" && "$braid" token create --role agent --name render) >"$etc/agent.token" ||
  fail "braid token create in the state folder"
aenv=$prefix/share/braid/etc/agent.env
[ "$(unit_env "$units/braid-agent.service" "$aenv" BRAID_TOKEN_FILE)" = "$etc/agent.token" ] ||
  fail "the agent unit does not read its token from /etc/braid/agent.token"
mapfile -t argv < <(unit_argv "$units/braid-agent.service" "$aenv")
[ "${argv[1]}" = agent ] || fail "the agent unit's command: ${argv[*]}"
(cd "$state" && BRAID_TOKEN_FILE="$etc/agent.token" BRAID_SERVER="$url" \
  exec "${argv[@]}" --id install-test) >"$work/agent.log" 2>&1 &
agent=$!
pids+=("$agent")
export BRAID_SERVER=$url BRAID_TOKEN_FILE=$state/farm.braid.admin-token
cat >"$work/graph.json" <<EOF
{
  "name": "install-check",
  "start": {"node": "start", "attrs": {}},
  "nodes": [
    {"name": "start", "type": "null"},
    {"name": "job", "type": "command", "params": {"shell": "echo installed > '$work/job.out'"}}
  ],
  "wires": [["start", "job"]]
}
EOF
task=$("$braid" submit "$work/graph.json") || fail "braid submit to the unit's server"
wait_for 60 "the agent ran the submitted job ($task)" "$agent" "$work/agent.log" grep -qx installed "$work/job.out"
[ -d "$state/agent/logs" ] || fail "the agent's work folder is not the unit's (/var/lib/braid/agent)"
stop "$agent" agent
stop "$server" server
grep -q "AddressSanitizer\|runtime error" "$work"/*.log && fail "a sanitizer report: $(cat "$work"/*.log)"

# A depot, with the token the install guide makes.
"$braid" depot token --token-file "$state/depot.tokens" >"$work/depot.token" || fail "braid depot token"
mapfile -t argv < <(unit_argv "$units/braid-depot.service" "$prefix/share/braid/etc/depot.env")
[ "${argv[1]}" = depot ] || fail "the depot unit's command: ${argv[*]}"
(cd "$state" && exec "${argv[@]}") >"$work/depot.log" 2>&1 &
depot=$!
pids+=("$depot")
wait_for 30 "the depot's 'listening on' line" "$depot" "$work/depot.log" grep -q 'depot listening on' "$work/depot.log"
addr=$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "$work/depot.log" | head -1)
mkdir -p "$work/src/sub"
echo one >"$work/src/a.txt"
head -c 300000 /dev/urandom >"$work/src/sub/b.bin"
export BRAID_TOKEN_FILE=$work/depot.token
"$braid" push -q "$work/src" "depot://$addr/install/check" || fail "push to the unit's depot"
"$braid" pull -q "depot://$addr/install/check" "$work/back" || fail "pull from the unit's depot"
diff -r "$work/src" "$work/back" || fail "the pulled tree differs"
[ -d "$state/depot" ] || fail "the depot's root is not the unit's (/var/lib/braid/depot)"
stop "$depot" depot
grep -q "AddressSanitizer\|runtime error" "$work"/*.log && fail "a sanitizer report: $(cat "$work"/*.log)"
echo "install: ok"
