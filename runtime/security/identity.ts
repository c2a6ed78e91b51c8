/**
 * A node's CURVE identity and the certificate files that hold keys, in CZMQ's zcert text format (ZPL, 32/ZPL):
 * the public file `DIR/node.key` and the secret file `DIR/node.key_secret` (mode 0600), readable by CZMQ's
 * zcert_load and by Zyre's tools, and the other way round.
 *
 * The secret key never leaves an {@link Identity} except to the ZeroMQ socket options that need it: the object
 * prints, logs and serialises as its public key and fingerprint only.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { curveKeyPair } from 'zeromq';
import { isZ85Key, z85Decode } from './z85.ts';

export class CertificateError extends Error {
  override name = 'CertificateError';
}

/** The default identity directory (the .deb's state directory). */
export const DEFAULT_IDENTITY_DIR = '/var/lib/starling/identity';
export const PUBLIC_FILE = 'node.key';
export const SECRET_FILE = 'node.key_secret';

/** A short, stable fingerprint of a Z85 public key: the first 8 bytes of SHA-256 of the raw key, as 4 groups. */
export function fingerprint(publicKey: string): string {
  const hex = createHash('sha256').update(z85Decode(publicKey)).digest('hex').slice(0, 16);
  return hex.match(/.{4}/g)!.join(':');
}

export class Identity {
  readonly fingerprint: string;
  readonly #secret: string;

  constructor(readonly publicKey: string, secretKey: string) {
    if (!isZ85Key(publicKey)) throw new CertificateError('the public key is not a 40-character Z85 key');
    if (!isZ85Key(secretKey)) throw new CertificateError('the secret key is not a 40-character Z85 key');
    this.#secret = secretKey;
    this.fingerprint = fingerprint(publicKey);
  }

  /** A new random key pair (libzmq's zmq_curve_keypair). */
  static generate(): Identity {
    const { publicKey, secretKey } = curveKeyPair();
    return new Identity(publicKey, secretKey);
  }

  /** For ZeroMQ's curveSecretKey option only. */
  get secretKey(): string {
    return this.#secret;
  }

  toJSON(): { publicKey: string; fingerprint: string } {
    return { publicKey: this.publicKey, fingerprint: this.fingerprint };
  }

  toString(): string {
    return `Identity(${this.fingerprint})`;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

export interface Certificate {
  publicKey: string;
  secretKey?: string;
  /** The `metadata` section, e.g. name and roles. */
  metadata: Record<string, string>;
}

/**
 * Reads a zcert file (public or secret). Errors name the file and line; a secret file's key is never quoted
 * in them.
 */
export function readCertificate(path: string): Certificate {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CertificateError(`${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  return parseCertificate(text, path);
}

/** Parses zcert text (ZPL: sections by indentation, `name = "value"`, `#` comments). */
export function parseCertificate(text: string, where = 'certificate'): Certificate {
  if (text.length > 64 * 1024) throw new CertificateError(`${where}: ${text.length} bytes, too long for a certificate`);
  const metadata: Record<string, string> = {};
  const curve: Record<string, string> = {};
  let section: 'metadata' | 'curve' | 'other' | undefined;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.replace(/\s+$/, '');
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const indent = /^ */.exec(line)![0].length;
    const body = line.trim();
    if (indent === 0) {
      section = body === 'metadata' ? 'metadata' : body === 'curve' ? 'curve' : 'other';
      return;
    }
    const m = /^([A-Za-z0-9$\-_@.&+/]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|(\S*))\s*(#.*)?$/.exec(body);
    if (!m) throw new CertificateError(`${where}:${i + 1}: expected name = "value"`);
    const value = m[2] ?? m[3] ?? m[4] ?? '';
    if (section === 'metadata') metadata[m[1]!] = value;
    else if (section === 'curve') curve[m[1]!] = value;
  });
  const publicKey = curve['public-key'];
  if (publicKey === undefined) throw new CertificateError(`${where}: no curve public-key`);
  if (!isZ85Key(publicKey)) throw new CertificateError(`${where}: the public-key is not a 40-character Z85 key`);
  const secretKey = curve['secret-key'];
  if (secretKey !== undefined && !isZ85Key(secretKey)) throw new CertificateError(`${where}: the secret-key is not a 40-character Z85 key`);
  return { publicKey, ...(secretKey !== undefined ? { secretKey } : {}), metadata };
}

/** zcert text for a certificate; with `secret`, the secret file (both keys), else the public file. */
export function formatCertificate(cert: Certificate, secret = false): string {
  const stamp = new Date().toISOString().replace('T', ' ').slice(0, 19);
  const quote = (v: string) => `"${v.replace(/"/g, '')}"`;
  const head = secret
    ? ['#   ZeroMQ CURVE **Secret** Certificate', '#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.']
    : ['#   ZeroMQ CURVE Public Certificate', '#   Exchange securely, or use a secure mechanism to verify the contents',
      '#   of this file after exchange. Store public certificates in your home', '#   directory, in the .curve subdirectory.'];
  return [
    `#   ****  Generated on ${stamp} by Starling  ****`, ...head, '',
    'metadata', ...Object.entries(cert.metadata).map(([k, v]) => `    ${k} = ${quote(v)}`),
    'curve', `    public-key = ${quote(cert.publicKey)}`,
    ...(secret && cert.secretKey ? [`    secret-key = ${quote(cert.secretKey)}`] : []), '',
  ].join('\n');
}

/** Writes a file atomically (temporary name, then rename) with `mode`. */
export function writeAtomic(path: string, text: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

/**
 * Loads the identity in `dir`. Refuses a secret file that others can read (as ssh does), naming the file and
 * its mode, never its content.
 */
export function loadIdentity(dir: string): Identity {
  const path = join(dir, SECRET_FILE);
  if (!existsSync(path)) throw new CertificateError(`no identity in ${dir} (no ${SECRET_FILE}); create one with: starling keygen --dir ${dir}`);
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077) throw new CertificateError(`${path} is readable by others (mode ${mode.toString(8)}); chmod 600 it`);
  const cert = readCertificate(path);
  if (!cert.secretKey) throw new CertificateError(`${path}: no curve secret-key (is this the public file?)`);
  return new Identity(cert.publicKey, cert.secretKey);
}

/** Creates a new identity in `dir` (mode 0700); refuses to replace one unless `force`. */
export function createIdentity(dir: string, opts: { force?: boolean; name?: string } = {}): Identity {
  if (!opts.force && existsSync(join(dir, SECRET_FILE))) throw new CertificateError(`${join(dir, SECRET_FILE)} exists; keep it, or pass --force to replace it`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const id = Identity.generate();
  const metadata: Record<string, string> = opts.name ? { name: opts.name } : {};
  writeAtomic(join(dir, SECRET_FILE), formatCertificate({ publicKey: id.publicKey, secretKey: id.secretKey, metadata }, true), 0o600);
  writeAtomic(join(dir, PUBLIC_FILE), formatCertificate({ publicKey: id.publicKey, metadata }), 0o644);
  return id;
}

/** The identity in `dir`, created first when there is none. `created` says which. */
export function ensureIdentity(dir: string, name?: string): { identity: Identity; created: boolean } {
  if (existsSync(join(dir, SECRET_FILE))) return { identity: loadIdentity(dir), created: false };
  return { identity: createIdentity(dir, { name }), created: true };
}
