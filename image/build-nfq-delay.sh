#!/usr/bin/env bash
# Compiles image/native/nfq-delay.c (starling simulate's delay line where the kernel has no netem) for this
# machine against libnetfilter_queue (Debian: libnetfilter-queue-dev), cached by the source's hash; prints the
# built file. Only the test lab needs it: the packages do not ship it.
#   image/build-nfq-delay.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v gcc >/dev/null || { echo "build-nfq-delay: gcc missing" >&2; exit 1; }
pkg-config --exists libnetfilter_queue 2>/dev/null || { echo "build-nfq-delay: libnetfilter_queue missing (apt install libnetfilter-queue-dev)" >&2; exit 1; }
src=image/native/nfq-delay.c
cache=${XDG_CACHE_HOME:-$HOME/.cache}/starling
out="$cache/nfq-delay-$(sha256sum "$src" | cut -c1-16)-$(uname -m)"
if [ ! -f "$out" ]; then
  mkdir -p "$cache"
  # shellcheck disable=SC2046
  gcc -std=c11 -O2 -Wall -Wextra "$src" -o "$out.tmp" $(pkg-config --cflags --libs libnetfilter_queue)
  mv "$out.tmp" "$out"
fi
echo "$out"
