/**
 * Files and updates on a device: the mesh side of runtime/files (transfers) and runtime/update (releases).
 *
 * - **Receiving files** (`files.accept`): a peer whispers an offer; the file is fetched from the peer's file
 *   server (X-FILES) into `inbox/.partial/ID`, checked, renamed into the inbox, and the sender told. Refused,
 *   with a reason the sender prints: over `files.quota_mb` (the inbox plus transfers in progress), more than
 *   four at once, or (secure mode) a key without the `command` role. Counted.
 * - **Updates** (`update.keys`): a pusher whispers a signed manifest; it is checked (signature, app, version,
 *   not-before: release.ts), the bundle fetched chunk by chunk from the pusher and from every peer running that
 *   release (X-RELEASE), reusing chunks of the bundle running now, then installed beside it and swapped in
 *   (releases.ts), and the supervisor restarts (exit 75; systemd's Restart= starts the new one). The new version
 *   commits after being healthy for `commit_after` (the supervisor healthy, READY sent, and peers seen again when
 *   there were peers); the guard in the installed program rolls back a release that fails to start or to commit
 *   `max_attempts` times. Anyone may ask for the state (`update-query`); only `command` keys push or cancel.
 *
 * The service gets the device's node and file server (narrow: `FilesDevice`), never the device object.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { ZreNode, PeerInfo } from '../runtime/zre/node.ts';
import type { FileServer } from '../runtime/files/server.ts';
import { ServiceBase, counters, type Counters, type Health } from '../runtime/supervisor/service.ts';
import { HEADER_FILES, HEADER_RELEASE, type ChunkTable } from '../runtime/files/chunks.ts';
import { Fetch, type FetchSource } from '../runtime/files/fetch.ts';
import { decodeFiles, encodeFiles, type FilesMessage, type UpdateStatus } from '../runtime/files/messages.ts';
import { verifyManifest, type SignedManifest } from '../runtime/update/release.ts';
import { commit, currentBundle, incomingPath, install, readState, type ReleaseState } from '../runtime/update/releases.ts';
import { clientCurve, type Security } from '../runtime/security/context.ts';
import { ProblemLog } from '../runtime/problems.ts';
import type { Config } from '../runtime/config/load.ts';

/** Offers received at once. */
const MAX_RECEIVING = 4;
/** Exit code of a supervisor restarting into a new release (the unit restarts on it). */
export const EXIT_UPDATE = 75;

export interface FilesDevice {
  readonly node: ZreNode | undefined;
  readonly files: FileServer | undefined;
}

export interface FilesOptions {
  /** The version running (a release's, or the installed program's). */
  version: string;
  /** The releases directory (releases.ts), or undefined: updates are refused (a development run). */
  releases?: string;
  /** Installed program's own bundle, when it is one (its chunks are reused). */
  baseBundle?: string;
}

type Logger = (level: 'info' | 'warn' | 'error', msg: string) => void;

interface Receiving {
  fetch: Fetch;
  size: number;
}

export class FilesService extends ServiceBase {
  readonly name = 'files';
  private node: ZreNode | undefined;
  private readonly receiving = new Map<string, Receiving>();
  private update: { fetch?: Fetch; status: UpdateStatus; manifest: SignedManifest } | undefined;
  private commitTimer: NodeJS.Timeout | undefined;
  private healthyFrom: number | undefined;
  private healthy: (() => boolean) | undefined;
  private restart: ((why: string) => void) | undefined;
  private readonly detach: (() => void)[] = [];
  private readonly problems = new ProblemLog((m) => this.log?.('warn', m));
  private readonly counters = {
    filesReceived: 0, filesRefused: 0, filesFailed: 0, messagesMalformed: 0, unauthorised: 0,
    updatesInstalled: 0, updatesRefused: 0, updatesFailed: 0, updatesCancelled: 0, bytesReceived: 0, chunksRefused: 0, chunksReused: 0,
  };

  /** Stores its dependencies; opens nothing. */
  constructor(private readonly config: Config, private readonly device: FilesDevice, private readonly o: FilesOptions, private readonly log?: Logger, private readonly security?: Security) {
    super();
  }

  /**
   * Called by `run` once the supervisor sent READY: how to tell the supervisor is healthy (for committing a
   * release on trial), and how to restart into a new one.
   */
  watch(healthy: () => boolean, restart: (why: string) => void): void {
    this.healthy = healthy;
    this.restart = restart;
  }

  async start(): Promise<void> {
    this.setState('starting');
    const node = this.device.node;
    if (!node || !this.device.files) {
      this.setState('failed');
      throw new Error('the device is not running');
    }
    this.node = node;
    const onWhisper = (m: { peer: string; content: Buffer[] }) => void this.onWhisper(m.peer, m.content);
    node.on('whisper', onWhisper);
    this.detach.push(() => node.off('whisper', onWhisper));
    // Serve the release we run, so peers updating to it fetch from us too.
    const dir = this.o.releases;
    const bundle = dir ? currentBundle(dir) : undefined;
    if (bundle && existsSync(bundle)) {
      try {
        const signed = JSON.parse(readFileSync(join(bundle, '..', 'manifest.json'), 'utf8')) as SignedManifest;
        await this.device.files.offer(bundle, tableOf(signed));
      } catch (e) {
        this.log?.('warn', `cannot serve the running release: ${(e as Error).message}`);
      }
    }
    const s = dir ? readState(dir) : undefined;
    if (s?.state === 'trying' && s.version === this.o.version) {
      this.log?.('info', `release ${s.version} on trial (start ${s.attempts} of ${s.maxAttempts}): commits after ${s.commitAfterMs / 1000} s healthy`);
      this.commitTimer = setInterval(() => this.checkCommit(s), 1000);
    } else if (s?.state === 'rolled-back' && s.version !== this.o.version) {
      this.log?.('warn', `release ${s.version} was rolled back: ${s.error ?? 'unknown reason'}; running ${this.o.version}`);
    }
    this.setState('running');
  }

  async stop(): Promise<void> {
    this.setState('stopping');
    clearInterval(this.commitTimer);
    this.commitTimer = undefined;
    for (const f of this.detach.splice(0)) f();
    for (const r of this.receiving.values()) r.fetch.cancel('stopping');
    this.receiving.clear();
    this.update?.fetch?.cancel('stopping');
    this.node = undefined;
    this.setState('stopped');
  }

  /** Unhealthy while the device is not the one it started on (a device restart: the supervisor restarts us). */
  override health(): Health {
    if (this.state !== 'running') return { healthy: false, detail: this.state };
    if (this.device.node !== this.node) return { healthy: false, detail: 'the device restarted' };
    return { healthy: true };
  }

  override stats(): Counters {
    const u = this.update?.fetch?.stats();
    return {
      ...this.counters, receiving: this.receiving.size,
      ...(u ? counters('update', { held: u.held, chunks: u.chunks, timeouts: u.timeouts }) : {}),
    };
  }

  /** The update's state on this device (also the answer to update-query). */
  status(): UpdateStatus {
    if (this.update) return { ...this.update.status, ...this.progress() };
    const base: UpdateStatus = { node: this.node?.name ?? '', version: this.o.version, state: 'idle' };
    const s: ReleaseState | undefined = this.o.releases ? readState(this.o.releases) : undefined;
    if (!s) return base;
    if (s.state === 'rolled-back') return { ...base, state: 'rolled-back', target: s.version, ...(s.error ? { error: s.error } : {}) };
    if (s.version === this.o.version) return { ...base, state: s.state, target: s.version };
    return base;
  }

  private progress(): Partial<UpdateStatus> {
    const st = this.update?.fetch?.stats();
    if (!st || !st.chunks) return {};
    return { progress: Math.round((st.held / st.chunks) * 1000) / 1000, bytesReceived: st.bytesReceived, chunksReused: st.chunksReused };
  }

  private reply(peer: string, m: FilesMessage): void {
    this.node?.whisper(peer, ...encodeFiles(m));
  }

  private allowed(peer: string, what: string): boolean {
    if (!this.security) return true;
    const key = this.node?.peerKey(peer);
    if (key && this.security.trust.allows(key, 'command')) return true;
    this.counters.unauthorised++;
    if (key) this.security.trust.refused({ publicKey: key, why: `${what} (needs the command role)` });
    return false;
  }

  private async onWhisper(peer: string, content: Buffer[]): Promise<void> {
    let m: FilesMessage | undefined;
    try {
      m = decodeFiles(content);
    } catch (e) {
      this.counters.messagesMalformed++;
      this.problems.note(`malformed ${peer}`, `from ${this.node?.findPeer(peer)?.name ?? peer}: ${(e as Error).message}`);
      return;
    }
    if (!m) return;
    try {
      if ('offer' in m) await this.onOffer(peer, m.offer);
      else if ('update' in m) await this.onUpdate(peer, m.update);
      else if ('update-query' in m) this.reply(peer, { status: this.status() });
      else if ('update-cancel' in m) this.onCancel(peer);
    } catch (e) {
      this.log?.('error', `handling a files message from ${peer}: ${(e as Error).message}`);
    }
  }

  /** The sources of a file a peer offers: its file server, with its proven key in secure mode. */
  private source(p: PeerInfo): FetchSource | undefined {
    const endpoint = p.headers[HEADER_FILES];
    const host = /^tcp:\/\/([\d.]+):\d+$/.exec(p.endpoint)?.[1];
    if (!endpoint || !host || !new RegExp(`^tcp://${host.replace(/\./g, '\\.')}:\\d{1,5}$`).test(endpoint)) return undefined;
    const key = this.security ? this.node?.peerKey(p.peer) : undefined;
    if (this.security && !key) return undefined;
    return { endpoint, name: p.name, ...(key ? { serverKey: key } : {}) };
  }

  private inboxBytes(): number {
    let total = 0;
    try {
      for (const n of readdirSync(this.config.files.inbox)) {
        try {
          const st = statSync(join(this.config.files.inbox, n));
          if (st.isFile()) total += st.size;
        } catch {
          /* gone meanwhile */
        }
      }
    } catch {
      /* no inbox yet */
    }
    return total;
  }

  private async onOffer(peer: string, offer: { id: string; name: string; size: number }): Promise<void> {
    const refuse = (error: string) => {
      this.counters.filesRefused++;
      this.log?.('warn', `file ${offer.name} from ${this.node?.findPeer(peer)?.name ?? peer} refused: ${error}`);
      this.reply(peer, { received: { id: offer.id, ok: false, error } });
    };
    if (!this.config.files.accept) return refuse('this node does not accept files (files.accept)');
    if (!this.allowed(peer, `file ${offer.name}`)) return refuse('not authorised');
    if (this.receiving.has(offer.id)) return;
    if (this.receiving.size >= MAX_RECEIVING) return refuse(`already receiving ${MAX_RECEIVING} files`);
    const quota = this.config.files.quota_mb * 1024 * 1024;
    const inFlight = [...this.receiving.values()].reduce((a, r) => a + r.size, 0);
    const used = this.inboxBytes() + inFlight;
    if (used + offer.size > quota) return refuse(`over the inbox quota: ${offer.size} bytes offered, ${used} of ${quota} used (files.quota_mb)`);
    const p = this.node?.findPeer(peer);
    const src = p && this.source(p);
    if (!src) return refuse('the sender advertises no file server on its own address');
    const inbox = this.config.files.inbox;
    const partial = join(inbox, '.partial');
    mkdirSync(partial, { recursive: true, mode: 0o750 });
    const dest = join(partial, offer.id);
    const fetch = new Fetch({
      id: offer.id, size: offer.size, dest, sources: [src], ...(this.security ? { client: clientCurve(this.security) } : {}),
      onProblem: (msg) => this.problems.note(`fetch ${offer.id}`, msg),
    });
    this.receiving.set(offer.id, { fetch, size: offer.size });
    try {
      await fetch.run();
      const name = safeName(offer.name, offer.id);
      let path = join(inbox, name);
      for (let n = 1; existsSync(path); n++) path = join(inbox, `${name}.${n}`);
      renameSync(dest, path);
      this.counters.filesReceived++;
      this.log?.('info', `received ${path} (${offer.size} bytes) from ${src.name}`);
      this.reply(peer, { received: { id: offer.id, ok: true, path } });
    } catch (e) {
      this.counters.filesFailed++;
      if ((e as Error).message !== 'stopping') this.reply(peer, { received: { id: offer.id, ok: false, error: (e as Error).message } });
    } finally {
      const st = fetch.stats();
      this.counters.bytesReceived += st.bytesReceived;
      this.counters.chunksRefused += st.chunksRefused;
      this.receiving.delete(offer.id);
    }
  }

  private setStatus(s: Partial<UpdateStatus>): void {
    if (!this.update) return;
    this.update.status = { ...this.update.status, ...s };
  }

  private async onUpdate(peer: string, body: unknown): Promise<void> {
    const claimed = (body as { manifest?: { version?: unknown } } | undefined)?.manifest?.version;
    const base: UpdateStatus = { node: this.node?.name ?? '', version: this.o.version, state: 'refused', ...(typeof claimed === 'string' ? { target: claimed.slice(0, 60) } : {}) };
    const refuse = (error: string) => {
      this.counters.updatesRefused++;
      this.log?.('warn', `update from ${this.node?.findPeer(peer)?.name ?? peer} refused: ${error}`);
      this.reply(peer, { status: { ...base, error } });
    };
    if (!this.allowed(peer, 'update')) return refuse('not authorised');
    const dir = this.o.releases;
    if (!dir) return refuse('this node has no releases directory (not run by systemd with StateDirectory=, nor STARLING_RELEASES)');
    if (this.config.update.keys.length === 0) return refuse('no release keys are trusted here (update.keys)');
    let signed: SignedManifest;
    try {
      const text = JSON.stringify(body);
      verifyManifest(text, this.config.update.keys, { installed: this.o.version });
      signed = body as SignedManifest;
    } catch (e) {
      return refuse((e as Error).message);
    }
    const m = signed.manifest;
    if (this.update?.manifest.manifest.sha256 === m.sha256 && this.update.fetch) {
      // The same release again (a push re-run): another source, same transfer.
      const p = this.node?.findPeer(peer);
      const src = p && this.source(p);
      if (src) this.update.fetch.addSource(src);
      this.reply(peer, { status: this.status() });
      return;
    }
    this.update?.fetch?.cancel('replaced by a newer push');
    const sources = (this.node?.peerList() ?? []).filter((p) => p.peer === peer || p.headers[HEADER_RELEASE] === m.sha256).map((p) => this.source(p)).filter((s): s is FetchSource => !!s);
    if (sources.length === 0) return refuse('the pusher advertises no file server on its own address');
    const part = incomingPath(dir, m.sha256);
    const seeds = [currentBundle(dir), this.o.baseBundle].filter((s): s is string => !!s);
    const fetch = new Fetch({
      id: m.sha256, size: m.size, table: tableOf(signed), dest: part, sources, seeds, failWithoutSources: true,
      ...(this.security ? { client: clientCurve(this.security) } : {}),
      onProblem: (msg) => this.problems.note('update fetch', msg),
    });
    this.update = { fetch, manifest: signed, status: { ...base, state: 'fetching', target: m.version } };
    this.log?.('info', `update to ${m.version} (${m.size} bytes) from ${sources.map((s) => s.name).join(', ')}`);
    this.reply(peer, { status: this.status() });
    try {
      await fetch.run();
    } catch (e) {
      const st = fetch.stats();
      this.counters.bytesReceived += st.bytesReceived;
      if (this.update?.fetch !== fetch) return;
      const cancelled = /cancel/.test((e as Error).message);
      if (cancelled) this.counters.updatesCancelled++;
      else this.counters.updatesFailed++;
      this.setStatus({ ...this.progress(), state: cancelled ? 'cancelled' : 'failed', error: (e as Error).message });
      this.update.fetch = undefined;
      this.log?.('warn', `update to ${m.version} ${cancelled ? 'cancelled' : `failed: ${(e as Error).message}`}`);
      return;
    }
    const st = fetch.stats();
    this.counters.bytesReceived += st.bytesReceived;
    this.counters.chunksRefused += st.chunksRefused;
    this.counters.chunksReused += st.chunksReused;
    if (this.update?.fetch !== fetch) return; // replaced by a newer push meanwhile
    this.setStatus({ ...this.progress(), state: 'installing' });
    this.update.fetch = undefined;
    try {
      install(dir, signed, part, this.o.version, {
        maxAttempts: this.config.update.max_attempts, commitAfterMs: this.config.update.commit_after,
        deadlineMs: Math.max(this.config.update.trial_timeout, this.config.update.commit_after + 1000), peers: this.node?.peerList().length ?? 0,
      });
    } catch (e) {
      this.counters.updatesFailed++;
      this.setStatus({ state: 'failed', error: `install: ${(e as Error).message}` });
      rmSync(part, { force: true });
      return;
    }
    this.counters.updatesInstalled++;
    this.setStatus({ state: 'restarting' });
    this.log?.('info', `release ${m.version} installed (${st.bytesReceived} bytes fetched, ${st.chunksReused} chunk(s) reused, ${st.chunksResumed} resumed from an earlier transfer): restarting into it`);
    // Give the status a moment to reach whoever asks, then restart (systemd starts the new release).
    setTimeout(() => this.restart?.(`update to ${m.version}`), 1500).unref();
  }

  private onCancel(peer: string): void {
    if (!this.allowed(peer, 'update cancel')) {
      this.reply(peer, { status: { ...this.status(), error: 'not authorised' } });
      return;
    }
    this.update?.fetch?.cancel('update cancelled');
    this.reply(peer, { status: this.status() });
  }

  private checkCommit(s: ReleaseState): void {
    const now = Date.now();
    const peersOk = s.peers === 0 || (this.node?.peerList().length ?? 0) > 0;
    if (!this.healthy?.() || !peersOk) {
      this.healthyFrom = undefined;
      return;
    }
    this.healthyFrom ??= now;
    if (now - this.healthyFrom < s.commitAfterMs) return;
    clearInterval(this.commitTimer);
    this.commitTimer = undefined;
    if (this.o.releases && commit(this.o.releases, s.version)) this.log?.('info', `release ${s.version} committed: healthy for ${s.commitAfterMs / 1000} s`);
  }
}

/** The chunk table a signed manifest carries. */
export function tableOf(s: SignedManifest): ChunkTable {
  const m = s.manifest;
  return { sha256: m.sha256, size: m.size, chunkSize: m.chunk_size, hashes: m.chunks.map((c) => Buffer.from(c, 'hex')) };
}

/** A received file's name in the inbox: the base name offered, without dot-files or control characters. */
function safeName(name: string, id: string): string {
  const b = basename(name).replace(/[\u0000-\u001f\u007f/]/g, '_').slice(0, 200);
  if (!b || b.startsWith('.')) return id;
  return b;
}
