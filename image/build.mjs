// Builds the `starling` CLI and the bench scripts into dist/ with esbuild.
// Runs on `npm ci` (prepare), so `npx starling …` works right after install.
//
// dist/starling.cjs       the whole CLI in one minified CommonJS file (CommonJS because Node 24's single
//                         executable runs only CommonJS), source map beside it. Every JS dependency is inside;
//                         optional parts (aedes, mqtt-packet, dbus-next, onoff) are dynamic imports, which
//                         esbuild keeps as lazily evaluated modules, so a command that never uses them does not
//                         pay for them.
// dist/sea-main.cjs       the single executable's first script (app/sea-main.ts), which runs the bundle,
// dist/starling.sea.js    wrapped as a CommonJS module (the executable's asset).
// dist/native/*.node      the native addons the bundle loads, for the Node that runs this script:
//                         zeromq-system (against the system libzmq, with epgm; from image/build-zeromq.sh's
//                         cache, when built), zeromq (zeromq.js's prebuilt glibc-127 addon, no epgm), epoll,
//                         sd_notify (image/native/sd_notify.c).
// dist/native/nfq-delay   starling simulate's delay line without netem (image/native/nfq-delay.c), where
//                         libnetfilter_queue is installed.
//
// Native addons: a plugin replaces zeromq's loader (cmake-ts) and epoll's (bindings) with runtime/native.ts,
// which loads them from native/ beside the bundle or from the single executable's assets. Nothing is copied
// from node_modules at run time.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, copyFileSync, existsSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const nativeLoader = join(root, 'runtime/native.ts');

/** esbuild plugin: zeromq's and epoll's addon loaders become calls to runtime/native.ts's loadNative. */
const nativeAddons = {
  name: 'native-addons',
  setup(b) {
    const replace = (filter, contents) => b.onLoad({ filter }, () => ({ contents, loader: 'js', resolveDir: root }));
    // zeromq loads while the bundle itself loads, before the CLI can catch anything: a failure is one line.
    replace(/[\\/]node_modules[\\/]zeromq[\\/]lib[\\/]load-addon\.js$/,
      `Object.defineProperty(exports, '__esModule', { value: true });
       try { exports.default = require(${JSON.stringify(nativeLoader)}).loadNative('zeromq'); }
       catch (e) { process.stderr.write('starling: ' + e.message + '\\n'); process.exit(1); }`);
    replace(/[\\/]node_modules[\\/]epoll[\\/]epoll\.js$/, `module.exports = require(${JSON.stringify(nativeLoader)}).loadNative('epoll');`);
  },
};

// Tests rebuild while other tests run the CLI: every file is written under a temporary name and renamed into
// place, so a reader sees the old file or the new one, never half of one.
const atomicWrite = (path, data, mode = 0o644) => {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, path);
};
const atomicCopy = (from, to) => {
  const tmp = `${to}.${process.pid}.tmp`;
  copyFileSync(from, tmp);
  renameSync(tmp, to);
};

// The web view's page (services/web/page/): one minified script and one stylesheet, for browsers, into
// dist/web/ (read from there when the sources run, as in the tests).
const webDir = join(root, 'dist/web');
const page = await build({
  write: false,
  entryPoints: [join(root, 'services/web/page/app.ts')],
  outdir: webDir,
  bundle: true,
  platform: 'browser',
  target: ['chrome100', 'firefox100', 'safari15'],
  format: 'iife',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
});
mkdirSync(webDir, { recursive: true });
const webFiles = { 'index.html': readFileSync(join(root, 'services/web/page/index.html')) };
for (const f of page.outputFiles) webFiles[f.path.slice(webDir.length + 1)] = Buffer.from(f.contents);
for (const [name, data] of Object.entries(webFiles)) atomicWrite(join(webDir, name), data);
for (const f of readdirSync(webDir)) if (!(f in webFiles) && !f.endsWith('.tmp')) rmSync(join(webDir, f), { force: true });

/** esbuild plugin: services/web/assets.ts, in the bundle, holds the page's files inline. */
const webAssetsInline = {
  name: 'web-assets',
  setup(b) {
    b.onLoad({ filter: /[\\/]services[\\/]web[\\/]assets\.ts$/ }, async (args) => {
      const source = readFileSync(args.path, 'utf8');
      const files = Object.entries(webFiles).map(([n, d]) => `[${JSON.stringify('/' + n)}, asset(${JSON.stringify(n)}, Buffer.from(${JSON.stringify(d.toString('base64'))}, 'base64'))]`);
      const inline = source.replace(/let cached[^]*$/, `let cached;\nexport function checkWebAssets(): void {}\nexport function webAssets(): Map<string, Asset> { return (cached ??= new Map([${files.join(',')}])); }\n`);
      return { contents: inline, loader: 'ts', resolveDir: dirname(args.path) };
    });
  },
};

const main = await build({
  write: false,
  entryPoints: [join(root, 'app/cli/main.ts')],
  outfile: join(root, 'dist/starling.cjs'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  logLevel: 'warning',
  plugins: [nativeAddons, webAssetsInline],
  // dbus-next's optional parts: usocket (a native addon; without it dbus-next connects to the bus socket with
  // node:net, which is all the system bus needs) and x11 (session-bus autolaunch on a desktop). Left out.
  external: ['usocket', 'x11'],
  banner: { js: '#!/usr/bin/env node' },
  // The single executable's V8 flags (image/sea-flags.json), for what the bundle starts as a node of its own
  // (starling simulate's workers): the executable carries them itself, the bundle's Node does not.
  define: { STARLING_EXEC_ARGV: JSON.stringify(JSON.stringify(JSON.parse(readFileSync(join(root, 'image/sea-flags.json'), 'utf8')).execArgv)) },
  metafile: false,
});
mkdirSync(join(root, 'dist'), { recursive: true });
for (const f of main.outputFiles) atomicWrite(f.path, f.contents, f.path.endsWith('.cjs') ? 0o755 : 0o644);
rmSync(join(root, 'dist/starling.mjs'), { force: true });
rmSync(join(root, 'dist/starling.mjs.map'), { force: true });

// The single executable's first script (app/sea-main.ts) and, for its asset, the bundle as Node's CommonJS
// loader wraps a module: the stage compiles that text as it is, and image/build-exe.sh makes the base code
// cache from the very same text. The bundle's digest names the caches the executable writes.
const bundleText = readFileSync(join(root, 'dist/starling.cjs'), 'utf8');
atomicWrite(join(root, 'dist/starling.sea.js'), `(function (exports, require, module, __filename, __dirname) { ${bundleText.replace(/^#!.*/, '')}\n});`, 0o644);
const bundleDigest = createHash('sha256').update(bundleText).digest('hex');
const stage = await build({
  write: false,
  entryPoints: [join(root, 'app/sea-main.ts')],
  outfile: join(root, 'dist/sea-main.cjs'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
  define: { STARLING_BUNDLE_DIGEST: JSON.stringify(bundleDigest) },
});
for (const f of stage.outputFiles) atomicWrite(f.path, f.contents, 0o644);

// The addons for the Node running this build (the bundle is run with it; the executables get their own).
const native = join(root, 'dist/native');
mkdirSync(native, { recursive: true });
const req = createRequire(join(root, 'package.json'));
const abi = process.versions.modules;
const zmqDir = dirname(req.resolve('zeromq/package.json'));
const zmqVersion = req('zeromq/package.json').version;
const cache = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'starling');
const addons = {
  // image/build-zeromq.sh's build (system libzmq, with OpenPGM), if it has run.
  'zeromq-system': existsSync(cache)
    ? readdirSync(cache).filter((f) => f.startsWith(`zeromq-${zmqVersion}-node${abi}-${process.arch}-libzmq`) && f.endsWith('.node')).map((f) => join(cache, f))[0]
    : undefined,
  // zeromq.js's prebuilt, chosen deliberately: glibc-127 is the x64 build that loads on Debian bookworm
  // (glibc 2.36); its glibc-115 and glibc-147 builds need glibc 2.38.
  zeromq: join(zmqDir, `build/linux/${process.arch}/node/glibc-127-Release/addon.node`),
  epoll: join(dirname(req.resolve('epoll/package.json')), 'build/Release/epoll.node'),
  // systemd notifications from the main process (image/native/sd_notify.c); without a C compiler the CLI
  // falls back to systemd-notify.
  sd_notify: (() => {
    try {
      return execFileSync('bash', [join(root, 'image/build-sd-notify.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    } catch (e) {
      console.warn(`build: no sd_notify addon (${String(e.stderr ?? e.message).trim()}); notifications will go through systemd-notify`);
      return undefined;
    }
  })(),
};
for (const [name, path] of Object.entries(addons)) {
  if (path && existsSync(path)) atomicCopy(path, join(native, `${name}.node`));
  else rmSync(join(native, `${name}.node`), { force: true });
}
// starling simulate's delay line where the kernel has no netem (image/native/nfq-delay.c), where
// libnetfilter_queue is installed (the test machine); quietly left out elsewhere: only --delay without netem needs it.
try {
  atomicCopy(execFileSync('bash', [join(root, 'image/build-nfq-delay.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim(), join(native, 'nfq-delay'));
} catch {
  rmSync(join(native, 'nfq-delay'), { force: true });
}

// npm links the bins of dependencies into node_modules/.bin, never the project's own; link ours there so
// `npx starling …` runs this checkout's CLI right after `npm ci` (instead of npx fetching a package).
const binDir = join(root, 'node_modules/.bin');
mkdirSync(binDir, { recursive: true });
const link = join(binDir, `starling.${process.pid}.tmp`);
rmSync(link, { force: true });
symlinkSync('../../dist/starling.cjs', link);
renameSync(link, join(binDir, 'starling'));

// Bench scripts: ESM, dependencies loaded from node_modules (they measure the code, not the packaging).
const benches = readdirSync(join(root, 'bench')).filter((f) => f.endsWith('.ts'));
if (benches.length > 0) {
  await build({
    entryPoints: benches.map((f) => join(root, 'bench', f)),
    outdir: join(root, 'dist/bench'),
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    external: ['zeromq', 'onoff', 'epoll', 'aedes', 'dbus-next', 'mqtt-packet'],
    sourcemap: 'linked',
    logLevel: 'warning',
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  });
}
