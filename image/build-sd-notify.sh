#!/usr/bin/env bash
# Compiles image/native/sd_notify.c (Node-API, C, no dependencies) for x64 or arm64 (g++-aarch64-linux-gnu's
# gcc), cached by the source's hash; prints the built file.
#   image/build-sd-notify.sh [x64|arm64]     (default: this machine's architecture)
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(node -p process.arch)
arch=${1:-$host}
case "$arch" in x64) cc=gcc ;; arm64) cc=aarch64-linux-gnu-gcc ;; *) echo "build-sd-notify: x64 or arm64, not '$arch'" >&2; exit 2 ;; esac
[ "$arch" = "$host" ] && [ "$host" = arm64 ] && cc=gcc
command -v "$cc" >/dev/null || { echo "build-sd-notify: $cc missing" >&2; exit 1; }
node_inc=$(node -p "require('path').resolve(process.execPath, '../../include/node')")
[ -f "$node_inc/node_api.h" ] || node_inc=/usr/include/node
[ -f "$node_inc/node_api.h" ] || { echo "build-sd-notify: Node headers (node_api.h) not found" >&2; exit 1; }
src=image/native/sd_notify.c
cache=${XDG_CACHE_HOME:-$HOME/.cache}/starling
out="$cache/sd_notify-$(sha256sum "$src" | cut -c1-16)-$arch.node"
if [ ! -f "$out" ]; then
  mkdir -p "$cache"
  "$cc" -std=c11 -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra -I"$node_inc" "$src" -o "$out.tmp"
  mv "$out.tmp" "$out"
fi
echo "$out"
