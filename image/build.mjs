// Builds the `starling` CLI and the bench scripts into dist/ with esbuild.
// Runs on `npm ci` (prepare), so `npx starling …` works right after install.
// zeromq is a native addon: it stays external and is loaded from node_modules
// (issue 7 packs it beside the bundle for the single executable).
import { build } from 'esbuild';
import { readdirSync, chmodSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  // Native addons stay external: zeromq, and onoff's epoll (onoff is loaded only when a real line opens).
  // aedes (the optional embedded broker, ~450 KB bundled) is loaded from node_modules only when it runs.
  external: ['zeromq', 'onoff', 'epoll', 'aedes'],
  sourcemap: 'linked',
  logLevel: 'warning',
  // CommonJS dependencies inside an ESM bundle need `require`.
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
};

await build({
  ...common,
  entryPoints: [join(root, 'runtime/cli/main.ts')],
  outfile: join(root, 'dist/starling.mjs'),
  banner: { js: '#!/usr/bin/env node\n' + common.banner.js },
});
chmodSync(join(root, 'dist/starling.mjs'), 0o755);

// npm links the bins of dependencies into node_modules/.bin, never the project's own; link ours there so
// `npx starling …` runs this checkout's CLI right after `npm ci` (instead of npx fetching a package).
const binDir = join(root, 'node_modules/.bin');
mkdirSync(binDir, { recursive: true });
rmSync(join(binDir, 'starling'), { force: true });
symlinkSync('../../dist/starling.mjs', join(binDir, 'starling'));

const benches = readdirSync(join(root, 'bench')).filter((f) => f.endsWith('.ts'));
if (benches.length > 0) {
  await build({
    ...common,
    entryPoints: benches.map((f) => join(root, 'bench', f)),
    outdir: join(root, 'dist/bench'),
    outExtension: { '.js': '.mjs' },
  });
}
