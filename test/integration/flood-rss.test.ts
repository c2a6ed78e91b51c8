// A receiver under a whisper flood keeps its memory bounded (issue 18): 200,000 one-KiB whispers from another
// process, all delivered, and the receiver's RSS at the end stays within 3 × a lone node's idle RSS (the aim is
// 2 ×; bench/zre.ts has the exact figure). Both run as the executable runs, with its V8 flag
// (image/sea-flags.json), using the bench's roles (dist/bench/zre.mjs: receiver, sender, idle).
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { beaconPort } from '../helpers.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const flags = (JSON.parse(readFileSync(`${root}image/sea-flags.json`, 'utf8')) as { execArgv: string[] }).execArgv;
const procs: ChildProcess[] = [];
afterAll(() => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
});

/** A role of dist/bench/zre.mjs; `next(event)` is its next JSON line with that event. */
function role(args: string[]) {
  const p = spawn(process.execPath, [...flags, `${root}dist/bench/zre.mjs`, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  procs.push(p);
  const lines = createInterface({ input: p.stdout! })[Symbol.asyncIterator]();
  return {
    async next(event: string): Promise<Record<string, number>> {
      for (;;) {
        const { value, done } = await lines.next();
        if (done) throw new Error(`zre.mjs ${args.join(' ')} ended before '${event}'`);
        const rec = JSON.parse(value as string) as Record<string, number> & { event: string };
        if (rec.event === event) return rec;
      }
    },
    end: () => p.stdin!.end(),
  };
}

it('200,000 whispers of 1 KiB: all arrive and the receiver stays within 3 × its idle RSS', async () => {
  const port = beaconPort();
  const idle = role(['--role', 'idle', '--iface', 'lo', '--port', String(beaconPort())]);
  const idleRss = (await idle.next('rss')).rss!;
  idle.end();
  const receiver = role(['--role', 'receiver', '--iface', 'lo', '--port', String(port)]);
  await receiver.next('started');
  const sender = role(['--role', 'sender', '--iface', 'lo', '--port', String(port), '--runs', '1024:200000']);
  const done = await receiver.next('done');
  await sender.next('sent');
  receiver.end();
  expect(done.count).toBe(200_000);
  expect(done.rss).toBeGreaterThan(idleRss / 2); // a real reading
  expect(done.rss).toBeLessThan(3 * idleRss);
}, 120_000);
