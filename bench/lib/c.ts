// The C references: bench/c/*.c, compiled where the bench runs, and Zyre C's own figures.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Compiles bench/c/`name`.c against libzmq into `dir`; returns the binary. Throws saying what is missing. */
export function buildC(name: string, dir: string): string {
  const bin = join(dir, name);
  try {
    execFileSync('cc', ['-O2', '-o', bin, fileURLToPath(new URL(`../../bench/c/${name}.c`, import.meta.url)), '-lzmq'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`bench/c/${name}.c not built: ${(e as Error).message.split('\n')[0]} (needs cc and libzmq3-dev: bash image/setup.sh)`);
  }
  return bin;
}

/**
 * Zyre C 2.0.1 → Zyre C, measured side by side with Starling over veth, medians of 3 (issue 18): the reference
 * for the ZRE figures, since Zyre C cannot be built here.
 */
export const ZYRE_C = { whisper16PerSec: 92_000, whisper1kPerSec: 90_000, discoveryMs: 2.2, idleRssMB: 7.3, receiverRssMB: 11 };
