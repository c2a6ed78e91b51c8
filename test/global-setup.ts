// Builds the bundle (dist/starling.cjs and the bench scripts) once per test run, before any test file runs:
// the process-level tests run the built CLI.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  execFileSync(process.execPath, [fileURLToPath(new URL('../image/build.mjs', import.meta.url))], { stdio: 'inherit' });
}
