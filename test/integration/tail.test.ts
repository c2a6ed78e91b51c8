// `starling tail` as a process against whatever a publisher sends: values it cannot print as JSON numbers,
// times it cannot format, topics and units with control characters. It prints what it got, marked, and
// never exits; what breaks FORMAT.md (a NaN base time) is dropped by the subscriber and counted.
import { afterEach, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { XPublisher } from 'zeromq';
import { ZreNode } from '../../runtime/zre/node.ts';
import { HEADER_ENDPOINTS } from '../../runtime/telemetry/mesh.ts';
import { BatchWriter } from '../../runtime/telemetry/sample.ts';
import { isoTime } from '../../app/cli/telemetry.ts';
import { beaconPort, until } from '../helpers.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

it.each([['text', []], ['json', ['--json']]] as const)('tail (%s) prints odd values, topics and units, and goes on', async (_mode, extra) => {
  const port = beaconPort();
  const raw = new XPublisher({ linger: 0 });
  await raw.bind('tcp://127.0.0.1:*');
  cleanup.push(() => raw.close());
  const node = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, pingInterval: 100, name: 'odd', headers: { [HEADER_ENDPOINTS]: raw.lastEndpoint! } });
  await node.start();
  cleanup.push(() => node.stop());
  const tail: ChildProcess = spawn(process.execPath, [`${root}/dist/starling.cjs`, 'tail', '--iface', 'lo', '--port', String(port), '--no-snapshot', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.push(() => void tail.kill('SIGKILL'));
  const out: string[] = [];
  createInterface({ input: tail.stdout! }).on('line', (l) => out.push(l));
  raw.receiveTimeout = 10_000;
  await raw.receive(); // tail subscribed
  const w = new BatchWriter(4096);
  const id = Buffer.alloc(16, 1);
  const send = async (topic: string, values: number[], unit = '', base = Date.now(), seq = 0) => {
    w.begin(topic, id, seq, base, unit, values.length);
    w.add(Number.isFinite(base) ? base : 0, 0, values);
    await raw.send([topic, w.finish()]);
  };
  await send('odd/inf', [Infinity, -Infinity, NaN]);
  await send('odd/bell\u0007topic', [1], 'unit\nwith newline');
  await send('odd/nan-time', [1], '', NaN); // dropped by the subscriber: not a time
  await send('odd/last', [42]);
  await until(() => out.some((l) => l.includes('odd/last')), 10_000, 'the last sample');
  expect(tail.exitCode).toBeNull();
  expect(out.some((l) => l.includes('nan-time'))).toBe(false);
  if (extra.length === 0) {
    expect(out.find((l) => l.includes('odd/inf'))).toMatch(/ odd\/inf Infinity,-Infinity,NaN #0$/);
    expect(out.find((l) => l.includes('odd/bell'))).toContain('odd/bell\\u0007topic 1 unit\\nwith newline #0');
  } else {
    expect(JSON.parse(out.find((l) => l.includes('odd/inf'))!)).toMatchObject({ values: ['Infinity', '-Infinity', null] });
    expect(JSON.parse(out.find((l) => l.includes('odd/bell'))!)).toMatchObject({ topic: 'odd/bell\u0007topic', unit: 'unit\nwith newline' });
  }
  expect(isoTime(NaN)).toBe('?time=NaN');
  expect(isoTime(8.64e15 + 1)).toBe('?time=8640000000000001');
});
