#!/bin/sh
# The "simulation" stand-in: a ball bouncing in a 160x120 box, one cache file
# per frame. For each frame it writes the cache file (under a temporary name,
# then renamed) and spawns a child task for it through the runtime channel,
# while it is still running: the frames move on before the chunk finishes.
# usage: cache.sh DIR START END SPEED
set -eu
dir=$1; start=$2; end=$3; speed=$4
mkdir -p "$dir"
f=$start
while [ "$f" -le "$end" ]; do
  file=$(printf '%s/ball.%04d.json' "$dir" "$f")
  tmp="$dir/.partial.$$.json"
  awk -v f="$f" -v s="$speed" 'BEGIN {
    x = (f * 3 * s) % 280; if (x > 140) x = 280 - x;
    y = 100 - int(90 * (sin(f * 0.12 * s) < 0 ? -sin(f * 0.12 * s) : sin(f * 0.12 * s)));
    printf "{\"frame\": %d, \"x\": %d, \"y\": %d}\n", f, x, y }' > "$tmp"
  mv "$tmp" "$file"
  braid ctl spawn --name "frame.$f" frame="$f" cache="$file"
  f=$((f + 1))
done
