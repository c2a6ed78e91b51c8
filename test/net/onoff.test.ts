// onoff for real: export, direction, read and write through /sys/class/gpio, on a tmpfs mounted over
// /sys/class in a private mount namespace (unshare -m), with a stand-in for the kernel's export handling.
// Edges cannot be watched there (epoll on a tmpfs file is EPERM): the driver falls back to polling, which
// this test also proves. Needs root; in CI it may not be skipped.
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT_DIR, fakeGpioSysfs, rootTests, requireRootAndBuild } from './netns.ts';

const root = ROOT_DIR;
const runHere = rootTests('the onoff mount-namespace test');

describe.runIf(runHere)('onoff over a fake sysfs in a private mount namespace', () => {
  it('exports, sets direction, writes and reads lines resolved from GPIO names; polls edges', () => {
    requireRootAndBuild();
    // The polling check runs our GpioDriver itself inside the namespace: bundle it beside the CLI.
    execFileSync(`${root}/node_modules/.bin/esbuild`, [`${root}/test/net/onoff-poll.ts`, '--bundle', '--platform=node', '--format=esm',
      '--external:onoff', '--external:epoll', '--external:zeromq', `--outfile=${root}/dist/test-onoff-poll.mjs`, '--log-level=warning',
      "--banner:js=import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"]);
    const dir = mkdtempSync(join(tmpdir(), 'starling-onoff-'));
    const config = join(dir, 'gpio.yaml');
    writeFileSync(config, [
      'gpio:',
      '  - { name: relay, pin: GPIO17, mode: output, initial: 0 }',
      '  - { name: button, pin: GPIO27, mode: input, inverted: true }',
      '  - { name: lamp, pin: "pinctrl-bcm2711:22", mode: output, inverted: true }',
    ].join('\n'));
    const node = process.execPath;
    const cli = CLI;
    const script = `
      set -eu
      ${fakeGpioSysfs(node)}
      trap 'kill $kernel 2>/dev/null' EXIT
      say() { printf '%s=%s\\n' "$1" "$2"; }
      say set_relay "$(${node} ${cli} gpio set relay 1 --config ${config})"
      say relay_direction "$(cat $G/gpio529/direction)"
      say relay_value "$(cat $G/gpio529/value)"
      say get_relay "$(${node} ${cli} gpio get relay --config ${config})"
      say set_lamp "$(${node} ${cli} gpio set lamp 1 --config ${config} --json)"
      say lamp_value "$(cat $G/gpio534/value)"
      say get_button "$(${node} ${cli} gpio get button --config ${config})"
      echo 1 > $G/gpio539/value
      say get_button_released "$(${node} ${cli} gpio get button --config ${config})"
      say button_direction "$(cat $G/gpio539/direction)"
      say button_edge "$(cat $G/gpio539/edge)"
      echo 0 > $G/gpio539/value
      ${node} ${root}/dist/test-onoff-poll.mjs $G/gpio539/value
    `;
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script], { encoding: 'utf8', timeout: 60_000 });
    rmSync(dir, { recursive: true, force: true });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const got = Object.fromEntries(r.stdout.trim().split('\n').filter((l) => l.includes('=')).map((l) => l.split('=', 2)));
    expect(got).toEqual({
      set_relay: '1',
      relay_direction: 'out',
      relay_value: '1',
      get_relay: '1',
      set_lamp: '{"name":"lamp","value":1,"number":534}',
      lamp_value: '0', // active-low: logical 1 is level 0
      get_button: '1', // level 0 at export; active-low: pressed
      get_button_released: '0', // level 1

      button_direction: 'in',
      button_edge: 'both',
      poll_edges: '[1,0]',
    });
  }, 90_000);
});
