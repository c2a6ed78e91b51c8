/**
 * The web view's files (HTML, JS, CSS), each with its gzip and an ETag. image/build.mjs builds the page from
 * services/web/page/ into dist/web/ and, in the bundle, replaces this module with one holding those files
 * inline, so the bundle and the single executable serve them with nothing beside them. Run from the sources
 * (the tests), they are read from dist/web/ (npm run build makes it).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';

export interface Asset {
  type: string;
  body: Buffer;
  /** The body gzipped (level 9), made at the first request that accepts it: about 15 ms for the page's script, which start-up no longer pays. */
  readonly gzip: Buffer;
  etag: string;
}

const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml' };

/** An asset from its bytes (the bundle's replacement of this module calls it too). */
export function asset(name: string, body: Buffer): Asset {
  const type = TYPES[name.split('.').pop() ?? ''] ?? 'application/octet-stream';
  let gzip: Buffer | undefined;
  return {
    type,
    body,
    get gzip() {
      return (gzip ??= (process.getBuiltinModule('node:zlib') as typeof import('node:zlib')).gzipSync(body, { level: 9 }));
    },
    etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 16)}"`,
  };
}

let cached: Map<string, Asset> | undefined;
const dir = join(import.meta.dirname, '../../dist/web');

/** Throws, saying what to run, when the page was not built; reads nothing else (the view checks it at start). */
export function checkWebAssets(): void {
  if (!existsSync(join(dir, 'index.html'))) throw new Error(`the web view's page is not built (${dir}): run npm run build`);
}

/**
 * Every file of the page by its path (`/index.html`, `/app.js`, …), made at the first request: a device nobody
 * looks at holds none of it (in the bundle, about 0.16 MB: the files and their base64 text). Throws when the
 * page was not built.
 */
export function webAssets(): Map<string, Asset> {
  if (cached) return cached;
  checkWebAssets();
  cached = new Map(readdirSync(dir).map((n) => [`/${n}`, asset(n, readFileSync(join(dir, n)))]));
  return cached;
}
