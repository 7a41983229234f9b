#!/bin/sh
# The "ifd" stand-in: turns one frame's cache into a scene description (here,
# an ffmpeg lavfi graph) and spawns the render task that draws it.
# usage: scene.sh CACHE SCENE IMAGE HUE WEDGE FRAME
set -eu
cache=$1; scene=$2; image=$3; hue=$4; wedge=$5; frame=$6
x=$(sed -n 's/.*"x": \([0-9]*\).*/\1/p' "$cache")
y=$(sed -n 's/.*"y": \([0-9]*\).*/\1/p' "$cache")
mkdir -p "$(dirname "$scene")"
tmp="$(dirname "$scene")/.partial.$$.txt"
printf "color=c=0x202830:s=160x120:r=24,hue=h=%s,drawbox=x=%s:y=%s:w=18:h=18:color=0xF0A020:t=fill,hue=h=%s,drawtext=text='w%s f%04d':fontsize=14:fontcolor=white:x=4:y=4\n" \
  "$hue" "$x" "$y" "$hue" "$wedge" "$frame" > "$tmp"
mv "$tmp" "$scene"
braid ctl spawn --name "render.$frame" scene="$scene" image="$image"
