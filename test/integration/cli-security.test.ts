// The security CLI on the bundle: keygen's files and refusals, version showing the key of a configuration's
// identity, and trust's edits and mistakes — each a clear line, the secret never printed.
import { afterEach, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../../dist/starling.cjs', import.meta.url));
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, STARLING_CONFIG: '/nonexistent.yaml' } });

it('keygen, version --config, trust add/list/remove and their mistakes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'starling-cli-sec-'));
  dirs.push(dir);
  const made = run('keygen', '--dir', join(dir, 'id'), '--name', 'barn', '--json');
  expect(made.status).toBe(0);
  const { publicKey, fingerprint } = JSON.parse(made.stdout) as { publicKey: string; fingerprint: string };
  expect(statSync(join(dir, 'id', 'node.key_secret')).mode & 0o777).toBe(0o600);
  expect(statSync(join(dir, 'id')).mode & 0o777).toBe(0o700);
  const secret = /secret-key = "([^"]+)"/.exec(readFileSync(join(dir, 'id', 'node.key_secret'), 'utf8'))![1]!;
  const again = run('keygen', '--dir', join(dir, 'id'));
  expect([again.status, again.stderr.trim()]).toEqual([1, `starling: ${join(dir, 'id', 'node.key_secret')} exists; keep it, or pass --force to replace it`]);

  writeFileSync(join(dir, 'c.yaml'), `security: { mode: curve, identity: "${join(dir, 'id')}", trusted: "${join(dir, 'tr')}" }\n`);
  const v = run('version', '--config', join(dir, 'c.yaml'));
  expect(v.stdout).toContain(`identity ${publicKey} (fingerprint ${fingerprint})`);
  expect(JSON.parse(run('version', '--json', '--config', join(dir, 'c.yaml')).stdout).identity).toMatchObject({ publicKey, fingerprint });

  const t = (...args: string[]) => run('trust', ...args, '--config', join(dir, 'c.yaml'));
  expect(t('add', join(dir, 'id', 'node.key_secret')).stderr).toMatch(/is a secret certificate; give the public one/);
  expect(t('add', 'not-a-key').stderr).toMatch(/not-a-key: no such file/);
  expect(t('add', publicKey, '--role', 'admin').stderr).toMatch(/--role: unknown role "admin" \(roles: read, command\)/);
  expect(t('add', publicKey, '--name', 'self', '--role', 'command').status).toBe(0);
  expect(JSON.parse(t('list', '--json').stdout)).toEqual([expect.objectContaining({ name: 'self', publicKey, fingerprint, roles: ['command'] })]);
  expect(t('remove', 'nobody').stderr).toMatch(/no trusted key named or with fingerprint 'nobody'/);
  expect(t('remove', fingerprint).status).toBe(0);
  expect(t('list').stdout.trim()).toBe(`no trusted keys in ${join(dir, 'tr')}`);
  expect(t('pending').stdout.trim()).toBe('no pending keys');
  expect(t('frobnicate').stderr).toMatch(/trust: expected add, list, remove, pending or accept, got 'frobnicate'/);
  // A mesh command asked for secure mode without a key pair says how to make one.
  const peers = run('peers', '--iface', 'lo', '--identity', join(dir, 'none'), '--trusted', join(dir, 'tr'), '--wait', '0');
  expect(peers.stderr).toMatch(/no identity in .*none \(no node\.key_secret\); create one with: starling keygen --dir/);
  expect(run('peers', '--iface', 'lo', '--identity', join(dir, 'id')).stderr).toMatch(/--identity and --trusted go together/);
  for (const r of [made, again, v]) expect(r.stdout + r.stderr).not.toContain(secret);
});
