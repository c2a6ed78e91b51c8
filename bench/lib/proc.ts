// What the packaging benches read about another process, from /proc, and the Node the executables embed.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** RSS, and its anonymous (private, not file-backed) part: the part the kernel cannot drop and re-read. Bytes. */
export function memoryOf(pid: number): { rss: number; anon: number } {
  const kb = (file: string, field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/${file}`, 'utf8'))![1]) * 1024;
  return { rss: kb('status', 'VmRSS'), anon: kb('smaps_rollup', 'Anonymous') };
}

/** CPU time used so far (user + system), seconds. */
export function cpuSecondsOf(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in USER_HZ (100)
}

/** The x64 Node 24 binary the executable embeds (image/fetch-node.sh fetches it once). */
export function embeddedNode(root: string): string {
  return execFileSync('bash', [join(root, 'image/fetch-node.sh'), 'x64'], { encoding: 'utf8' }).trim() + '/bin/node';
}
