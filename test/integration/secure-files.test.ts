// Secure mode and files (issue 15, point 1): the file server is a CURVE server for keys with `read`; offers
// and pushed updates are obeyed only from keys with `command`. Real CURVE sockets and ZAP on loopback.
import { afterEach, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { curveKeyPair } from 'zeromq';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { ZreNode } from '../../runtime/zre/node.ts';
import { createIdentity } from '../../runtime/security/identity.ts';
import { TrustStore } from '../../runtime/security/trust.ts';
import { openSecurity } from '../../runtime/security/context.ts';
import { servicesFrom } from '../../app/compose.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { FileServer } from '../../runtime/files/server.ts';
import { Fetch } from '../../runtime/files/fetch.ts';
import { HEADER_FILES } from '../../runtime/files/chunks.ts';
import { decodeFiles, encodeFiles, type FilesMessage } from '../../runtime/files/messages.ts';
import { manifestOf, releaseKeygen, signManifest } from '../../runtime/update/release.ts';
import { hashFile } from '../../runtime/files/chunks.ts';
import { beaconPort, until, waitFor } from '../helpers.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

it('only a key with the command role may send a file or push an update; only trusted keys fetch from the file server', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'starling-secure-files-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  process.env.STARLING_RELEASES = join(dir, 'releases');
  cleanup.push(() => void delete process.env.STARLING_RELEASES);
  const [boss, reader, stranger] = [curveKeyPair(), curveKeyPair(), curveKeyPair()];
  const devId = createIdentity(join(dir, 'dev-id'));
  const trust = new TrustStore(join(dir, 'dev-trusted'));
  trust.add(boss.publicKey, { name: 'boss', roles: ['read', 'command'] });
  trust.add(reader.publicKey, { name: 'reader', roles: ['read'] });
  const rk = releaseKeygen();
  const port = beaconPort();
  const config = parseConfig(`simulate: true
web: { listen: "off" }
node: { name: dev, iface: lo, port: ${port} }
security: { mode: curve, identity: "${join(dir, 'dev-id')}", trusted: "${join(dir, 'dev-trusted')}" }
sensors:
  - { platform: sim, name: air, interval: 100ms }
files: { accept: true, inbox: "${join(dir, 'inbox')}" }
update: { keys: ["${rk.publicKey}"] }`);
  const log = new LogRing(1000, null);
  const { services, files, device } = servicesFrom(config, log, openSecurity(config.security, { create: false }));
  const sup = new Supervisor(services, log);
  await sup.start();
  cleanup.push(() => sup.stop());

  const file = join(dir, 'note.txt');
  writeFileSync(file, randomBytes(300_000));
  const peer = async (name: string, keys: { publicKey: string; secretKey: string }) => {
    const server = new FileServer({ curve: { ...keys, zapDomain: `files-${name}`, allows: (k) => k === devId.publicKey } });
    await server.start('127.0.0.1');
    cleanup.push(() => server.stop());
    const node = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, name, headers: { [HEADER_FILES]: server.endpoint }, curve: { ...keys, allows: (k) => k === devId.publicKey } });
    const got: FilesMessage[] = [];
    node.on('whisper', (m) => {
      const f = decodeFiles(m.content);
      if (f) got.push(f);
    });
    await node.start();
    cleanup.push(() => node.stop());
    await waitFor(node, 'enter', (p) => p.name === 'dev', 10_000);
    const t = await server.offer(file);
    return { node, got, t, to: () => node.findPeer('dev')!.peer };
  };

  // The reader may join and read, not send: its offer and its push are refused.
  const r = await peer('reader', reader);
  r.node.whisper(r.to(), ...encodeFiles({ offer: { id: r.t.sha256, name: 'note.txt', size: r.t.size } }));
  const signed = signManifest(manifestOf(await hashFile(file), '0.2.0'), rk.privatePem);
  r.node.whisper(r.to(), ...encodeFiles({ update: signed }));
  await until(() => r.got.length >= 2, 10_000, 'two answers');
  expect(r.got).toEqual(expect.arrayContaining([
    { received: { id: r.t.sha256, ok: false, error: 'not authorised' } },
    { status: expect.objectContaining({ state: 'refused', error: 'not authorised' }) },
  ]));
  expect(files.stats()).toMatchObject({ unauthorised: 2, filesReceived: 0 });

  // The boss (command role) sends; the device fetches over CURVE from the boss's file server.
  const b = await peer('boss', boss);
  b.node.whisper(b.to(), ...encodeFiles({ offer: { id: b.t.sha256, name: 'note.txt', size: b.t.size } }));
  await until(() => b.got.some((m) => 'received' in m), 10_000, 'the file received');
  expect(b.got.find((m) => 'received' in m)).toEqual({ received: { id: b.t.sha256, ok: true, path: join(dir, 'inbox', 'note.txt') } });
  expect(readFileSync(join(dir, 'inbox', 'note.txt')).equals(readFileSync(file))).toBe(true);

  // The device's own file server: a trusted key (read) fetches; an untrusted one is refused by ZAP.
  const srv = device.files!;
  const offered = await srv.offer(file);
  const ok = new Fetch({ id: offered.sha256, size: offered.size, dest: join(dir, 'by-reader'), sources: [{ endpoint: srv.endpoint, serverKey: devId.publicKey }], client: reader });
  await ok.run();
  const refusedBefore = srv.stats().fetchersRefused;
  const no = new Fetch({ id: offered.sha256, size: offered.size, dest: join(dir, 'by-stranger'), sources: [{ endpoint: srv.endpoint, serverKey: devId.publicKey }], client: stranger });
  const run = no.run();
  await until(() => srv.stats().fetchersRefused > refusedBefore, 10_000, 'the stranger refused by ZAP');
  no.cancel('refused');
  await expect(run).rejects.toThrow('refused');
  expect(no.stats().held).toBe(0);
}, 40_000);
