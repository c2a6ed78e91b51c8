/**
 * A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe
 * (`--remote-debugging-pipe`: JSON messages ending in NUL on fds 3 and 4), so no WebSocket library and no
 * puppeteer are needed. Optionally inside a network namespace (`netns`), where it sees only that namespace's
 * loopback: nothing it does can reach another network.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

interface Pending { resolve(v: unknown): void; reject(e: Error): void }

export class Browser {
  private proc: ChildProcess | undefined;
  private out: Writable | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<(m: { method: string; params: Record<string, unknown>; sessionId?: string }) => void>();
  private profile = '';
  stderr = '';

  async launch(opts: { netns?: string; width?: number; height?: number } = {}): Promise<void> {
    this.profile = mkdtempSync(join(tmpdir(), 'starling-chromium-'));
    const args = [
      '--headless=new', '--remote-debugging-pipe', '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-default-apps', '--disable-extensions',
      '--disable-domain-reliability', '--disable-features=Translate,MediaRouter,OptimizationHints', '--metrics-recording-only', '--mute-audio',
      `--user-data-dir=${this.profile}`, `--window-size=${opts.width ?? 1280},${opts.height ?? 1600}`, 'about:blank',
    ];
    const [cmd, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, CHROMIUM, ...args]] : [CHROMIUM, args];
    const proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    this.proc = proc;
    proc.stderr!.on('data', (d: Buffer) => {
      if (this.stderr.length < 20_000) this.stderr += d.toString();
    });
    this.out = proc.stdio[3] as Writable;
    const input = proc.stdio[4] as Readable;
    let buf = Buffer.alloc(0);
    input.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      let at;
      while ((at = buf.indexOf(0)) >= 0) {
        const msg = JSON.parse(buf.subarray(0, at).toString('utf8')) as { id?: number; result?: unknown; error?: { message: string }; method?: string; params?: Record<string, unknown>; sessionId?: string };
        buf = buf.subarray(at + 1);
        if (msg.id !== undefined) {
          const p = this.pending.get(msg.id);
          this.pending.delete(msg.id);
          if (msg.error) p?.reject(new Error(msg.error.message));
          else p?.resolve(msg.result);
        } else if (msg.method) for (const l of this.listeners) l({ method: msg.method, params: msg.params ?? {}, ...(msg.sessionId ? { sessionId: msg.sessionId } : {}) });
      }
    });
    proc.on('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error(`chromium exited: ${this.stderr.slice(-500)}`));
      this.pending.clear();
    });
    await this.send('Browser.getVersion');
  }

  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.out!.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
    });
  }

  /** A new tab at `url`, loaded. */
  async open(url: string, viewport?: { width: number; height: number; mobile?: boolean }): Promise<Page> {
    const { targetId } = await this.send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send<{ sessionId: string }>('Target.attachToTarget', { targetId, flatten: true });
    const page = new Page(this, sessionId, targetId);
    await this.send('Page.enable', {}, sessionId);
    await this.send('Runtime.enable', {}, sessionId);
    if (viewport) await this.send('Emulation.setDeviceMetricsOverride', { width: viewport.width, height: viewport.height, deviceScaleFactor: 1, mobile: viewport.mobile ?? false }, sessionId);
    const loaded = this.event('Page.loadEventFired', sessionId);
    loaded.catch(() => {}); // awaited below; a timeout while navigate is still pending must not go unhandled
    await this.send('Page.navigate', { url }, sessionId);
    await loaded;
    return page;
  }

  /** The next event `method` (of a session). */
  event(method: string, sessionId?: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(l);
        reject(new Error(`no ${method} within ${timeoutMs} ms`));
      }, timeoutMs);
      const l = (m: { method: string; params: Record<string, unknown>; sessionId?: string }) => {
        if (m.method !== method || (sessionId && m.sessionId !== sessionId)) return;
        clearTimeout(timer);
        this.listeners.delete(l);
        resolve(m.params);
      };
      this.listeners.add(l);
    });
  }

  /** The browser's processes' total RSS is not ours to measure here; this is its main process id. */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async close(): Promise<void> {
    const proc = this.proc;
    if (proc && proc.exitCode === null) {
      const gone = new Promise((r) => proc.once('exit', r));
      this.send('Browser.close').catch(() => {});
      await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
    rmSync(this.profile, { recursive: true, force: true });
  }
}

export class Page {
  constructor(private readonly browser: Browser, readonly sessionId: string, readonly targetId: string) {}

  /** Evaluates `expression` in the page (awaiting a promise), returning its value as JSON. Throws on a page exception. */
  async eval<T = unknown>(expression: string): Promise<T> {
    const r = await this.browser.send<{ result: { value?: T }; exceptionDetails?: { text: string; exception?: { description?: string } } }>(
      'Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true }, this.sessionId,
    );
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value as T;
  }

  /** Polls `expression` until it is truthy; returns its value. */
  async waitFor<T = unknown>(expression: string, timeoutMs = 15_000, what = expression): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await this.eval<T>(expression);
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`the page never showed ${what} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** A PNG of the whole page. */
  async screenshot(): Promise<Buffer> {
    const r = await this.browser.send<{ data: string }>('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true }, this.sessionId);
    return Buffer.from(r.data, 'base64');
  }

  async close(): Promise<void> {
    await this.browser.send('Target.closeTarget', { targetId: this.targetId });
  }
}
