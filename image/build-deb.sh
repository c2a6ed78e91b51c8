#!/usr/bin/env bash
# Builds the Debian package of one architecture with dpkg-deb (Debian's own tool; no debhelper needed for a
# package that is one executable and a few files): dist/starling_VERSION_amd64.deb or _arm64.deb.
#
#   image/build-deb.sh x64|arm64      (builds the executable first if it is missing)
#
# Contents: /usr/bin/starling (the single executable), /lib/systemd/system/starling.service,
# /etc/starling/starling.yaml (a conffile: local edits survive upgrades) and the same default as
# /usr/share/starling/starling.yaml (what runs should the one in /etc have problems), the D-Bus policy in
# /usr/share/dbus-1/system.d, the `starling` system user (/usr/lib/sysusers.d/starling.conf, applied by the
# postinst, useradd where systemd-sysusers is absent). Depends on libc6 ≥ 2.28 and libstdc++6 only (what the
# official Node binary needs); recommends libzmq5 (epgm; without it the built-in libzmq is used) and systemd.
# Installs on Debian 11+ and Raspberry Pi OS (arm64).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: build-deb.sh x64|arm64}
case "$arch" in x64) debarch=amd64 ;; arm64) debarch=arm64 ;; *) echo "build-deb: x64 or arm64, not '$arch'" >&2; exit 2 ;; esac
exe=dist/starling-linux-$arch
[ -x "$exe" ] || bash image/build-exe.sh "$arch"
version=$(node -p "require('./package.json').version")

out=dist/starling_${version}_${debarch}.deb
# Nothing to do when the package was made from exactly these inputs (tests call this often).
key=$(cat "$exe" image/deb/* image/dbus/org.starling.Supervisor1.conf README.md package.json "$0" | sha256sum | cut -c1-32)
if [ -f "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
  echo "build-deb: $out is up to date" >&2
  exit 0
fi

root=dist/deb/$debarch
rm -rf "$root" && mkdir -p "$root/DEBIAN"
install -D -m 0755 "$exe" "$root/usr/bin/starling"
install -D -m 0644 image/deb/starling.service "$root/lib/systemd/system/starling.service"
install -D -m 0644 image/deb/sysusers.conf "$root/usr/lib/sysusers.d/starling.conf"
install -D -m 0644 image/deb/starling.yaml "$root/etc/starling/starling.yaml"
install -D -m 0644 image/deb/starling.yaml "$root/usr/share/starling/starling.yaml"   # the unit's --fallback
install -D -m 0644 image/dbus/org.starling.Supervisor1.conf "$root/usr/share/dbus-1/system.d/org.starling.Supervisor1.conf"
install -D -m 0644 README.md "$root/usr/share/doc/starling/README.md"
cat > "$root/usr/share/doc/starling/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: starling

Files: *
License: MPL-2.0
 /usr/bin/starling embeds Node.js $( "$exe" version --json 2>/dev/null | node -p 'JSON.parse(require("fs").readFileSync(0)).node' 2>/dev/null || echo 24) (MIT and others, see https://github.com/nodejs/node/blob/main/LICENSE),
 libzmq (MPL-2.0) and the npm packages listed in dist/starling.cjs.LEGAL.txt.
COPYRIGHT
install -m 0755 image/deb/postinst image/deb/prerm image/deb/postrm "$root/DEBIAN/"
echo /etc/starling/starling.yaml > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: starling
Version: $version
Architecture: $debarch
Maintainer: Starling developers <starling@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: libc6 (>= 2.28), libstdc++6, passwd
Recommends: systemd, libzmq5, dbus
Section: misc
Priority: optional
Homepage: https://github.com/starling
Description: supervisor for sensor meshes on small Linux boards
 Starling finds its neighbours with ZRE (Zyre's protocol), publishes sensor and
 GPIO telemetry over ZeroMQ (tcp, epgm), bridges it to MQTT with Home Assistant
 discovery, and supervises its services under systemd (watchdog, D-Bus control).
 One executable with Node.js inside; nothing else to install.
CONTROL
# xz at level 1: a third of the size of the executable, in seconds rather than a minute.
dpkg-deb --root-owner-group -Zxz -z1 --build "$root" "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
echo "$key" > "$out.key"
echo "build-deb: $out ($(du -m "$out" | cut -f1) MB)" >&2
