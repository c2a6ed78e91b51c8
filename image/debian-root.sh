#!/usr/bin/env bash
# A Debian bookworm root (debootstrap, minbase plus systemd and dbus) to install the .deb into, the way a
# device would; made once and cached, then copied by each test. Prints its path.
#   image/debian-root.sh            (about 1 minute and 240 MB the first time; from Debian's mirror)
set -euo pipefail
cache=${XDG_CACHE_HOME:-$HOME/.cache}/starling
root="$cache/debian-bookworm-amd64"
if [ ! -f "$root/.complete" ]; then
  command -v debootstrap >/dev/null || { echo "debian-root: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
  mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  echo "debian-root: debootstrap bookworm from $mirror into $root" >&2
  rm -rf "$root.tmp" && mkdir -p "$cache"
  debootstrap --variant=minbase --include=systemd,dbus bookworm "$root.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$root" && mv "$root.tmp" "$root"
  touch "$root/.complete"
fi
echo "$root"
