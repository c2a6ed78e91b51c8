// Signed manifests (runtime/update/release.ts) and the guard over the releases directory (releases.ts).
import { mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hashFile } from '../../runtime/files/chunks.ts';
import { canonical, compareVersions, manifestOf, releaseKeygen, signManifest, verifyManifest, type SignedManifest } from '../../runtime/update/release.ts';
import { chooseRelease, commit, install, readState } from '../../runtime/update/releases.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'starling-release-'));
  dirs.push(d);
  return d;
};
const key = releaseKeygen();

async function signed(dir: string, version: string, body = `// release ${version}\n`, opts: { rollback?: boolean; notBefore?: Date } = {}): Promise<{ text: string; s: SignedManifest; path: string }> {
  const path = join(dir, `r-${version}.cjs`);
  writeFileSync(path, body);
  const s = signManifest(manifestOf(await hashFile(path), version, opts), key.privatePem);
  return { text: JSON.stringify(s), s, path };
}

describe('release manifests', () => {
  it('canonical JSON sorts keys at every level and has no spaces', () => {
    expect(canonical({ b: 1, a: { d: [2, { z: 1, y: 'x' }], c: true } })).toBe('{"a":{"c":true,"d":[2,{"y":"x","z":1}]},"b":1}');
  });

  it('versions compare numerically, a pre-release below its release', () => {
    expect(compareVersions('0.10.0', '0.9.9')).toBeGreaterThan(0);
    expect(compareVersions('1.0.0-rc.1', '1.0.0')).toBeLessThan(0);
    expect(compareVersions('1.0.0', '1.0.0')).toBe(0);
  });

  it('verifies a signature by a trusted key and refuses each failed check with its reason', async () => {
    const dir = tmp();
    const { text, s } = await signed(dir, '0.2.0');
    expect(verifyManifest(text, [key.publicKey], { installed: '0.1.0' }).version).toBe('0.2.0');
    expect(() => verifyManifest(text, [releaseKeygen().publicKey], { installed: '0.1.0' })).toThrow(/^bad signature: not signed by a trusted release key/);
    expect(() => verifyManifest(text, [], { installed: '0.1.0' })).toThrow('no release keys are trusted here (update.keys in the configuration)');
    expect(() => verifyManifest(text, [key.publicKey], { installed: '0.2.0' })).toThrow('version 0.2.0 is the installed one');
    expect(() => verifyManifest(text, [key.publicKey], { installed: '0.3.0' })).toThrow('version 0.2.0 is lower than the installed 0.3.0 (and the manifest is not marked rollback)');
    const back = await signed(dir, '0.2.0', 'x', { rollback: true });
    expect(verifyManifest(back.text, [key.publicKey], { installed: '0.3.0' }).rollback).toBe(true);
    const later = await signed(dir, '0.4.0', 'y', { notBefore: new Date('2100-01-01T00:00:00Z') });
    expect(() => verifyManifest(later.text, [key.publicKey], { installed: '0.1.0' })).toThrow('not before 2100-01-01T00:00:00.000Z');
    // Any change to the signed fields breaks the signature.
    const tampered = JSON.parse(text) as SignedManifest;
    tampered.manifest.sha256 = 'f'.repeat(64);
    expect(() => verifyManifest(JSON.stringify(tampered), [key.publicKey], { installed: '0.1.0' })).toThrow(/^bad signature/);
    expect(() => verifyManifest('{', [key.publicKey], { installed: '0.1.0' })).toThrow('the manifest is not JSON');
    expect(() => verifyManifest(JSON.stringify({ ...s, manifest: { ...s.manifest, chunks: ['zz'] } }), [key.publicKey], { installed: '0.1.0' })).toThrow('manifest.chunks should be a list of SHA-256 (hex)');
  });
});

describe('the releases directory and its guard', () => {
  const trial = { maxAttempts: 2, commitAfterMs: 1000, deadlineMs: 5000, peers: 0 };

  it('install swaps current, keeps previous; the guard counts trial starts and rolls back after the last one', async () => {
    const rel = tmp();
    const a = await signed(rel, '0.2.0');
    install(rel, a.s, a.path, '0.1.0', trial);
    expect(readlinkSync(join(rel, 'current'))).toBe('0.2.0');
    expect(chooseRelease(rel, '0.1.0')).toMatchObject({ version: '0.2.0', trial: { attempts: 1 }, notes: ['release 0.2.0 on trial: start 1 of 2'] });
    expect(commit(rel, '0.2.0')).toBe(true);
    expect(chooseRelease(rel, '0.1.0')).toMatchObject({ version: '0.2.0', bundle: join(rel, '0.2.0', 'starling.cjs') });
    expect(chooseRelease(rel, '0.1.0').trial).toBeUndefined();

    const b = await signed(rel, '0.3.0');
    install(rel, b.s, b.path, '0.2.0', trial);
    expect(readlinkSync(join(rel, 'previous'))).toBe('0.2.0');
    expect(chooseRelease(rel, '0.1.0').trial?.attempts).toBe(1);
    expect(chooseRelease(rel, '0.1.0').trial?.attempts).toBe(2);
    const third = chooseRelease(rel, '0.1.0');
    expect(third).toMatchObject({ version: '0.2.0', notes: ['release 0.3.0 did not become healthy in 2 start(s); restoring 0.2.0'] });
    expect(readlinkSync(join(rel, 'current'))).toBe('0.2.0');
    expect(existsSync(join(rel, 'previous'))).toBe(false);
    expect(readState(rel)).toMatchObject({ version: '0.3.0', state: 'rolled-back' });
  });

  it('a release installed while another is still on trial keeps the last good one as previous', async () => {
    const rel = tmp();
    const a = await signed(rel, '0.2.0');
    install(rel, a.s, a.path, '0.1.0', trial);
    commit(rel, '0.2.0');
    const b = await signed(rel, '0.3.0');
    install(rel, b.s, b.path, '0.2.0', trial);
    const c = await signed(rel, '0.4.0');
    install(rel, c.s, c.path, '0.3.0', trial); // 0.3.0 never committed
    expect(readlinkSync(join(rel, 'previous'))).toBe('0.2.0');
    expect(existsSync(join(rel, '0.3.0'))).toBe(false);
  });

  it('a bundle that does not match its manifest is not run: the previous one is restored', async () => {
    const rel = tmp();
    const a = await signed(rel, '0.2.0');
    install(rel, a.s, a.path, '0.1.0', trial);
    writeFileSync(join(rel, '0.2.0', 'starling.cjs'), 'tampered');
    const c = chooseRelease(rel, '0.1.0');
    expect(c.bundle).toBeUndefined();
    expect(c.notes[0]).toBe('release 0.2.0: starling.cjs does not match its manifest; restoring the installed program');
    expect(existsSync(join(rel, 'current'))).toBe(false);
  });

  it('an installed program as new as the release or newer runs itself (a newer .deb wins)', async () => {
    const rel = tmp();
    const a = await signed(rel, '0.2.0');
    install(rel, a.s, a.path, '0.1.0', trial);
    expect(chooseRelease(rel, '0.2.1')).toEqual({ notes: ['the installed program (0.2.1) is as new as release 0.2.0 or newer: running it'] });
    expect(readState(rel)?.attempts).toBe(0); // not counted as a start of the release
    expect(readFileSync(join(rel, '0.2.0', 'manifest.json'), 'utf8')).toContain('"version": "0.2.0"');
  });
});
