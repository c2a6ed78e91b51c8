/**
 * The allowlist: a directory of zcert public files (CZMQ zauth's layout), one per trusted key, each optionally
 * with `metadata: name = "…", roles = "read command"`. Roles: `read` (telemetry, logs), `command` (GPIO and
 * any later write action); a certificate without roles has `read`. Joining the mesh needs only a trusted key.
 *
 * The directory is read again every second (and at once on {@link TrustStore.reload}, which `run` calls on
 * SIGHUP); `change` fires with what was added and removed, so a removed key's connections can be dropped.
 *
 * Keys that were refused are remembered as pending (the last 100, with address, first and last seen, and the
 * name from their HELLO where one came), written to a JSON file for `starling trust pending`; a refusal is
 * reported once per key per minute, never per packet.
 */
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fingerprint, formatCertificate, parseCertificate, writeAtomic } from './identity.ts';
import { isZ85Key } from './z85.ts';

export const ROLES = ['read', 'command'] as const;
export type Role = (typeof ROLES)[number];
export const DEFAULT_TRUSTED_DIR = '/var/lib/starling/trusted';
const PENDING_LIMIT = 100;
const REFUSAL_LOG_MS = 60_000;

export interface TrustedKey {
  publicKey: string;
  fingerprint: string;
  name: string;
  roles: Role[];
  file: string;
}

export interface PendingKey {
  publicKey: string;
  fingerprint: string;
  address?: string;
  name?: string;
  firstSeen: string;
  lastSeen: string;
  refusals: number;
}

export class TrustError extends Error {
  override name = 'TrustError';
}

/** Parses a roles value (`read command`, `read,command`); unknown words are an error naming them. */
export function parseRoles(value: string | undefined, where: string): Role[] {
  if (value === undefined || value.trim() === '') return ['read'];
  const words = value.split(/[\s,]+/).filter(Boolean);
  const bad = words.filter((w) => !(ROLES as readonly string[]).includes(w));
  if (bad.length) throw new TrustError(`${where}: unknown role ${bad.map((b) => JSON.stringify(b)).join(', ')} (roles: ${ROLES.join(', ')})`);
  return [...new Set(words)] as Role[];
}

/** A file name for a trusted key: its name made safe, else its fingerprint. */
function fileNameFor(name: string | undefined, publicKey: string): string {
  const safe = (name ?? '').replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^\.+/, '').slice(0, 64);
  return `${safe || fingerprint(publicKey).replace(/:/g, '')}.key`;
}

export class TrustStore extends EventEmitter<{ change: [{ added: TrustedKey[]; removed: TrustedKey[] }] }> {
  private keys = new Map<string, TrustedKey>();
  private signature = '';
  private timer: NodeJS.Timeout | undefined;
  private readonly pendingKeys = new Map<string, PendingKey>();
  private readonly lastLogged = new Map<string, number>();
  private pendingDirty = false;
  private readonly counters = { refusals: 0, badFiles: 0 };
  /** Problems with the directory's files, by file (each reported when it changes). */
  private readonly fileProblems = new Map<string, string>();

  /**
   * Stores where to look; reads nothing. `pendingFile`: where pending keys are kept (none when absent).
   * `onProblem`: a bad certificate file, a refused key (once per key a minute).
   */
  constructor(readonly dir: string, private readonly o: { pendingFile?: string; onProblem?: (message: string) => void; pollMs?: number } = {}) {
    super();
  }

  /** Reads the directory and the pending file once (the CLI's view; a node calls {@link start}). */
  open(): this {
    this.loadPending();
    this.reload();
    return this;
  }

  /** Reads the directory and pending file, then keeps watching. Starting twice does nothing. */
  start(): void {
    if (this.timer) return;
    this.open();
    this.timer = setInterval(() => {
      this.reload();
      this.savePending();
    }, this.o.pollMs ?? 1000);
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.savePending();
  }

  /** Reads the directory again; emits `change` when keys came or went (or their roles changed). */
  reload(): void {
    const sig = this.dirSignature();
    if (sig === this.signature) return;
    this.signature = sig;
    const next = new Map<string, TrustedKey>();
    for (const file of this.certFiles()) {
      const path = join(this.dir, file);
      try {
        const cert = parseCertificate(readFileSync(path, 'utf8'), path);
        if (cert.secretKey !== undefined) throw new TrustError(`${path}: holds a secret key; the trusted directory takes public files only`);
        const roles = parseRoles(cert.metadata.roles, path);
        next.set(cert.publicKey, { publicKey: cert.publicKey, fingerprint: fingerprint(cert.publicKey), name: cert.metadata.name ?? file.replace(/\.key$/, ''), roles, file: path });
        this.fileProblems.delete(path);
      } catch (e) {
        const message = (e as Error).message;
        if (this.fileProblems.get(path) !== message) {
          this.counters.badFiles++;
          this.o.onProblem?.(`trusted key file skipped: ${message}`);
        }
        this.fileProblems.set(path, message);
      }
    }
    const added = [...next.values()].filter((k) => JSON.stringify(this.keys.get(k.publicKey)?.roles) !== JSON.stringify(k.roles));
    const removed = [...this.keys.values()].filter((k) => !next.has(k.publicKey) || JSON.stringify(next.get(k.publicKey)!.roles) !== JSON.stringify(k.roles));
    this.keys = next;
    for (const k of next.keys()) this.pendingKeys.delete(k);
    if (added.length || removed.length) this.emit('change', { added, removed });
  }

  get(publicKey: string): TrustedKey | undefined {
    return this.keys.get(publicKey);
  }

  /** Whether `publicKey` is trusted (and holds `role`, when given). */
  allows(publicKey: string, role?: Role): boolean {
    const k = this.keys.get(publicKey);
    return k !== undefined && (role === undefined || k.roles.includes(role));
  }

  list(): TrustedKey[] {
    return [...this.keys.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** A key was refused: remembered as pending; reported at most once a minute per key. */
  refused(info: { publicKey: string; address?: string; name?: string; why?: string }): void {
    if (!isZ85Key(info.publicKey)) return;
    this.counters.refusals++;
    const known = this.keys.get(info.publicKey);
    if (known) {
      // Trusted, but without the role this needed: not pending (accepting it would change nothing).
      const t = Date.now();
      if (t - (this.lastLogged.get(info.publicKey) ?? -Infinity) >= REFUSAL_LOG_MS) {
        this.lastLogged.set(info.publicKey, t);
        this.o.onProblem?.(`trusted key ${known.fingerprint} (${known.name}) refused${info.why ? `: ${info.why}` : ''}; its roles: ${known.roles.join(' ')}`);
      }
      return;
    }
    const now = new Date().toISOString();
    let p = this.pendingKeys.get(info.publicKey);
    if (p) this.pendingKeys.delete(info.publicKey); // re-inserted: the Map's order is least recently seen first
    else {
      p = { publicKey: info.publicKey, fingerprint: fingerprint(info.publicKey), firstSeen: now, lastSeen: now, refusals: 0 };
      if (this.pendingKeys.size >= PENDING_LIMIT) this.pendingKeys.delete(this.pendingKeys.keys().next().value as string);
    }
    p.lastSeen = now;
    p.refusals++;
    if (info.address) p.address = info.address;
    if (info.name) p.name = info.name.slice(0, 255);
    this.pendingKeys.set(info.publicKey, p);
    this.pendingDirty = true;
    const t = Date.now();
    if (t - (this.lastLogged.get(info.publicKey) ?? -Infinity) >= REFUSAL_LOG_MS) {
      this.lastLogged.set(info.publicKey, t);
      if (this.lastLogged.size > PENDING_LIMIT * 2) this.lastLogged.delete(this.lastLogged.keys().next().value as string);
      this.o.onProblem?.(`untrusted key ${p.fingerprint}${p.name ? ` (${p.name})` : ''}${p.address ? ` from ${p.address}` : ''} refused${info.why ? `: ${info.why}` : ''}; to let it in: starling trust accept ${p.fingerprint}`);
    }
  }

  /** Refused keys, most recently seen last. */
  pending(): PendingKey[] {
    return [...this.pendingKeys.values()];
  }

  stats(): { trustedKeys: number; pendingKeys: number; keysRefused: number; badKeyFiles: number } {
    return { trustedKeys: this.keys.size, pendingKeys: this.pendingKeys.size, keysRefused: this.counters.refusals, badKeyFiles: this.counters.badFiles };
  }

  // --- the CLI's edits (they write files; a running node picks them up) ---------------------------------

  /** Trusts `publicKey` under `name` with `roles`: writes `DIR/<name>.key`. Returns the entry. */
  add(publicKey: string, opts: { name?: string; roles?: Role[] } = {}): TrustedKey {
    if (!isZ85Key(publicKey)) throw new TrustError('not a 40-character Z85 public key');
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    this.reload();
    const existing = this.keys.get(publicKey);
    if (existing) unlinkSync(existing.file);
    const name = opts.name ?? existing?.name ?? fingerprint(publicKey).replace(/:/g, '');
    const roles = opts.roles ?? existing?.roles ?? ['read'];
    const path = join(this.dir, fileNameFor(name, publicKey));
    if (existsSync(path) && !existing) throw new TrustError(`${path} exists (another key named ${JSON.stringify(name)}); choose another --name`);
    writeAtomic(path, formatCertificate({ publicKey, metadata: { name, roles: roles.join(' ') } }), 0o644);
    this.signature = '';
    this.reload();
    return this.keys.get(publicKey)!;
  }

  /** Removes every trusted key whose name or fingerprint (with or without colons) is `which`. */
  remove(which: string): TrustedKey[] {
    this.reload();
    const want = which.replace(/:/g, '').toLowerCase();
    const gone = [...this.keys.values()].filter((k) => k.name === which || k.fingerprint.replace(/:/g, '') === want || k.publicKey === which);
    for (const k of gone) unlinkSync(k.file);
    this.signature = '';
    this.reload();
    return gone;
  }

  /** The pending key whose fingerprint (or a unique prefix of it) is `which`. */
  findPending(which: string): PendingKey | undefined {
    const want = which.replace(/:/g, '').toLowerCase();
    const hits = this.pending().filter((p) => p.fingerprint.replace(/:/g, '').startsWith(want) || p.publicKey === which);
    if (hits.length > 1) throw new TrustError(`${which} matches ${hits.length} pending keys; give more of the fingerprint`);
    return hits[0];
  }

  // --- internals -----------------------------------------------------------------------------------------

  private certFiles(): string[] {
    try {
      return readdirSync(this.dir).filter((f) => !f.startsWith('.') && !f.endsWith('_secret') && !f.includes('.tmp-')).sort();
    } catch {
      return [];
    }
  }

  /** Names, sizes and mtimes: a cheap test of whether anything changed. */
  private dirSignature(): string {
    return this.certFiles().map((f) => {
      try {
        const st = statSync(join(this.dir, f));
        return `${f}:${st.size}:${st.mtimeMs}`;
      } catch {
        return f;
      }
    }).join('|');
  }

  private loadPending(): void {
    const file = this.o.pendingFile;
    if (!file || !existsSync(file)) return;
    try {
      const list = JSON.parse(readFileSync(file, 'utf8')) as PendingKey[];
      for (const p of list.slice(-PENDING_LIMIT)) if (isZ85Key(p.publicKey)) this.pendingKeys.set(p.publicKey, p);
    } catch (e) {
      this.o.onProblem?.(`pending keys file ${file} unreadable, starting empty: ${(e as Error).message}`);
    }
  }

  private savePending(): void {
    const file = this.o.pendingFile;
    if (!file || !this.pendingDirty) return;
    this.pendingDirty = false;
    try {
      writeAtomic(file, JSON.stringify(this.pending(), null, 1) + '\n', 0o644);
    } catch (e) {
      this.o.onProblem?.(`pending keys not saved to ${file}: ${(e as Error).message}`);
    }
  }
}

/** Reads a pending-keys file (for the CLI, which does not run the node). */
export function readPending(file: string): PendingKey[] {
  if (!existsSync(file)) return [];
  return JSON.parse(readFileSync(file, 'utf8')) as PendingKey[];
}
