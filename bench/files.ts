/**
 * File transfer and update figures, printed as a table (or --json):
 *   - throughput of `starling send` → `starling receive` between two network namespaces over veth, against the
 *     raw TCP rate of the same link in the same run (a file piped into a socket and written to a file on the
 *     other side, as `cat FILE | nc` and `nc -l > FILE` do), each over the raw link and over one shaped to
 *     100 Mbit/s (tc tbf: a fast Wi-Fi);
 *   - bytes moved per device by an update that changes only Starling's code: the bundle release (fetched with
 *     the running bundle's chunks reused), against the full executable's size.
 * Needs root (namespaces, tc). Median of 3 per figure.
 *
 *   node dist/bench/files.mjs [--mb N] [--json]
 */
import { execFileSync, spawn } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Segment } from '../test/net/netns.ts';
import { FileServer } from '../runtime/files/server.ts';
import { Fetch } from '../runtime/files/fetch.ts';
import { hashFile } from '../runtime/files/chunks.ts';

const self = fileURLToPath(import.meta.url);
const root = join(self, '../../..');
const CLI = join(root, 'dist/starling.cjs');

/** Roles run inside a namespace by this same script. */
async function rawReceiver(port: number, out: string): Promise<void> {
  const server = createServer((sock) => {
    const t0 = performance.now();
    const file = createWriteStream(out);
    sock.pipe(file);
    file.on('finish', () => {
      process.stdout.write(JSON.stringify({ event: 'done', seconds: (performance.now() - t0) / 1000 }) + '\n');
      server.close();
    });
  });
  server.listen(port, () => process.stdout.write(JSON.stringify({ event: 'listening' }) + '\n'));
}

async function rawSender(host: string, port: number, file: string): Promise<void> {
  const sock = connect(port, host, () => createReadStream(file).pipe(sock));
  await new Promise((r) => sock.on('close', r));
}

function run(ns: string, args: string[]): Promise<{ code: number | null; out: string; seconds: number }> {
  const t0 = performance.now();
  const p = spawn('ip', ['netns', 'exec', ns, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  return new Promise((r) => p.on('exit', (code) => r({ code, out, seconds: (performance.now() - t0) / 1000 })));
}

async function rawOnce(seg: Segment, file: string, dir: string): Promise<number> {
  const out = join(dir, 'raw.out');
  const recv = spawn('ip', ['netns', 'exec', seg.hosts[1]!, process.execPath, self, '--role', 'raw-receiver', '--port', '5901', '--out', out], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  recv.stdout.on('data', (d) => lines.push(...String(d).trim().split('\n')));
  while (!lines.some((l) => l.includes('listening'))) await new Promise((r) => setTimeout(r, 20));
  const t0 = performance.now();
  await run(seg.hosts[0]!, [process.execPath, self, '--role', 'raw-sender', '--host', seg.address(2), '--port', '5901', '--file', file]);
  while (!lines.some((l) => l.includes('done'))) await new Promise((r) => setTimeout(r, 5));
  const seconds = (performance.now() - t0) / 1000;
  recv.kill();
  rmSync(out, { force: true });
  return statSync(file).size / seconds;
}

async function starlingOnce(seg: Segment, file: string, dir: string, port: number): Promise<{ rate: number; hashSeconds: number }> {
  const inbox = join(dir, `inbox-${port}`);
  const recv = spawn('ip', ['netns', 'exec', seg.hosts[1]!, 'env', 'MALLOC_ARENA_MAX=2', process.execPath, CLI, 'receive', '--dir', inbox, '--name', 'bench-r', '--port', String(port), '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  recv.stdout.on('data', (d) => (out += d));
  while (!out.includes('STARTED')) await new Promise((r) => setTimeout(r, 20));
  // The sender hashes the file before offering it: timed apart, so the rate is the transfer's.
  const h0 = performance.now();
  await hashFile(file);
  const hashSeconds = (performance.now() - h0) / 1000;
  const r = await run(seg.hosts[0]!, [process.execPath, CLI, 'send', file, 'bench-r', '--port', String(port), '--json', '--wait', '10']);
  recv.kill();
  await new Promise((res) => recv.on('exit', res));
  rmSync(inbox, { recursive: true, force: true });
  if (r.code !== 0) throw new Error(`send failed: ${r.out}`);
  // The command's time includes starting Node, meeting the receiver (beacons, a second apart) and hashing.
  return { rate: statSync(file).size / Math.max(0.001, r.seconds - hashSeconds - startupSeconds), hashSeconds };
}

let startupSeconds = 0;

/** Bytes fetched for a bundle release when the running bundle seeds it (loopback, in-process). */
async function bundleUpdateBytes(dir: string): Promise<{ size: number; fetched: number; reused: number; chunks: number }> {
  const old = readFileSync(CLI);
  // A change of Starling's code: 120 bytes inserted in the middle (what a small edit does to a minified bundle:
  // everything after it moves).
  const mid = Math.floor(old.length / 2);
  const next = Buffer.concat([old.subarray(0, mid), Buffer.from(`/*${'x'.repeat(116)}*/`), old.subarray(mid)]);
  const seed = join(dir, 'old.cjs');
  const path = join(dir, 'new.cjs');
  writeFileSync(seed, old);
  writeFileSync(path, next);
  const server = new FileServer();
  await server.start('127.0.0.1');
  const t = await server.offer(path);
  const f = new Fetch({ id: t.sha256, size: t.size, table: t, dest: join(dir, 'fetched.cjs'), sources: [{ endpoint: server.endpoint }], seeds: [seed] });
  await f.run();
  await server.stop();
  const s = f.stats();
  return { size: t.size, fetched: s.bytesReceived, reused: s.chunksReused, chunks: s.chunks };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function conduct(): Promise<void> {
  const { values } = parseArgs({ options: { mb: { type: 'string' }, json: { type: 'boolean' } }, strict: false });
  const mb = Number(values.mb ?? 200);
  if (process.getuid?.() !== 0) throw new Error('bench/files needs root (network namespaces)');
  const dir = mkdtempSync(join(tmpdir(), 'starling-bench-files-'));
  const seg = new Segment('10.235.0');
  try {
    seg.create(2);
    const file = join(dir, 'payload.bin');
    const fd = openSync(file, 'w');
    for (let i = 0; i < mb; i++) writeSync(fd, randomBytes(1024 * 1024));
    closeSync(fd);
    // What the send command pays besides the transfer: Node's start and meeting the peer, with an empty file.
    const empty = join(dir, 'empty.bin');
    writeFileSync(empty, '');
    const emptyRun = await (async () => {
      const inbox = join(dir, 'inbox-empty');
      const recv = spawn('ip', ['netns', 'exec', seg.hosts[1]!, process.execPath, CLI, 'receive', '--dir', inbox, '--name', 'bench-r', '--port', '5891', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      recv.stdout.on('data', (d) => (out += d));
      while (!out.includes('STARTED')) await new Promise((r) => setTimeout(r, 20));
      const r = await run(seg.hosts[0]!, [process.execPath, CLI, 'send', empty, 'bench-r', '--port', '5891', '--json', '--wait', '10']);
      recv.kill();
      return r.seconds;
    })();
    startupSeconds = emptyRun;
    const figures: Record<string, number> = {};
    for (const link of ['veth', 'veth at 100 Mbit/s'] as const) {
      if (link !== 'veth') execFileSync('ip', ['netns', 'exec', seg.hub, 'tc', 'qdisc', 'add', 'dev', 'p2', 'root', 'tbf', 'rate', '100mbit', 'burst', '64kbit', 'latency', '100ms']);
      const raw: number[] = [];
      const ours: number[] = [];
      for (let i = 0; i < 3; i++) {
        raw.push(await rawOnce(seg, file, dir));
        ours.push((await starlingOnce(seg, file, dir, 5892 + i)).rate);
      }
      figures[`${link} raw`] = median(raw);
      figures[`${link} starling`] = median(ours);
    }
    const upd = await bundleUpdateBytes(dir);
    const exe = join(root, 'dist/starling-linux-arm64');
    const exeSize = existsSync(exe) ? statSync(exe).size : NaN;
    const mbs = (b: number) => `${(b / 1e6).toFixed(1)} MB/s`;
    const rows: [string, string, string, string][] = [];
    for (const link of ['veth', 'veth at 100 Mbit/s']) {
      const s = figures[`${link} starling`]!;
      const r = figures[`${link} raw`]!;
      rows.push([`${mb} MiB, ${link}`, mbs(s), mbs(r), `${Math.round((s / r) * 100)} %`]);
    }
    rows.push(['update, only Starling\'s code changed (bytes moved)', `${(upd.fetched / 1e6).toFixed(2)} MB (bundle ${(upd.size / 1e6).toFixed(2)} MB, ${upd.reused} of ${upd.chunks} chunks reused)`, `${(exeSize / 1e6).toFixed(1)} MB (the arm64 executable)`, `${((upd.fetched / exeSize) * 100).toFixed(2)} %`]);
    if (values.json) {
      process.stdout.write(JSON.stringify({ mb, figures, startupSeconds, update: { ...upd, executableBytes: exeSize } }) + '\n');
      return;
    }
    console.log(`File transfer bench — two network namespaces over veth; Node ${process.version}; median of 3; send's start-up and meeting (${startupSeconds.toFixed(2)} s, from an empty file) and hashing taken out`);
    const w = [52, 48, 36, 8];
    const line = (c: string[]) => '| ' + c.map((x, i) => x.padEnd(w[i]!)).join(' | ') + ' |';
    console.log(line(['figure', 'Starling (this run)', 'comparison (same run)', 'ratio']));
    console.log('|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|');
    for (const r of rows) console.log(line(r));
  } finally {
    seg.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

const { values: role } = parseArgs({ options: { role: { type: 'string' }, port: { type: 'string' }, out: { type: 'string' }, host: { type: 'string' }, file: { type: 'string' } }, strict: false });
if (role.role === 'raw-receiver') await rawReceiver(Number(role.port), String(role.out));
else if (role.role === 'raw-sender') await rawSender(String(role.host), Number(role.port), String(role.file));
else await conduct();
