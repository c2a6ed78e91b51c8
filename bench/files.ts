/**
 * File transfer and update figures, printed as a table (or --json):
 *   - transfer throughput (the file server and a fetch, as `starling send` and `receive` use them) between two
 *     network namespaces over veth, against the raw TCP rate of the same link in the same run (a file piped
 *     into a socket and written to a file on the other side, as `cat FILE | nc` and `nc -l > FILE` do), each
 *     over the raw link and over one shaped to 100 Mbit/s (tc tbf: a fast Wi-Fi), timed on the receiving side;
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
import { unitEnvironment } from './lib/proc.ts';

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

/** Starts this script in `ns` with a role; resolves with its first JSON line whose event is `event`, and the process. */
async function role(ns: string, args: string[], event: string): Promise<{ rec: Record<string, unknown>; proc: ReturnType<typeof spawn>; next(e: string): Promise<Record<string, unknown>> }> {
  const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, self, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...unitEnvironment(root) } });
  const recs: Record<string, unknown>[] = [];
  let buf = '';
  proc.stdout!.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      recs.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
      buf = buf.slice(i + 1);
    }
  });
  const next = async (e: string) => {
    for (;;) {
      const r = recs.find((x) => x.event === e);
      if (r) return r;
      if (proc.exitCode !== null) throw new Error(`bench role ${args.join(' ')} ended before '${e}'`);
      await new Promise((res) => setTimeout(res, 10));
    }
  };
  return { rec: await next(event), proc, next };
}

/** Raw TCP: the file piped into a socket, written to a file on the other side; timed by the receiver. */
async function rawOnce(seg: Segment, file: string, dir: string): Promise<number> {
  const out = join(dir, 'raw.out');
  const recv = await role(seg.hosts[1]!, ['--role', 'raw-receiver', '--port', '5901', '--out', out], 'listening');
  await run(seg.hosts[0]!, [process.execPath, self, '--role', 'raw-sender', '--host', seg.address(2), '--port', '5901', '--file', file]);
  const done = await recv.next('done');
  recv.proc.kill();
  rmSync(out, { force: true });
  return statSync(file).size / (done.seconds as number);
}

/** Starling: a file server (runtime/files/server.ts) on one side, a Fetch on the other, timed by the fetcher. */
async function starlingOnce(seg: Segment, file: string, dir: string): Promise<number> {
  const server = await role(seg.hosts[0]!, ['--role', 'file-server', '--host', seg.address(1), '--file', file], 'serving');
  const out = join(dir, 'fetched.bin');
  const fetcher = await role(seg.hosts[1]!, ['--role', 'fetcher', '--endpoint', String(server.rec.endpoint), '--id', String(server.rec.id), '--size', String(server.rec.size), '--out', out], 'done');
  server.proc.kill();
  fetcher.proc.kill();
  rmSync(out, { force: true });
  return statSync(file).size / (fetcher.rec.seconds as number);
}

async function fileServer(host: string, file: string): Promise<void> {
  const server = new FileServer();
  await server.start(host);
  const t = await server.offer(file);
  process.stdout.write(JSON.stringify({ event: 'serving', endpoint: server.endpoint, id: t.sha256, size: t.size }) + '\n');
}

async function fetcher(endpoint: string, id: string, size: number, out: string): Promise<void> {
  const t0 = performance.now();
  const f = new Fetch({ id, size, dest: out, sources: [{ endpoint }] });
  await f.run();
  process.stdout.write(JSON.stringify({ event: 'done', seconds: (performance.now() - t0) / 1000, ...f.stats() }) + '\n');
  process.exit(0);
}

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
    const figures: Record<string, number> = {};
    for (const link of ['veth', 'veth at 100 Mbit/s'] as const) {
      if (link !== 'veth') execFileSync('ip', ['netns', 'exec', seg.hub, 'tc', 'qdisc', 'add', 'dev', 'p2', 'root', 'tbf', 'rate', '100mbit', 'burst', '64kbit', 'latency', '100ms']);
      const raw: number[] = [];
      const ours: number[] = [];
      for (let i = 0; i < 3; i++) {
        raw.push(await rawOnce(seg, file, dir));
        ours.push(await starlingOnce(seg, file, dir));
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
      process.stdout.write(JSON.stringify({ mb, figures, update: { ...upd, executableBytes: exeSize } }) + '\n');
      return;
    }
    console.log(`File transfer bench — two network namespaces over veth; Node ${process.version}; median of 3; each timed on the receiving side, from the first request (Starling: the fetch, with every chunk checked and the whole file hashed and fsynced) or the accepted connection (raw TCP) to the file written`);
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

const { values: r } = parseArgs({ options: { role: { type: 'string' }, port: { type: 'string' }, out: { type: 'string' }, host: { type: 'string' }, file: { type: 'string' }, endpoint: { type: 'string' }, id: { type: 'string' }, size: { type: 'string' } }, strict: false });
if (r.role === 'raw-receiver') await rawReceiver(Number(r.port), String(r.out));
else if (r.role === 'raw-sender') await rawSender(String(r.host), Number(r.port), String(r.file));
else if (r.role === 'file-server') await fileServer(String(r.host), String(r.file));
else if (r.role === 'fetcher') await fetcher(String(r.endpoint), String(r.id), Number(r.size), String(r.out));
else await conduct();
