#!/usr/bin/env bash
# Installs what Starling needs on a Debian machine (Node 20, root): system packages, then npm ci, which builds
# the `starling` CLI (prepare). Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

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
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# npm dependencies, reinstalled only when package-lock.json changed since the last install.
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

# zeromq.js's addon against the system libzmq (cached; only relinks the manifest when nothing changed).
bash image/build-zeromq.sh
