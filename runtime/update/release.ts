/**
 * Signed releases: a manifest (what the file is, chunk by chunk) in canonical JSON, signed with Ed25519
 * (node:crypto). Devices trust the release keys listed in their configuration (`update: { keys: [...] }`),
 * each the base64 of a raw 32-byte Ed25519 public key (`starling release keygen` prints it).
 *
 * Canonical JSON: object keys sorted, no spaces, as JSON.stringify writes strings and numbers. The signature
 * covers exactly `canonical(manifest)`; anything else in the file (the key's fingerprint) is a hint only.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import type { ChunkTable } from '../files/chunks.ts';
import { compareVersions } from './releases.ts';

export { compareVersions };

export const RELEASE_APP = 'starling';

export interface Manifest {
  app: string;
  /** `bundle`: the JavaScript bundle, run by the installed executable's Node. */
  kind: 'bundle';
  version: string;
  /** `any` for a bundle (JavaScript; the addons are the executable's). */
  arch: string;
  size: number;
  sha256: string;
  chunk_size: number;
  chunks: string[];
  /** ISO time before which devices refuse it (a manifest signed for later). */
  not_before: string;
  /** A lower version than the installed one is refused unless this is true. */
  rollback: boolean;
}

export interface SignedManifest {
  manifest: Manifest;
  /** Fingerprint of the signing key (the first 8 bytes of SHA-256 of the raw key, hex). */
  key: string;
  /** Ed25519 signature of canonical(manifest), base64. */
  signature: string;
}

export class ReleaseError extends Error {
  override name = 'ReleaseError';
}

export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

const rawPublic = (k: KeyObject): Buffer => Buffer.from(k.export({ format: 'jwk' }).x!, 'base64url');

/** The short fingerprint of a release key (base64 of its raw 32 bytes). */
export function keyFingerprint(publicKey: string): string {
  return createHash('sha256').update(Buffer.from(publicKey, 'base64')).digest('hex').slice(0, 16);
}

/** A new release key pair: the private key as PKCS#8 PEM (keep it off the devices), the public key as base64. */
export function releaseKeygen(): { privatePem: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), publicKey: rawPublic(publicKey).toString('base64') };
}

function publicKeyObject(b64: string): KeyObject {
  const raw = Buffer.from(b64.replace(/^ed25519:/, ''), 'base64');
  if (raw.length !== 32) throw new ReleaseError(`release key ${JSON.stringify(b64.slice(0, 60))} is not the base64 of 32 bytes`);
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
}

/** The manifest of a file from its chunk table. */
export function manifestOf(t: ChunkTable, version: string, opts: { notBefore?: Date; rollback?: boolean } = {}): Manifest {
  checkVersion(version);
  return {
    app: RELEASE_APP, kind: 'bundle', version, arch: 'any', size: t.size, sha256: t.sha256, chunk_size: t.chunkSize,
    chunks: t.hashes.map((h) => h.toString('hex')), not_before: (opts.notBefore ?? new Date(0)).toISOString(), rollback: opts.rollback ?? false,
  };
}

export function signManifest(m: Manifest, privatePem: string): SignedManifest {
  let key: KeyObject;
  try {
    key = createPrivateKey(privatePem);
  } catch (e) {
    throw new ReleaseError(`not an Ed25519 private key (PEM): ${(e as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new ReleaseError(`the key is ${key.asymmetricKeyType}, not Ed25519`);
  const pub = rawPublic(createPublicKey(key)).toString('base64');
  return { manifest: m, key: keyFingerprint(pub), signature: sign(null, Buffer.from(canonical(m)), key).toString('base64') };
}

/** x.y.z with an optional -pre part. */
export function checkVersion(v: string): void {
  if (!/^\d{1,6}\.\d{1,6}\.\d{1,6}(-[0-9A-Za-z.]{1,40})?$/.test(v)) throw new ReleaseError(`version ${JSON.stringify(v.slice(0, 60))} is not x.y.z or x.y.z-pre`);
}

/**
 * Parses and checks a signed manifest for this device: shape, a signature by one of `keys`, the app, a
 * time not before `not_before`, and a version above `installed` (or a manifest marked rollback). Throws
 * {@link ReleaseError} saying which check failed; returns the manifest.
 */
export function verifyManifest(text: string | Buffer, keys: readonly string[], opts: { installed: string; now?: Date }): Manifest {
  let s: SignedManifest;
  try {
    s = JSON.parse(text.toString()) as SignedManifest;
  } catch {
    throw new ReleaseError('the manifest is not JSON');
  }
  const m = s?.manifest;
  if (!m || typeof m !== 'object' || typeof s.signature !== 'string') throw new ReleaseError('the manifest needs "manifest" and "signature"');
  const fields: [keyof Manifest, string][] = [['app', 'string'], ['kind', 'string'], ['version', 'string'], ['arch', 'string'], ['size', 'number'], ['sha256', 'string'], ['chunk_size', 'number'], ['not_before', 'string'], ['rollback', 'boolean']];
  for (const [k, t] of fields) if (typeof m[k] !== t) throw new ReleaseError(`manifest.${k} should be a ${t}`);
  if (!Array.isArray(m.chunks) || !m.chunks.every((c) => typeof c === 'string' && /^[0-9a-f]{64}$/.test(c))) throw new ReleaseError('manifest.chunks should be a list of SHA-256 (hex)');
  if (!/^[0-9a-f]{64}$/.test(m.sha256)) throw new ReleaseError('manifest.sha256 should be 64 hex digits');
  if (m.chunks.length !== Math.ceil(m.size / m.chunk_size)) throw new ReleaseError(`manifest lists ${m.chunks.length} chunks for ${m.size} bytes of ${m.chunk_size}`);
  if (keys.length === 0) throw new ReleaseError('no release keys are trusted here (update.keys in the configuration)');
  const data = Buffer.from(canonical(m));
  const sig = Buffer.from(s.signature, 'base64');
  if (!keys.some((k) => verify(null, data, publicKeyObject(k), sig))) throw new ReleaseError(`bad signature: not signed by a trusted release key (signed by ${String(s.key).slice(0, 16)}; trusted: ${keys.map(keyFingerprint).join(', ')})`);
  if (m.app !== RELEASE_APP) throw new ReleaseError(`the manifest is for ${JSON.stringify(m.app)}, not ${RELEASE_APP}`);
  if (m.kind !== 'bundle') throw new ReleaseError(`release kind ${JSON.stringify(m.kind)} is not one this device installs (bundle)`);
  checkVersion(m.version);
  const now = opts.now ?? new Date();
  if (!(Date.parse(m.not_before) <= now.getTime())) throw new ReleaseError(`not before ${m.not_before}`);
  const cmp = compareVersions(m.version, opts.installed);
  if (cmp === 0) throw new ReleaseError(`version ${m.version} is the installed one`);
  if (cmp < 0 && !m.rollback) throw new ReleaseError(`version ${m.version} is lower than the installed ${opts.installed} (and the manifest is not marked rollback)`);
  return m;
}
