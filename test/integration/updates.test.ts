// Files and updates on a running device (services/files.ts), over real ZRE nodes and file sockets on loopback:
// what is refused and why, what gets installed, the inbox quota.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { servicesFrom } from '../../app/compose.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { ZreNode } from '../../runtime/zre/node.ts';
import { FileServer } from '../../runtime/files/server.ts';
import { HEADER_FILES, hashFile } from '../../runtime/files/chunks.ts';
import { decodeFiles, encodeFiles, type FilesMessage } from '../../runtime/files/messages.ts';
import { manifestOf, releaseKeygen, signManifest, type SignedManifest } from '../../runtime/update/release.ts';
import { readState } from '../../runtime/update/releases.ts';
import { tableOf } from '../../services/files.ts';
import { beaconPort, until } from '../helpers.ts';

const cleanup: (() => Promise<void> | void)[] = [];
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'starling-updates-'));
  process.env.STARLING_RELEASES = join(dir, 'releases');
});
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
  delete process.env.STARLING_RELEASES;
  rmSync(dir, { recursive: true, force: true });
});

const key = releaseKeygen();

async function setup(extra = ''): Promise<{ pusher: ZreNode; server: FileServer; device: string; restarts: string[]; ask(m: FilesMessage, pred: (m: FilesMessage) => boolean, ms?: number): Promise<FilesMessage> }> {
  const port = beaconPort();
  const config = parseConfig(`simulate: true
web: { listen: "off" }
node: { name: dev, iface: lo, port: ${port} }
security: { mode: none }
sensors:
  - { platform: sim, name: air, interval: 100ms }
update: { keys: ["${key.publicKey}"], commit_after: 1s }
files: { inbox: "${join(dir, 'inbox')}" ${extra} }`);
  const log = new LogRing(1000, null);
  const { services, files } = servicesFrom(config, log);
  const sup = new Supervisor(services, log);
  await sup.start();
  cleanup.push(() => sup.stop());
  const restarts: string[] = [];
  files.watch(() => sup.healthy(), (why) => restarts.push(why));
  const server = new FileServer();
  await server.start('127.0.0.1');
  cleanup.push(() => server.stop());
  const pusher = new ZreNode({ name: 'pusher', iface: 'lo', beaconPort: port, beaconInterval: 100, headers: { [HEADER_FILES]: server.endpoint } });
  await pusher.start();
  cleanup.push(() => pusher.stop());
  await until(() => pusher.findPeer('dev') !== undefined, 10_000, 'the device on the mesh');
  const inbox: { from: string; m: FilesMessage }[] = [];
  pusher.on('whisper', (w) => {
    const m = decodeFiles(w.content);
    if (m) inbox.push({ from: w.name, m });
  });
  return {
    pusher, server, device: pusher.findPeer('dev')!.peer, restarts,
    async ask(m, pred, ms = 10_000) {
      const from = inbox.length;
      pusher.whisper(pusher.findPeer('dev')!.peer, ...encodeFiles(m));
      await until(() => inbox.slice(from).some((x) => pred(x.m)), ms, 'an answer');
      return inbox.slice(from).find((x) => pred(x.m))!.m;
    },
  };
}

function release(version: string, bytes: Buffer, opts: { rollback?: boolean; signer?: string } = {}): Promise<{ path: string; signed: SignedManifest }> {
  const path = join(dir, `release-${version}.cjs`);
  writeFileSync(path, bytes);
  return hashFile(path).then((t) => ({ path, signed: signManifest(manifestOf(t, version, { rollback: opts.rollback }), opts.signer ?? key.privatePem) }));
}

const status = (m: FilesMessage) => ('status' in m ? m.status : undefined);
const final = (m: FilesMessage) => ['refused', 'failed', 'restarting', 'cancelled'].includes(status(m)?.state ?? '');

describe('updates on a running device', () => {
  it('refuses a manifest with a bad signature, a lower version, or a file that does not match it — installing nothing, saying why', async () => {
    const s = await setup();
    const other = releaseKeygen();
    const bad = await release('0.2.0', randomBytes(300_000), { signer: other.privatePem });
    expect(status(await s.ask({ update: bad.signed }, final))).toMatchObject({ state: 'refused', error: expect.stringMatching(/^bad signature: not signed by a trusted release key/) });

    const lower = await release('0.0.9', randomBytes(1000));
    expect(status(await s.ask({ update: lower.signed }, final))).toMatchObject({ state: 'refused', error: 'version 0.0.9 is lower than the installed 0.1.0 (and the manifest is not marked rollback)' });

    // Tampered after signing: the signature no longer covers it.
    const tampered = await release('0.2.0', randomBytes(1000));
    tampered.signed.manifest.size += 1;
    expect(status(await s.ask({ update: tampered.signed }, final))).toMatchObject({ state: 'refused', error: expect.stringMatching(/manifest lists|bad signature/) });

    // Correctly signed, but what is served is another file: every chunk fails its hash, nothing is installed.
    const good = await release('0.2.0', randomBytes(600_000));
    const impostor = join(dir, 'impostor');
    writeFileSync(impostor, randomBytes(600_000));
    await s.server.offer(impostor, tableOf(good.signed));
    const m = await s.ask({ update: good.signed }, (x) => status(x)?.state === 'fetching');
    expect(status(m)).toMatchObject({ target: '0.2.0' });
    let last: FilesMessage | undefined;
    await until(() => {
      void s.ask({ 'update-query': {} }, (x) => 'status' in x, 2000).then((x) => (last = x));
      return last !== undefined && status(last)?.state === 'failed';
    }, 15_000, 'the update to fail');
    expect(status(last!)?.error).toMatch(/no source left: .* sent three bad replies/);
    expect(existsSync(join(dir, 'releases', 'current'))).toBe(false);
    expect(s.restarts).toEqual([]);
  });

  it('installs a good release beside the running program, swaps current atomically and asks to restart', async () => {
    const s = await setup();
    const good = await release('0.2.0', randomBytes(700_000));
    await s.server.offer(good.path, tableOf(good.signed));
    await s.ask({ update: good.signed }, (x) => status(x)?.state === 'fetching');
    await until(() => s.restarts.length > 0, 15_000, 'the restart');
    expect(s.restarts).toEqual(['update to 0.2.0']);
    const rel = join(dir, 'releases');
    expect(readlinkSync(join(rel, 'current'))).toBe('0.2.0');
    expect(existsSync(join(rel, 'previous'))).toBe(false); // the installed program ran before
    expect(readFileSync(join(rel, '0.2.0', 'starling.cjs')).equals(readFileSync(good.path))).toBe(true);
    expect(JSON.parse(readFileSync(join(rel, '0.2.0', 'manifest.json'), 'utf8'))).toEqual(good.signed);
    expect(readState(rel)).toMatchObject({ version: '0.2.0', state: 'trying', attempts: 0, maxAttempts: 3, from: '0.1.0' });
    expect(status(await s.ask({ 'update-query': {} }, (x) => 'status' in x))).toMatchObject({ state: 'restarting', target: '0.2.0' });
  });

  it('files: accepted into the inbox up to the quota, refused beyond it with the reason', async () => {
    const s = await setup(', accept: true, quota_mb: 1');
    const a = join(dir, 'a.bin');
    writeFileSync(a, randomBytes(600_000));
    const ta = await s.server.offer(a);
    const got = await s.ask({ offer: { id: ta.sha256, name: '../../etc/a.bin', size: ta.size } }, (x) => 'received' in x);
    expect(got).toEqual({ received: { id: ta.sha256, ok: true, path: join(dir, 'inbox', 'a.bin') } });
    expect(readFileSync(join(dir, 'inbox', 'a.bin')).equals(readFileSync(a))).toBe(true);
    const b = join(dir, 'b.bin');
    writeFileSync(b, randomBytes(600_000));
    const tb = await s.server.offer(b);
    const no = await s.ask({ offer: { id: tb.sha256, name: 'b.bin', size: tb.size } }, (x) => 'received' in x);
    expect(no).toMatchObject({ received: { ok: false, error: expect.stringMatching(/^over the inbox quota: 600000 bytes offered, 600000 of 1048576 used/) } });
  });
});
