#!/usr/bin/env bash
# Installs what Starling needs on a Debian machine with Node 20. Safe to run again: each step is skipped when
# already done.
#   image/setup.sh         what the demo needs and no more: npm ci, which builds the `starling` CLI (prepare)
#                          with zeromq.js's prebuilt addon (tcp and CURVE; no epgm). No system package, no root.
#   image/setup.sh --all   the test suite's and the packaging's needs as well (root, apt): the system packages,
#                          zeromq.js against Debian's libzmq (epgm), the single executables, the .deb packages
#                          and the arm64 board image (.ci/run and the README's test command use this).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --all) all=1 ;;
  "") all=0 ;;
  *) echo "usage: image/setup.sh [--all]" >&2; exit 2 ;;
esac

# npm dependencies, reinstalled only when package-lock.json changed since the last install.
npm_deps() {
  stamp=node_modules/.starling-lock.sha256
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: npm ci" >&2
    # --strict-allow-scripts: a dependency with install scripts not listed in package.json#allowScripts fails the
    # install. (Not in .npmrc: there it would also stop `npx starling`, which npm 11 runs by linking this project.)
    npm ci --strict-allow-scripts --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
  else
    npm run --silent build
  fi
}
if [ "$all" = 0 ]; then
  npm_deps
  echo "setup: ready for the demo (npx starling demo); bash image/setup.sh --all for the tests and the packages" >&2
  exit 0
fi

# System packages: iproute2 (ip netns, for the multi-host tests); libzmq3-dev, g++ and pkg-config to build
# zeromq.js against the system libzmq, which has OpenPGM (epgm://); more below.
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libzmq 2>/dev/null || need+=(libzmq3-dev)
# systemd-notify (sd_notify from Node), dbus-daemon and dbus-send (the supervisor's D-Bus tests), python3 (a
# datagram socket standing in for systemd in the watchdog test).
command -v systemd-notify >/dev/null 2>&1 || need+=(systemd)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
command -v dbus-send >/dev/null 2>&1 || need+=(dbus-bin)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)   # the MQTT tests' broker
# starling simulate's packet loss where the kernel has no netem (its test): iptables' statistic match.
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need+=(iptables)
# Its delay without netem: a delay line on iptables' NFQUEUE (image/native/nfq-delay.c, libnetfilter_queue).
pkg-config --exists libnetfilter_queue 2>/dev/null || need+=(libnetfilter-queue-dev)
command -v chromium >/dev/null 2>&1 || need+=(chromium)   # the web view's tests (headless, DevTools protocol)
# The metrics tests' real servers (each started by the test on the loopback, never as a system service).
[ -x /usr/bin/prometheus ] || need+=(prometheus)
[ -x /usr/bin/influxd ] || need+=(influxdb)
[ -x /usr/bin/victoria-metrics ] || need+=(victoria-metrics)
# Packaging (image/build-exe.sh, build-deb.sh and their tests): the arm64 cross compiler, Debian's arm64 libzmq
# and libraries (multiarch) to build against and to run the arm64 executable under qemu-aarch64-static, and
# debootstrap for the Debian root the .deb is installed into.
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ -f /usr/lib/aarch64-linux-gnu/pkgconfig/libzmq.pc ] || need+=(libzmq3-dev:arm64 libstdc++6:arm64)
# The board image (image/build-image.sh) and its boot test: mmdebstrap, the FAT and ext4 tools, xz; the emulated
# board (qemu-system-aarch64), a DHCP server for its network (dnsmasq), ssh into it.
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v arch-test >/dev/null 2>&1 || need+=(arch-test)
command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
command -v mkfs.vfat >/dev/null 2>&1 || need+=(dosfstools)
command -v mcopy >/dev/null 2>&1 || need+=(mtools)
command -v sfdisk >/dev/null 2>&1 || need+=(fdisk)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v qemu-system-aarch64 >/dev/null 2>&1 || need+=(qemu-system-arm)
command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  dpkg --print-foreign-architectures | grep -qx arm64 || $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  # No package may start its service on this machine (prometheus, influxdb, victoria-metrics would listen on
  # the host): invoke-rc.d asks policy-rc.d, and 101 means "not now". The file is removed afterwards.
  policy=/usr/sbin/policy-rc.d; made_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null; $sudo chmod 755 "$policy"; made_policy=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null || { [ "$made_policy" = 1 ] && $sudo rm -f "$policy"; exit 1; }
  if [ "$made_policy" = 1 ]; then $sudo rm -f "$policy"; fi
fi

# arm64 maintainer scripts in the image's Debian root run under qemu-aarch64-static through binfmt_misc.
[ -d /proc/sys/fs/binfmt_misc ] && ! mountpoint -q /proc/sys/fs/binfmt_misc && $sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
$sudo update-binfmts --enable qemu-aarch64 2>/dev/null || true
npm_deps

# zeromq.js's addon against the system libzmq (cached; only relinks the manifest when nothing changed), then
# the bundle again so that dist/native/ has it.
bash image/build-zeromq.sh
npm run --silent build

# What the packaging tests download, fetched here with the rest: the Node the executables embed (npm registry,
# checked against pinned SHA-256s) and a Debian root (debootstrap). Both cached in ~/.cache/starling.
bash image/fetch-node.sh x64 >/dev/null
bash image/fetch-node.sh arm64 >/dev/null
bash image/debian-root.sh >/dev/null
# The executables and packages (npm run image; the packaging tests rebuild only what changed since).
bash image/build-exe.sh x64 && bash image/build-exe.sh arm64 && bash image/build-deb.sh x64 && bash image/build-deb.sh arm64
# The board image (cached: its Debian root by package list, the image by its inputs).
bash image/build-image.sh arm64
