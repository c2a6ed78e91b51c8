#!/usr/bin/env bash
# Builds the single executable for one architecture: dist/starling-linux-x64 or dist/starling-linux-arm64.
#
#   image/build-exe.sh x64|arm64
#
# It is Node's single-executable application (SEA): the official Node 24 LTS binary for that architecture (from
# the npm registry, image/fetch-node.sh) with a blob injected by postject that holds the first script,
# dist/sea-main.cjs (app/sea-main.ts), and as assets the bundle (dist/starling.sea.js: dist/starling.cjs wrapped as
# a CommonJS module; image/build.mjs makes both), its base code cache (made here, by that Node), and the native
# addons built for that Node and architecture:
#   epoll.node          nan (V8's C++ API), so compiled against that Node's headers by node-gyp, offline
#                       (--nodedir), with g++-aarch64-linux-gnu for arm64;
#   zeromq-system.node  zeromq.js against Debian's libzmq (epgm), image/build-zeromq.sh (cross for arm64);
#                       loads where libzmq5 is installed;
#   zeromq.node         zeromq.js's prebuilt glibc-127 addon (libzmq inside, no epgm), the fallback;
#   sd_notify.node      image/native/sd_notify.c: systemd notifications sent from the main process.
# At start runtime/native.ts writes the addons to a cache directory once and dlopens them.
# V8 and Node flags go in execArgv (image/sea-flags.json: chosen from bench/image.ts's measurements).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: build-exe.sh x64|arm64}
case "$arch" in x64) cc=gcc cxx=g++ ;; arm64) cc=aarch64-linux-gnu-gcc cxx=aarch64-linux-gnu-g++ ;; *) echo "build-exe: x64 or arm64, not '$arch'" >&2; exit 2 ;; esac
command -v "$cxx" >/dev/null || { echo "build-exe: $cxx missing (apt-get install g++-aarch64-linux-gnu)" >&2; exit 1; }

node_dir=$(image/fetch-node.sh "$arch")
# The blob is made by the very Node it goes into (same version, and same architecture for the code cache):
# on an x64 machine the arm64 one runs under qemu-aarch64-static with Debian's arm64 libraries (multiarch).
maker=("$node_dir/bin/node")
if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
  command -v qemu-aarch64-static >/dev/null || { echo "build-exe: qemu-aarch64-static missing (apt-get install qemu-user-static)" >&2; exit 1; }
  maker=(qemu-aarch64-static -L / "$node_dir/bin/node")
fi
node_version=$("${maker[@]}" -p process.versions.node)
[ -f dist/starling.sea.js ] && [ -f dist/sea-main.cjs ] || node image/build.mjs

work=dist/exe/linux-$arch
rm -rf "$work" && mkdir -p "$work/native"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/starling

# epoll, for this Node and architecture (cached).
epoll_version=$(node -p "require('./node_modules/epoll/package.json').version")
epoll_cached="$cache/epoll-$epoll_version-node$node_version-$arch.node"
if [ ! -f "$epoll_cached" ]; then
  echo "build-exe: compiling epoll $epoll_version for Node $node_version ($arch)" >&2
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  cp -r node_modules/epoll/binding.gyp node_modules/epoll/src node_modules/epoll/package.json "$src/"
  ln -s "$PWD/node_modules" "$src/node_modules"   # binding.gyp finds nan with require('nan')
  (cd "$src" && CC=$cc CXX=$cxx node "$OLDPWD/node_modules/node-gyp/bin/node-gyp.js" rebuild --arch="$arch" --nodedir="$node_dir" >build.log 2>&1) \
    || { cat "$src/build.log" >&2; exit 1; }
  cp "$src/build/Release/epoll.node" "$epoll_cached"
fi
cp "$epoll_cached" "$work/native/epoll.node"

# zeromq: the system-libzmq build (N-API: any Node ≥ 20) and the prebuilt fallback.
system=$(bash image/build-zeromq.sh "$arch")
cp "$system" "$work/native/zeromq-system.node"
cp "node_modules/zeromq/build/linux/$arch/node/glibc-127-Release/addon.node" "$work/native/zeromq.node"
# systemd notifications from the main process (Node-API, C).
cp "$(bash image/build-sd-notify.sh "$arch")" "$work/native/sd_notify.node"

# The SEA blob: the first script (app/sea-main.ts), the bundle and the addons as assets, the flags.
exec_argv=$(node -p "JSON.stringify(require('./image/sea-flags.json').execArgv)")
cat > "$work/sea-config.json" <<JSON
{
  "main": "dist/sea-main.cjs",
  "output": "$work/sea.blob",
  "disableExperimentalSEAWarning": true,
  "useSnapshot": false,
  "useCodeCache": true,
  "execArgv": $exec_argv,
  "assets": {
    "starling.cjs": "dist/starling.sea.js",
    "starling.cjs.cache": "$work/starling.cjs.cache",
    "epoll.node": "$work/native/epoll.node",
    "zeromq-system.node": "$work/native/zeromq-system.node",
    "zeromq.node": "$work/native/zeromq.node",
    "sd_notify.node": "$work/native/sd_notify.node"
  }
}
JSON
out=dist/starling-linux-$arch
# Nothing to do when the executable was made from exactly these inputs (tests call this often).
key=$(cat dist/sea-main.cjs dist/starling.sea.js "$work"/native/*.node "$work/sea-config.json" "$node_dir/bin/node" | sha256sum | cut -c1-32)
if [ -x "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
  echo "build-exe: $out is up to date" >&2
  exit 0
fi
# The bundle's base code cache (its top-level code compiled, as Node's own useCodeCache makes it), by the Node
# it is for with the flags it runs with: what each command starts with until it has cached its own code.
mapfile -t flags < <(node -p "require('./image/sea-flags.json').execArgv.join('\n')")
"${maker[@]}" "${flags[@]}" -e '
  const { Script } = require("node:vm"), { readFileSync, writeFileSync } = require("node:fs");
  writeFileSync(process.argv[2], new Script(readFileSync(process.argv[1], "utf8"), { filename: "starling" }).createCachedData());
' dist/starling.sea.js "$work/starling.cjs.cache"
# useCodeCache: V8's compiled code for the first script goes into the blob (the bundle's is the asset above:
# without any, a start parses 1.5 MB of JavaScript, about 40 ms of a 130 ms start on x64; bench/image.ts).
log=$("${maker[@]}" --experimental-sea-config "$work/sea-config.json" 2>&1) || { echo "$log" >&2; exit 1; }

cp "$node_dir/bin/node" "$out.tmp"
chmod u+w "$out.tmp"
log=$(node node_modules/postject/dist/cli.js "$out.tmp" NODE_SEA_BLOB "$work/sea.blob" \
  --sentinel-fuse NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2 2>&1) || { echo "$log" >&2; exit 1; }
mv "$out.tmp" "$out"
echo "$key" > "$out.key"
echo "build-exe: $out ($(du -m "$out" | cut -f1) MB, Node $node_version, $arch)" >&2
