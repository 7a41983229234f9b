#!/bin/sh
# The renderer stand-in: draws one frame with ffmpeg from its scene file,
# writing under a temporary name and renaming when complete.
# usage: render.sh SCENE IMAGE
set -eu
scene=$1; image=$2
mkdir -p "$(dirname "$image")"
tmp="$(dirname "$image")/.partial.$$.png"
ffmpeg -nostdin -v error -y -f lavfi -i "$(cat "$scene")" -frames:v 1 "$tmp"
mv "$tmp" "$image"
braid ctl progress 1
