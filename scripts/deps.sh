#!/usr/bin/env bash
# The one list of braid's dependencies: Debian packages only.
# Installs whatever is missing (needs root, or sudo). Called by bootstrap.sh and test.sh;
# `deps.sh --fuzz` also installs what scripts/fuzz.sh needs; `deps.sh --runtime` installs
# only what an installed braid runs with (a farm machine given a built braid: docs/install.md).
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config git
  libsqlite3-dev sqlite3          # embedded store
  libpq-dev postgresql            # the PostgreSQL store (the server: for its tests)
  libjansson-dev                  # JSON values (task attributes, graph files)
  libuv1-dev                      # event loop, processes, pipes, timers, signals
  liblua5.4-dev                   # expressions and the script node
  libmicrohttpd-dev               # HTTP server (farm server, depot)
  libcurl4-openssl-dev            # HTTP client (agent, push/pull)
  libssl-dev openssl              # SHA-256, tokens; certificates for the TLS test
  libzstd-dev libxxhash-dev       # chunk compression, fast hashes
  uthash-dev                      # hash tables for the engine's indexes
  ffmpeg fonts-dejavu-core        # the program (jobs, tests, the mosaic) and a font for drawtext
  bc                              # arithmetic in bench scripts
  rsync                           # baseline for bench/transfer
  slurmctld slurmd slurm-client munge   # the slurm executor: a private test cluster (scripts/slurm-cluster.sh)
  systemd                         # systemd-analyze and systemd-sysusers: the install test checks the units
  chromium chromium-driver        # a headless browser and its WebDriver (test-web-browser)
)
if [ "${1:-}" = "--runtime" ]; then
  # the shared libraries of the packages above that braid links, and the programs jobs use
  PKGS=(libsqlite3-0 libpq5 libjansson4 libuv1 liblua5.4-0 libmicrohttpd12 libcurl4 libssl3
        libzstd1 ffmpeg fonts-dejavu-core)
fi
if [ "${1:-}" = "--fuzz" ]; then
  PKGS+=(clang libclang-rt-dev)   # libFuzzer (scripts/fuzz.sh; the tests replay without it)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
