// The guard (app/launch.ts) in a real `starling run` process: it hands over to the installed release, and a
// release on trial that does not commit in time is stopped like SIGTERM (outputs safe) and exits 1, so that
// systemd's Restart=on-failure starts again and the next start is counted.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { hashFile } from '../../runtime/files/chunks.ts';
import { manifestOf, releaseKeygen, signManifest } from '../../runtime/update/release.ts';
import { install, readState } from '../../runtime/update/releases.ts';
import { CLI } from '../net/netns.ts';
import { beaconPort } from '../helpers.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

it('runs the release on trial and, not committed by its deadline, stops it cleanly with exit 1 and records why', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'starling-launch-'));
  dirs.push(dir);
  const rel = join(dir, 'releases');
  const bundle = join(dir, 'starling-0.2.0.cjs');
  copyFileSync(CLI, bundle);
  const signed = signManifest(manifestOf(await hashFile(bundle), '0.2.0'), releaseKeygen().privatePem);
  install(rel, signed, bundle, '0.1.0', { maxAttempts: 3, commitAfterMs: 60_000, deadlineMs: 2000, peers: 0 });
  const config = join(dir, 'device.yaml');
  writeFileSync(config, `simulate: true\nweb: { listen: "off" }\nnode: { name: trial, iface: lo, port: ${beaconPort()} }\nsecurity: { mode: none }\nsensors:\n  - { platform: sim, name: air, interval: 100ms }\n`);
  const p = spawn(process.execPath, [CLI, 'run', '--config', config], { env: { ...process.env, STARLING_RELEASES: rel }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
  const msgs = out.trim().split('\n').map((l) => (JSON.parse(l) as { msg: string }).msg);
  expect(code).toBe(1);
  expect(msgs[0]).toBe('release 0.2.0 on trial: start 1 of 3');
  expect(msgs[1]).toBe(`running release 0.2.0 (${join(rel, '0.2.0', 'starling.cjs')}); the installed program is 0.1.0`);
  expect(msgs).toContain('release 0.2.0 not committed within 2 s of starting: stopping so the next start counts it');
  // A clean stop: the release's supervisor stopped its services (outputs safe) before exiting.
  expect(msgs.indexOf('device: stopped')).toBeGreaterThan(msgs.indexOf('release 0.2.0 not committed within 2 s of starting: stopping so the next start counts it'));
  expect(readState(rel)).toMatchObject({ version: '0.2.0', state: 'trying', attempts: 1, error: 'not committed within 2 s of starting' });
  expect(readFileSync(join(rel, 'current', 'manifest.json'), 'utf8')).toContain('"version": "0.2.0"');
}, 30_000);
