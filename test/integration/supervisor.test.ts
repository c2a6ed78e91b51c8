// The supervisor with real child processes: restart delays grow as configured and reset after a stable run;
// memory stays flat across 200 restarts; stop is parallel, SIGKILL after the stop timeout, nothing
// left behind.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { ProcessService, type ProcessSpec } from '../../runtime/supervisor/process.ts';
import { RetryError, Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { ServiceBase } from '../../runtime/supervisor/service.ts';
import { processesWith } from '../helpers.ts';

const node = process.execPath;
const quiet = () => new LogRing(500, null);
const spec = (over: Partial<ProcessSpec>): ProcessSpec => ({
  name: 'svc', command: node, args: ['-e', 'process.exit(1)'], env: {}, restart: 'always', backoffMin: 50, backoffMax: 400, stopTimeout: 1000, stableAfter: 10_000, ...over,
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const running: ProcessService[] = [];
const stopping: Supervisor[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(stopping.splice(0).map((s) => s.stop(2000)));
  await Promise.all(running.splice(0).map((s) => s.stop()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'starling-sup-'));
  dirs.push(d);
  return d;
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('restart policy (the Supervisor\'s, for every service)', () => {
  /** A supervisor of these services, stopped after the test. */
  async function supervise(services: ProcessService[], log = quiet()): Promise<Supervisor> {
    const sup = new Supervisor(services, log);
    stopping.push(sup);
    await sup.start();
    return sup;
  }

  it('a crashing child is restarted with growing delays, capped at the maximum', async () => {
    const sup = await supervise([new ProcessService(spec({}), quiet())]);
    const deadline = Date.now() + 15_000;
    while (sup.delays('svc').length < 6 && Date.now() < deadline) await sleep(20);
    const d = sup.delays('svc').slice(0, 6);
    // 50, 100, 200, 400, 400, 400 ms, each less up to 20 % jitter.
    const nominal = [50, 100, 200, 400, 400, 400];
    d.forEach((v, i) => {
      expect(v).toBeLessThanOrEqual(nominal[i]!);
      expect(v).toBeGreaterThanOrEqual(nominal[i]! * 0.8 - 1);
    });
    expect(sup.restarts('svc')).toBeGreaterThanOrEqual(5);
  }, 20_000);

  it('the backoff starts again from the minimum after a stable run', async () => {
    const dir = tempDir();
    // Crashes twice at once, then runs 600 ms (longer than stableAfter) and crashes again.
    const script = `const f=${JSON.stringify(join(dir, 'n'))};const fs=require('fs');let n=0;try{n=+fs.readFileSync(f,'utf8')}catch{};fs.writeFileSync(f,String(n+1));setTimeout(()=>process.exit(3), n===2?600:0)`;
    const sup = await supervise([new ProcessService(spec({ args: ['-e', script], backoffMin: 100, backoffMax: 1000, stableAfter: 300 }), quiet())]);
    const deadline = Date.now() + 15_000;
    while (sup.delays('svc').length < 3 && Date.now() < deadline) await sleep(20);
    const [a, b, c] = sup.delays('svc');
    expect(a).toBeLessThanOrEqual(100);
    expect(b).toBeGreaterThan(150); // grew: 200 nominal
    expect(c).toBeLessThanOrEqual(100); // reset after the stable 600 ms run
  }, 20_000);

  it('on-failure does not restart a clean exit; never does not restart a crash; only the crash is unhealthy', async () => {
    const clean = new ProcessService(spec({ name: 'clean', args: ['-e', 'process.exit(0)'], restart: 'on-failure' }), quiet());
    const crash = new ProcessService(spec({ name: 'crash', restart: 'never' }), quiet());
    const sup = await supervise([clean, crash]);
    await vi.waitFor(() => expect([clean.state, crash.state]).toEqual(['exited', 'failed']), { timeout: 5000 });
    await sleep(300); // six times the 50 ms backoff: a restart would have come
    expect([clean.state, sup.restarts('clean')]).toEqual(['exited', 0]);
    expect([crash.state, sup.restarts('crash'), crash.lastExit?.code]).toEqual(['failed', 0, 1]);
    expect(sup.problems()).toEqual(['crash: exited with 1']);
    expect(sup.healthy()).toBe(false);
  });

  it('a command that does not exist is a failed start, retried, and never throws', async () => {
    const log = quiet();
    const sup = await supervise([new ProcessService(spec({ command: '/nonexistent/binary', restart: 'on-failure' }), log)], log);
    await vi.waitFor(() => expect(sup.restarts('svc')).toBeGreaterThan(0), { timeout: 5000 });
    expect(log.tail(50).some((e) => /ENOENT/.test(e.msg))).toBe(true);
    expect(sup.list()[0]).toMatchObject({ state: 'backoff', healthy: false, detail: expect.stringMatching(/ENOENT.*\(retry in \d+ s\)$/) });
  });

  it('supervisor RSS stays flat across 200 restarts', async () => {
    // /bin/false: a crash per restart without Node's start-up cost in the loop.
    const sup = await supervise([new ProcessService(spec({ command: 'false', args: [], backoffMin: 1, backoffMax: 1 }), quiet())]);
    const until = async (n: number) => {
      const deadline = Date.now() + 60_000;
      while (sup.restarts('svc') < n && Date.now() < deadline) await sleep(10);
    };
    await until(100); // warm up: the heap grows to its working size first
    global.gc!();
    const before = process.memoryUsage();
    await until(300);
    global.gc!();
    const after = process.memoryUsage();
    const mb = (b: number) => (b / 1048576).toFixed(1);
    console.log(`200 restarts: heap ${mb(before.heapUsed)} → ${mb(after.heapUsed)} MB, RSS ${mb(before.rss)} → ${mb(after.rss)} MB`);
    expect(sup.restarts('svc')).toBeGreaterThanOrEqual(300);
    // What JavaScript keeps per restart (measured: well under 1 KB); RSS also carries the allocator's pages for
    // 200 spawns, which it hands back slowly, so its bound is wider.
    expect(after.heapUsed - before.heapUsed).toBeLessThan(2 * 1024 * 1024);
    expect(after.rss - before.rss).toBeLessThan(24 * 1024 * 1024);
  }, 90_000);
});

describe('stopping', () => {
  it('stops every service at once, kills one that ignores SIGTERM after its timeout, leaves no process', async () => {
    const dir = tempDir();
    const mark = (name: string) => `process.on('SIGTERM',()=>{require('fs').appendFileSync(${JSON.stringify(join(dir, 'order'))},'${name}\\n');process.exit(0)});setInterval(()=>{},1000);console.log('up')`;
    // 'stubborn' also starts a grandchild, which must not outlive it (found afterwards by its marker).
    const marker = `starling-grandchild-${randomBytes(4).toString('hex')}`;
    const stubborn = `require('child_process').spawn(process.execPath,['-e','setInterval(()=>{},1000) // ${marker}'],{stdio:'ignore'});process.on('SIGTERM',()=>{require('fs').appendFileSync(${JSON.stringify(join(dir, 'order'))},'stubborn\\n')});setInterval(()=>{},1000);console.log('up')`;
    const log = quiet();
    const services = [
      new ProcessService(spec({ name: 'first', args: ['-e', mark('first')] }), log),
      new ProcessService(spec({ name: 'stubborn', args: ['-e', stubborn], stopTimeout: 300 }), log),
      new ProcessService(spec({ name: 'last', args: ['-e', mark('last')] }), log),
    ];
    const sup = new Supervisor(services, log);
    await sup.start();
    // Each child prints 'up' once its SIGTERM handler is in.
    await vi.waitFor(() => expect(services.map((s) => log.tail(100, s.name).some((e) => e.msg === 'up'))).toEqual([true, true, true]), { timeout: 10_000 });
    const pids = services.map((s) => s.pid!);
    expect(sup.list().map((s) => [s.name, s.state])).toEqual([['first', 'running'], ['stubborn', 'running'], ['last', 'running']]);
    const t0 = Date.now();
    await sup.stop();
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(300);
    // In parallel: the whole stop takes the stubborn one's timeout, not the sum of all three.
    expect(took).toBeLessThan(1500);
    expect(readFileSync(join(dir, 'order'), 'utf8').trim().split('\n').sort()).toEqual(['first', 'last', 'stubborn']);
    expect(services[1]!.lastExit?.signal).toBe('SIGKILL');
    await vi.waitFor(() => expect(pids.filter(alive)).toEqual([]), { timeout: 2000 });
    await vi.waitFor(() => expect(processesWith(marker)).toEqual([]), { timeout: 2000 });
  }, 20_000);
});


describe('health', () => {
  it('a service that reports progress turns unhealthy when none comes within twice its interval', async () => {
    // Prints three lines 100 ms apart, then goes quiet but keeps running.
    const s = new ProcessService(spec({ args: ['-e', "let n=0;const t=setInterval(()=>{console.log('tick');if(++n===3)clearInterval(t)},100);setInterval(()=>{},1000)"], progressInterval: 150 }), quiet());
    running.push(s);
    const t0 = Date.now();
    await s.start();
    expect(s.health().healthy).toBe(true);
    await vi.waitFor(() => expect(s.health()).toMatchObject({ healthy: false, detail: expect.stringMatching(/^no progress for/) }), { timeout: 5000, interval: 10 });
    // Twice the interval after the last progress (the third line, or the start if the child was slow to
    // print: a loaded machine can take longer than 300 ms to start node), never sooner.
    const h = s.health();
    expect(h.lastProgress).toBeGreaterThanOrEqual(t0);
    expect(Date.now() - h.lastProgress!).toBeGreaterThanOrEqual(300);
    expect(s.state).toBe('running');
  });

  it('the supervisor restarts a running service that stopped making progress', async () => {
    const log = quiet();
    const s = new ProcessService(spec({ args: ['-e', "let n=0;const t=setInterval(()=>{console.log('tick');if(++n===3)clearInterval(t)},100);setInterval(()=>{},1000)"], progressInterval: 150, backoffMin: 50 }), log);
    const sup = new Supervisor([s], log);
    stopping.push(sup);
    await sup.start();
    const deadline = Date.now() + 10_000;
    while (sup.restarts('svc') < 1 && Date.now() < deadline) await sleep(20);
    expect(sup.restarts('svc')).toBeGreaterThanOrEqual(1);
    expect(log.tail(100).some((e) => /svc: no progress \(no progress for \d+ s\); restarting it/.test(e.msg))).toBe(true);
  });
});

describe('built-in services under the same policy', () => {
  /** A service that fails its first `failures` starts (asking to be retried after `retryAfter` ms, if given). */
  class Flaky extends ServiceBase {
    starts = 0;
    constructor(readonly name: string, private failures: number, private readonly retryAfter?: number, private readonly needs?: Flaky) {
      super();
    }
    async start(): Promise<void> {
      this.starts++;
      if (this.needs && this.needs.state !== 'running') throw new Error(`needs ${this.needs.name}`);
      if (this.failures-- > 0) {
        this.setState('failed');
        throw this.retryAfter !== undefined ? new RetryError(`waiting for interface wlan0`, this.retryAfter) : new Error('broken');
      }
      this.setState('running');
    }
    async stop(): Promise<void> {
      this.setState('stopped');
    }
  }

  it('a failed start is retried; a wait is logged once and shown as degraded with its reason; dependants follow at once', async () => {
    const log = quiet();
    const device = new Flaky('device', 3, 200);
    const bridge = new Flaky('mqtt', 0, undefined, device);
    const sup = new Supervisor([device, bridge], log);
    stopping.push(sup);
    await sup.start();
    expect(sup.healthy()).toBe(false);
    expect(sup.problems()).toEqual([
      expect.stringMatching(/^device: waiting for interface wlan0 \(retry in \d+ s\)$/),
      expect.stringMatching(/^mqtt: needs device \(retry in \d+ s\)$/),
    ]);
    const deadline = Date.now() + 5000;
    while (!(device.state === 'running' && bridge.state === 'running') && Date.now() < deadline) await sleep(10);
    expect([device.state, bridge.state]).toEqual(['running', 'running']);
    // The bridge's backoff was 1 s: it started once the device did, not a second later.
    expect(device.starts).toBe(4);
    expect(log.tail(100).filter((e) => e.msg.includes('waiting for interface wlan0')).length).toBe(1);
    expect(sup.healthy()).toBe(true);
  });
});
