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

/**
 * The environment the .deb's unit runs the device with (its `Environment=` lines, image/deb/starling.service:
 * today MALLOC_ARENA_MAX=2), for benches that measure a device as it runs on a board.
 */
export function unitEnvironment(root: string): Record<string, string> {
  const unit = readFileSync(join(root, 'image/deb/starling.service'), 'utf8');
  return Object.fromEntries([...unit.matchAll(/^Environment=([A-Z_][A-Z0-9_]*)=(.*)$/gm)].map((m) => [m[1]!, m[2]!.trim()]));
}

/** What `process.memoryUsage()` reports inside a Node process, bytes. */
export interface NodeMemory { rss: number; heapTotal: number; heapUsed: number; external: number; arrayBuffers: number }

/**
 * Forces two full garbage collections in another Node process (the executable included) and returns its
 * `process.memoryUsage()` afterwards, so a figure holds only what is still referenced, not what waits for V8's
 * next major collection. Through the inspector: SIGUSR1 opens it on 127.0.0.1:9229 (Node's default, root or the
 * process's owner only), which stays open afterwards, so send it before the first figure and every figure pays
 * the same. `netns` names the namespace whose loopback the process listens on. A client in Node 20 needs
 * `--experimental-websocket`, so it runs as a child; about 0.3 s.
 */
export function collectGarbage(netns?: string): NodeMemory {
  const script = `
const list = await (await fetch('http://127.0.0.1:9229/json/list')).json();
const ws = new WebSocket(list[0].webSocketDebuggerUrl);
let id = 0; const pending = new Map();
ws.onmessage = (e) => { const m = JSON.parse(e.data); pending.get(m.id)?.(m); };
const call = (method, params = {}) => new Promise((r) => { const i = ++id; pending.set(i, r); ws.send(JSON.stringify({ id: i, method, params })); });
await new Promise((r) => { ws.onopen = r; });
await call('HeapProfiler.collectGarbage');
await call('HeapProfiler.collectGarbage');
const r = await call('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true });
process.stdout.write(r.result.result.value);
ws.close();`;
  const argv = [process.execPath, '--experimental-websocket', '--no-warnings', '--input-type=module', '-e', script];
  const out = netns ? execFileSync('ip', ['netns', 'exec', netns, ...argv], { encoding: 'utf8', timeout: 30_000 }) : execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 30_000 });
  return JSON.parse(out) as NodeMemory;
}

/** Opens the inspector of a running Node process (see collectGarbage) and waits until it listens. */
export async function openInspector(pid: number, netns?: string): Promise<void> {
  process.kill(pid, 'SIGUSR1');
  const probe = [process.execPath, '-e', "fetch('http://127.0.0.1:9229/json/list').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"];
  for (let i = 0; i < 50; i++) {
    try {
      if (netns) execFileSync('ip', ['netns', 'exec', netns, ...probe]);
      else execFileSync(probe[0]!, probe.slice(1));
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`the inspector of process ${pid} did not open on 127.0.0.1:9229`);
}
