#!/usr/bin/env bash
# Builds zeromq.js's native addon from its npm sources against the system libzmq (Debian's libzmq3-dev, which
# has OpenPGM, so the epgm:// transport works), offline, and makes it the only addon the loader may pick.
#
# Why not zeromq's own build (cmake-ts)? It downloads Node headers, a CMake helper project and vcpkg from the
# internet. The addon is seven C++ files; we compile them with g++ against /usr/include/node and pkg-config's
# libzmq, with the same definitions its CMakeLists uses (C++20, N-API C++ exceptions, no draft API: Debian's
# libzmq has none).
#
# The loader (cmake-ts) reads node_modules/zeromq/build/manifest.json and prefers the prebuilt addon with the
# highest ABI, so after every `npm ci` the manifest is rewritten to list only the addon built here.
# The result is cached by zeromq version, Node ABI, architecture and libzmq version, so re-runs take no time.
#
#   image/build-zeromq.sh          build for this machine's Node and install into node_modules (as above)
#   image/build-zeromq.sh x64|arm64  build for the executables (arm64: cross-compiled with g++-aarch64-linux-gnu
#                                    against Debian's libzmq3-dev:arm64); prints the cached file, installs nothing
# The addon uses only N-API, so one build serves every Node version from 20 on (the executables' Node 24 too).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-}

zmq_dir=node_modules/zeromq
[ -d "$zmq_dir/src" ] || { echo "build-zeromq: $zmq_dir/src missing; run npm ci first" >&2; exit 1; }
for tool in g++ pkg-config; do
  command -v "$tool" >/dev/null || { echo "build-zeromq: $tool missing (apt-get install g++ pkg-config)" >&2; exit 1; }
done
pkg-config --exists libzmq || { echo "build-zeromq: libzmq not found (apt-get install libzmq3-dev)" >&2; exit 1; }

zmq_js=$(node -p "require('./$zmq_dir/package.json').version")
abi=$(node -p 'process.versions.modules')
arch=$(node -p 'process.arch')
cxx=g++
if [ -n "$target" ] && [ "$target" != "$arch" ]; then
  [ "$target" = arm64 ] || { echo "build-zeromq: can cross-compile for arm64 only, not '$target'" >&2; exit 2; }
  arch=arm64 cxx=aarch64-linux-gnu-g++
  export PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
  command -v "$cxx" >/dev/null || { echo "build-zeromq: $cxx missing (apt-get install g++-aarch64-linux-gnu)" >&2; exit 1; }
  pkg-config --exists libzmq || { echo "build-zeromq: arm64 libzmq missing (dpkg --add-architecture arm64; apt-get install libzmq3-dev:arm64)" >&2; exit 1; }
fi
libzmq=$(pkg-config --modversion libzmq)
node_inc=$(node -p "require('path').resolve(process.execPath, '../../include/node')")
[ -f "$node_inc/node_api.h" ] || node_inc=/usr/include/node
[ -f "$node_inc/node_api.h" ] || { echo "build-zeromq: Node headers (node_api.h) not found" >&2; exit 1; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/starling
cached="$cache/zeromq-$zmq_js-node$abi-$arch-libzmq$libzmq.node"
if [ ! -f "$cached" ]; then
  echo "build-zeromq: compiling zeromq.js $zmq_js for Node ABI $abi ($arch) against libzmq $libzmq (about 30 s)" >&2
  mkdir -p "$cache"
  "$cxx" -std=c++20 -O2 -fPIC -shared -fvisibility=hidden \
    -DBUILDING_NODE_EXTENSION -DNAPI_CPP_EXCEPTIONS \
    -DV8_COMPRESS_POINTERS -DV8_31BIT_SMIS_ON_64BIT_ARCH -DV8_REVERSE_JSARGS \
    -I"$node_inc" -I node_modules/node-addon-api $(pkg-config --cflags libzmq) \
    "$zmq_dir"/src/{context,incoming_msg,module,observer,outgoing_msg,proxy,socket}.cc \
    -o "$cached.tmp" $(pkg-config --libs libzmq)
  mv "$cached.tmp" "$cached"
fi

if [ -n "$target" ]; then echo "$cached"; exit 0; fi

dest="$zmq_dir/build/linux/$arch/node/system-$abi-Release"
mkdir -p "$dest"
cp "$cached" "$dest/addon.node"
node -e '
  const [manifest, arch, abi, rel] = process.argv.slice(1);
  const key = JSON.stringify({ name: "", cross: false, os: "linux", arch, runtime: "node", nodeAPI: "node-addon-api",
    runtimeVersion: process.versions.node, buildType: "Release", abi: Number(abi), libc: "glibc", source: "system libzmq" });
  require("fs").writeFileSync(manifest, JSON.stringify({ [key]: rel }));
' "$zmq_dir/build/manifest.json" "$arch" "$abi" "linux/$arch/node/system-$abi-Release/addon.node"
node -e "const z = require('zeromq'); if (!z.capability.pgm) { console.error('build-zeromq: built, but pgm is still missing'); process.exit(1) } console.error('build-zeromq: zeromq.js uses libzmq ' + z.version + ' (pgm ' + z.capability.pgm + ', curve ' + z.capability.curve + ')')"
