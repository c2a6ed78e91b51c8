// `starling send`, `receive`, `release` and `update`: files and signed releases over the mesh (README "Files and updates").
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { CliError, intOption, MESH_HELP, MESH_OPTIONS, meshSecurity, nodeOptions, out, parse, secondsOption, sleep, startNode, untilSignal, waitUntil, type Command } from './common.ts';
import type { PeerInfo, ZreNode, ZreNodeOptions } from '../../runtime/zre/node.ts';
import { chooseInterface } from '../../runtime/net/iface.ts';
import { FileServer } from '../../runtime/files/server.ts';
import { HEADER_FILES, hashFile } from '../../runtime/files/chunks.ts';
import { decodeFiles, encodeFiles, type FilesMessage, type UpdateStatus } from '../../runtime/files/messages.ts';
import { manifestOf, releaseKeygen, signManifest, keyFingerprint, type SignedManifest } from '../../runtime/update/release.ts';
import { publisherCurve } from '../../runtime/security/context.ts';
import { parseConfig } from '../../runtime/config/load.ts';
import { FilesService, tableOf } from '../../services/files.ts';

const WAIT = { wait: { type: 'string' } } as const;

/** A node with a file server advertised in its HELLO (on the interface the node will use). */
async function serving(opts: ZreNodeOptions, values: Parameters<typeof meshSecurity>[0], maxUploads?: number): Promise<{ node: ZreNode; server: FileServer }> {
  let address: string;
  try {
    address = chooseInterface(opts.iface).address;
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  }
  const sec = meshSecurity(values);
  const server = new FileServer({ ...(maxUploads ? { maxUploads } : {}), ...(sec ? { curve: { ...publisherCurve(sec), zapDomain: `${sec.zapDomain}.files` } } : {}) });
  await server.start(address);
  const node = await startNode({ ...opts, iface: opts.iface ?? address, headers: { ...opts.headers, [HEADER_FILES]: server.endpoint } });
  return { node, server };
}

/** The peers a target names: one by name or UUID, else every peer in a group of that name. */
function targets(node: ZreNode, target: string | undefined): PeerInfo[] {
  const all = node.peerList();
  if (target === undefined) return all.filter((p) => p.headers[HEADER_FILES]);
  const one = node.findPeer(target);
  return one ? [one] : all.filter((p) => p.groups.includes(target));
}

/** FILES messages whispered to `node`, by sender name. */
function inbox(node: ZreNode): { next(from: (name: string) => boolean, pred: (m: FilesMessage) => boolean, ms: number): Promise<FilesMessage | undefined>; stop(): void } {
  const waiters = new Set<{ from: (n: string) => boolean; pred: (m: FilesMessage) => boolean; resolve: (m: FilesMessage | undefined) => void }>();
  const on = (m: { name: string; content: Buffer[] }) => {
    let msg: FilesMessage | undefined;
    try {
      msg = decodeFiles(m.content);
    } catch {
      return;
    }
    if (!msg) return;
    for (const w of waiters) if (w.from(m.name) && w.pred(msg)) {
      waiters.delete(w);
      w.resolve(msg);
    }
  };
  node.on('whisper', on);
  return {
    next: (from, pred, ms) => new Promise((res) => {
      const w = { from, pred, resolve: res };
      waiters.add(w);
      setTimeout(() => {
        if (waiters.delete(w)) res(undefined);
      }, ms).unref();
    }),
    stop: () => node.off('whisper', on),
  };
}

export const send: Command = {
  help: `Usage: starling send FILE NAME|UUID|GROUP [--as NAME] [--wait SEC] [--max-uploads N] [--json] [mesh options]

Offers FILE to the peer (or every peer in the group) and serves it until each has
fetched it — in 256 KiB chunks, each checked by SHA-256 — or refused it. The receiver
(starling run with files.accept, or starling receive) puts it in its inbox under NAME
(default: FILE's name). Exits 1 if any receiver refused or failed.

  --as NAME         the name in the receiver's inbox
  --wait SEC        how long to wait for the target to appear (default 5)
  --max-uploads N   receivers served at once (default 4; the rest wait their turn)
With --json, one line per receiver, then the server's counters (chunks and bytes served,
uploadsPeak, uploadsBusy).
${MESH_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...MESH_OPTIONS, ...WAIT, as: { type: 'string' }, 'max-uploads': { type: 'string' } });
    if (positionals.length !== 2) throw new CliError(`send takes FILE and NAME|UUID|GROUP, got ${positionals.length} argument(s)`);
    const [file, target] = positionals as [string, string];
    if (!existsSync(file)) throw new CliError(`${file}: no such file`, 1);
    const wait = secondsOption('--wait', values.wait, 5);
    const max = values['max-uploads'] === undefined ? undefined : intOption('--max-uploads', values['max-uploads'] as string, 1, 64);
    const { node, server } = await serving(nodeOptions(values), values, max);
    const box = inbox(node);
    try {
      const table = await server.offer(resolve(file));
      if (!(await waitUntil(wait, () => targets(node, target).length > 0))) throw new CliError(`no peer named '${target}', nor in a group of that name, within ${wait} s`, 1);
      await sleep(200);
      const to = targets(node, target);
      const name = (values.as as string | undefined) ?? basename(file);
      const results = await Promise.all(to.map(async (p) => {
        node.whisper(p.peer, ...encodeFiles({ offer: { id: table.sha256, name, size: table.size } }));
        const m = await box.next((n) => n === p.name, (x) => 'received' in x && x.received.id === table.sha256, 2 ** 31 - 1);
        const r = m && 'received' in m ? m.received : { id: table.sha256, ok: false, error: 'no answer' };
        out(values.json ? JSON.stringify({ peer: p.name, ...r }) : r.ok ? `${p.name}: received as ${r.path}` : `${p.name}: refused: ${r.error}`);
        return r.ok;
      }));
      if (values.json) out(JSON.stringify({ server: server.stats() }));
      return results.every(Boolean) ? 0 : 1;
    } finally {
      box.stop();
      await node.stop();
      await server.stop();
    }
  },
};

export const receive: Command = {
  help: `Usage: starling receive [--dir DIR] [--quota-mb N] [--join GROUP]… [--seconds S] [--json] [mesh options]

Joins the mesh (and each GROUP, so senders can name the group) and accepts files peers
send (starling send) into DIR (default /var/lib/starling/inbox), refusing beyond the
quota (default 256 MiB). In secure mode only keys with the command role may send.
Prints each file received (--json: one object per line); runs until Ctrl-C (or S seconds).
${MESH_HELP}`,
  async run(argv) {
    const { values } = parse(argv, { ...MESH_OPTIONS, dir: { type: 'string' }, 'quota-mb': { type: 'string' }, join: { type: 'string', multiple: true }, seconds: { type: 'string' } }, false);
    const dir = (values.dir as string | undefined) ?? '/var/lib/starling/inbox';
    const quota = Number(values['quota-mb'] ?? 256);
    if (!Number.isFinite(quota) || quota <= 0) throw new CliError(`--quota-mb '${values['quota-mb']}': expected a number of MiB above 0`);
    mkdirSync(dir, { recursive: true });
    const config = parseConfig(`files: { accept: true, inbox: ${JSON.stringify(dir)}, quota_mb: ${quota} }\nsecurity: { mode: none }`, '--dir');
    const { node, server } = await serving(nodeOptions(values), values);
    for (const g of (values.join as string[] | undefined) ?? []) node.join(g);
    const json = values.json === true;
    const files = new FilesService(config, { node, files: server }, { version: '' }, (level, msg) => {
      if (level === 'info' && msg.startsWith('received ')) out(json ? JSON.stringify({ event: 'RECEIVED', msg }) : msg);
      else if (json) out(JSON.stringify({ event: 'PROBLEM', level, msg }));
      else process.stderr.write(`starling: ${msg}\n`);
    }, meshSecurity(values));
    await files.start();
    out(json ? JSON.stringify({ event: 'STARTED', name: node.name, dir, endpoint: server.endpoint }) : `receiving into ${dir} as ${node.name} (files at ${server.endpoint})`);
    await untilSignal(secondsOption('--seconds', values.seconds as string | undefined, 0));
    await files.stop();
    await node.stop();
    await server.stop();
    return 0;
  },
};

export const release: Command = {
  help: `Usage: starling release keygen [--dir DIR]
       starling release sign FILE --key KEYFILE --version V [--rollback] [--not-before ISO] [--out FILE]

keygen   writes DIR/release.key (the Ed25519 private key, PEM, 0600: keep it off the
         devices) and DIR/release.pub, and prints the public key to list in the devices'
         configuration (update: { keys: [KEY] }).
sign     writes a manifest of FILE (a Starling bundle, dist/starling.cjs): app, version,
         size, SHA-256, chunk size and each chunk's SHA-256, not-before, signed with the
         key (default output FILE.manifest.json). --rollback lets devices install it over
         a higher version.`,
  async run(argv) {
    const { values, positionals } = parse(argv, { dir: { type: 'string' }, key: { type: 'string' }, version: { type: 'string' }, rollback: { type: 'boolean' }, 'not-before': { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' } });
    const [sub, file] = positionals;
    if (sub === 'keygen') {
      const dir = (values.dir as string | undefined) ?? '.';
      mkdirSync(dir, { recursive: true });
      const k = releaseKeygen();
      const priv = join(dir, 'release.key');
      if (existsSync(priv)) throw new CliError(`${priv} exists: not overwriting a release key`, 1);
      writeFileSync(priv, k.privatePem, { mode: 0o600 });
      writeFileSync(join(dir, 'release.pub'), `${k.publicKey}\n`);
      out(values.json ? JSON.stringify({ publicKey: k.publicKey, fingerprint: keyFingerprint(k.publicKey), private: priv }) : `release key ${keyFingerprint(k.publicKey)} in ${priv}; on each device:\n  update: { keys: [${k.publicKey}] }`);
      return 0;
    }
    if (sub === 'sign') {
      if (!file) throw new CliError('release sign takes FILE');
      if (!values.key || !values.version) throw new CliError('release sign needs --key KEYFILE and --version V');
      let pem: string;
      try {
        pem = readFileSync(values.key as string, 'utf8');
      } catch (e) {
        throw new CliError(`${values.key}: ${(e as Error).message}`, 1);
      }
      const nb = values['not-before'] as string | undefined;
      if (nb !== undefined && Number.isNaN(Date.parse(nb))) throw new CliError(`--not-before '${nb}': expected an ISO time`);
      const t = await hashFile(file);
      let signed: SignedManifest;
      try {
        signed = signManifest(manifestOf(t, values.version as string, { rollback: values.rollback === true, ...(nb ? { notBefore: new Date(nb) } : {}) }), pem);
      } catch (e) {
        throw new CliError((e as Error).message, 1);
      }
      const dest = (values.out as string | undefined) ?? `${file}.manifest.json`;
      writeFileSync(dest, JSON.stringify(signed, null, 1) + '\n');
      out(values.json ? JSON.stringify({ manifest: dest, version: signed.manifest.version, sha256: t.sha256, size: t.size }) : `${dest}: ${basename(file)} ${signed.manifest.version}, ${t.size} bytes, ${t.hashes.length} chunk(s), signed by ${signed.key}`);
      return 0;
    }
    throw new CliError(`release takes keygen or sign, got ${JSON.stringify(sub ?? '')}`);
  },
};

const FINAL = new Set<UpdateStatus['state']>(['committed', 'rolled-back', 'refused', 'failed', 'cancelled']);

/** The canary rule: a device is among the first P % when SHA-256 of its name, as a number mod 100, is below P. */
export const isCanary = (name: string, percent: number): boolean => createHash('sha256').update(name).digest().readUInt32BE(0) % 100 < percent;

async function query(node: ZreNode, box: ReturnType<typeof inbox>, p: PeerInfo, msg: FilesMessage = { 'update-query': {} }): Promise<UpdateStatus | undefined> {
  const live = node.findPeer(p.name);
  if (!live) return undefined;
  node.whisper(live.peer, ...encodeFiles(msg));
  const m = await box.next((n) => n === p.name, (x) => 'status' in x, 2000);
  return m && 'status' in m ? m.status : undefined;
}

function row(s: UpdateStatus): string {
  const pct = s.progress !== undefined ? ` ${(s.progress * 100).toFixed(0)}%` : '';
  return `${s.node.padEnd(16)} ${s.version.padEnd(10)} ${s.state}${s.target ? ` ${s.target}` : ''}${pct}${s.error ? `: ${s.error}` : ''}`;
}

export const update: Command = {
  help: `Usage: starling update push MANIFEST [--file FILE] [--to NAME|GROUP] [--percent P] [--timeout SEC] [--json] [mesh options]
       starling update status [--to NAME|GROUP] [--json] [mesh options]
       starling update cancel [--to NAME|GROUP] [mesh options]

push     serves the release (FILE, default MANIFEST without .manifest.json) and sends the
         manifest to the devices (--to: one by name, or a group; default: every peer with
         a file server). Each checks the signature and version, fetches the release in
         checked chunks (also from peers already running it), installs it beside the
         running one and restarts; it commits after being healthy (update.commit_after),
         or its previous release is restored. Prints each device's state as it changes
         and exits when every device is done: 0 when all committed.
         --percent P: first the devices whose name hashes below P (the canaries); the rest
         only when every canary committed — a canary rolled back stops the push.
status   each device's version, state (idle, fetching, installing, restarting, trying,
         committed, rolled-back, refused, failed, cancelled), progress and error.
cancel   stops a transfer in progress on the devices.
  --wait SEC   how long to wait for the devices to appear (default 3)
${MESH_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...MESH_OPTIONS, ...WAIT, to: { type: 'string' }, file: { type: 'string' }, percent: { type: 'string' }, timeout: { type: 'string' } });
    const [sub, manifestPath] = positionals;
    const wait = secondsOption('--wait', values.wait, 3);
    const json = values.json === true;
    if (sub === 'status' || sub === 'cancel') {
      const node = await startNode(nodeOptions(values));
      const box = inbox(node);
      try {
        await sleep(wait * 1000); // gather the devices that answer beacons meanwhile
        const rows = (await Promise.all(targets(node, values.to as string | undefined).map((p) => query(node, box, p, sub === 'cancel' ? { 'update-cancel': {} } : undefined)))).filter((s): s is UpdateStatus => !!s);
        if (json) out(JSON.stringify(rows));
        else for (const r of rows) out(row(r));
        return rows.length ? 0 : 1;
      } finally {
        box.stop();
        await node.stop();
      }
    }
    if (sub !== 'push') throw new CliError(`update takes push, status or cancel, got ${JSON.stringify(sub ?? '')}`);
    if (!manifestPath) throw new CliError('update push takes MANIFEST');
    let signed: SignedManifest;
    try {
      signed = JSON.parse(readFileSync(manifestPath, 'utf8')) as SignedManifest;
    } catch (e) {
      throw new CliError(`${manifestPath}: ${(e as Error).message}`, 1);
    }
    const file = (values.file as string | undefined) ?? manifestPath.replace(/\.manifest\.json$/, '');
    if (file === manifestPath || !existsSync(file)) throw new CliError(`the release file: give --file FILE (${file} not found)`);
    const t = await hashFile(file);
    if (t.sha256 !== signed.manifest?.sha256) throw new CliError(`${file} is not the file ${manifestPath} describes (SHA-256 ${t.sha256.slice(0, 16)}…, the manifest says ${String(signed.manifest?.sha256).slice(0, 16)}…)`, 1);
    const percent = values.percent === undefined ? 100 : Number(values.percent);
    if (!(percent > 0 && percent <= 100)) throw new CliError(`--percent '${values.percent}': expected 1 to 100`);
    const timeout = secondsOption('--timeout', values.timeout as string | undefined, 900);
    const { node, server } = await serving(nodeOptions(values), values);
    const box = inbox(node);
    try {
      await server.offer(resolve(file), tableOf(signed));
      await sleep(wait * 1000); // gather the devices that answer beacons meanwhile
      const all = targets(node, values.to as string | undefined);
      if (all.length === 0) throw new CliError(`no device${values.to ? ` named '${values.to}' or in that group` : ''} within ${wait} s`, 1);
      const canaries = percent < 100 ? all.filter((p) => isCanary(p.name, percent)) : all;
      const rest = all.filter((p) => !canaries.includes(p));
      const last = new Map<string, UpdateStatus>();
      const say = (s: UpdateStatus) => {
        const prev = last.get(s.node);
        if (prev && prev.state === s.state && prev.version === s.version && (prev.progress ?? 0) + 0.1 > (s.progress ?? 0)) return;
        last.set(s.node, s);
        out(json ? JSON.stringify(s) : row(s));
      };
      const deadline = Date.now() + timeout * 1000;
      const version = signed.manifest.version;
      const phase = async (group: PeerInfo[]): Promise<UpdateStatus[]> => {
        const done = new Map<string, UpdateStatus>();
        // A state is about our update when it names our version (a refusal of a manifest without one has none).
        const ours = (s: UpdateStatus) => s.target === version || (s.state === 'refused' && s.target === undefined);
        const note = (p: PeerInfo, s: UpdateStatus | undefined) => {
          if (!s) return;
          say(s);
          if (ours(s) && FINAL.has(s.state)) done.set(p.name, s);
        };
        for (const p of group) note(p, await query(node, box, p, { update: signed }));
        while (done.size < group.length && Date.now() < deadline) {
          await sleep(1000);
          for (const p of group) {
            if (done.has(p.name)) continue;
            const s = await query(node, box, p);
            if (!s) continue; // restarting: not on the mesh for a moment
            // A state about another update (or none): the device restarted mid-transfer, or never got ours.
            // Send it again; the device resumes from the chunks it already holds.
            note(p, ours(s) ? s : await query(node, box, p, { update: signed }));
          }
        }
        for (const p of group) if (!done.has(p.name)) done.set(p.name, { node: p.name, version: last.get(p.name)?.version ?? '?', state: 'failed', error: `not done within ${timeout} s` });
        return [...done.values()];
      };
      const first = await phase(canaries);
      if (rest.length && first.some((s) => s.state !== 'committed')) {
        out(json ? JSON.stringify({ stopped: true, reason: 'a canary did not commit', waiting: rest.map((p) => p.name).sort() }) : `push stopped: a canary did not commit; not pushed to ${rest.map((p) => p.name).join(', ')}`);
        return 1;
      }
      const second = rest.length ? await phase(rest) : [];
      return [...first, ...second].every((s) => s.state === 'committed') ? 0 : 1;
    } finally {
      box.stop();
      await node.stop();
      await server.stop();
    }
  },
};
