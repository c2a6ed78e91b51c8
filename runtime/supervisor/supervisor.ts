/**
 * The supervisor: starts its services in the order given, restarts any of them — built-in or external — by
 * one restart policy with the one Backoff, stops them all at once within one deadline (safe outputs first),
 * and carries on whatever any one of them does. State changes are logged and emitted (D-Bus turns them into
 * signals).
 *
 * - A service that fails to start, or fails while running, is retried after its backoff delay (1 s, 2 s, 4 s …
 *   up to its maximum, with jitter), or after the delay its error asks for ({@link RetryError}: a device
 *   waiting for its interface asks to be tried again in a second). The backoff starts again from its minimum
 *   once the service has run for `stableAfter`. A service that becomes running makes every service waiting in
 *   backoff try again at once (it may have been waiting for it, as the bridge waits for the device).
 * - A running service that reports no progress (health() unhealthy at three checks a second apart) is
 *   restarted the same way.
 * - Healthy means every service is running and healthy, or ended as its policy allows (an external service
 *   that exited cleanly under `on-failure`), or was stopped on request. Anything else is `degraded`, with the
 *   reason, in `status` and systemd's STATUS=; the systemd watchdog is fed by the event loop, not by health.
 */
import { EventEmitter } from 'node:events';
import { Backoff } from '../backoff.ts';
import type { LogRing } from './log.ts';
import type { Counters, Health, Service, ServiceState } from './service.ts';

export interface ServiceStatus extends Health {
  name: string;
  /** The service's own state, or `backoff` while the supervisor waits to try it again. */
  state: ServiceState;
  restarts: number;
}

/** When to restart a service, and how fast (the same fields as an external service's config). */
export interface RestartPolicy {
  restart: 'always' | 'on-failure' | 'never';
  /** ms */
  backoffMin: number;
  backoffMax: number;
  /** After running this long, the backoff starts again from backoffMin. */
  stableAfter: number;
}

/** The built-in services' policy: always retried, 1 s … 60 s, stable after a minute. */
export const BUILTIN_POLICY: RestartPolicy = { restart: 'always', backoffMin: 1000, backoffMax: 60_000, stableAfter: 60_000 };

/** An error that says when to try again (ms), instead of the backoff's delay: waiting, not failing. */
export class RetryError extends Error {
  override name = 'RetryError';
  constructor(message: string, readonly retryAfter: number) {
    super(message);
  }
}

export class SupervisorError extends Error {
  override name = 'SupervisorError';
}

/** The whole shutdown, ms: inside the unit's TimeoutStopSec=20s with room to exit. */
export const DEFAULT_STOP_DEADLINE_MS = 12_000;
/** How often running services' health is checked. */
const HEALTH_CHECK_MS = 1000;
/** Consecutive unhealthy checks before a running service is restarted for making no progress. */
const UNHEALTHY_CHECKS = 3;

interface Supervised {
  service: Service;
  policy: RestartPolicy;
  backoff: Backoff;
  restarts: number;
  /** A retry is scheduled: when, and why the last attempt ended. */
  timer: NodeJS.Timeout | undefined;
  retryAt: number | undefined;
  reason: string | undefined;
  /** The reason last logged, so a wait that repeats is logged once. */
  logged: string | undefined;
  stableTimer: NodeJS.Timeout | undefined;
  /** Stopped on request (or shutting down): no restarts until started again. */
  held: boolean;
  /** The supervisor itself is stopping or starting it (its state changes are not failures). */
  busy: boolean;
  /** The most recent restart delays (ms), newest last; at most 20 kept. */
  delays: number[];
  /** Health checks in a row that found it unhealthy. */
  unhealthyChecks: number;
}

export class Supervisor extends EventEmitter<{ state: [string, ServiceState] }> {
  private readonly offs: (() => void)[] = [];
  private readonly supervised: Supervised[];
  private healthTimer: NodeJS.Timeout | undefined;
  private stopping = false;

  /**
   * Stores the services (in start order) and the log; starts nothing. Each service's restart policy is its own
   * `policy` when it has one (external services), else {@link BUILTIN_POLICY}.
   */
  constructor(readonly services: Service[], readonly log: LogRing) {
    super();
    this.supervised = services.map((service) => {
      const policy = (service as Service & { policy?: RestartPolicy }).policy ?? BUILTIN_POLICY;
      return {
        service, policy, backoff: new Backoff({ min: policy.backoffMin, max: policy.backoffMax }), restarts: 0,
        timer: undefined, retryAt: undefined, reason: undefined, logged: undefined, stableTimer: undefined, held: false, busy: false, delays: [], unhealthyChecks: 0,
      };
    });
  }

  /** Starts every service in order. One that fails is logged and retried by its policy; the rest go on. */
  async start(): Promise<void> {
    for (const s of this.supervised) {
      const onState = (state: ServiceState) => {
        this.log.log('info', 'supervisor', `${s.service.name}: ${state}`, { state });
        this.emit('state', s.service.name, state);
        if (!s.busy && !s.held && (state === 'failed' || state === 'exited')) this.ended(s, state === 'failed' ? this.exitReason(s) : 'exited', state === 'failed');
      };
      s.service.on('state', onState);
      this.offs.push(() => s.service.off('state', onState));
      await this.attempt(s);
    }
    this.healthTimer = setInterval(() => this.checkHealth(), HEALTH_CHECK_MS);
  }

  /** One start; a failure goes to the policy. */
  private async attempt(s: Supervised): Promise<void> {
    s.timer = undefined;
    s.retryAt = undefined;
    s.busy = true;
    try {
      await s.service.start();
    } catch (e) {
      s.busy = false;
      this.ended(s, (e as Error).message, true, e instanceof RetryError ? e.retryAfter : undefined);
      return;
    }
    s.busy = false;
    if (s.service.state !== 'running') return;
    if (s.reason !== undefined) this.log.log('info', 'supervisor', `${s.service.name} is running again`);
    s.reason = undefined;
    s.logged = undefined;
    clearTimeout(s.stableTimer);
    s.stableTimer = setTimeout(() => s.backoff.reset(), s.policy.stableAfter);
    s.stableTimer.unref?.();
    // Whoever waits in backoff may have waited for this one: try them now.
    for (const other of this.supervised) {
      if (other !== s && other.timer && !other.held) {
        clearTimeout(other.timer);
        other.restarts++;
        void this.attempt(other);
      }
    }
  }

  private exitReason(s: Supervised): string {
    const exit = (s.service as Service & { lastExit?: { code: number | null; signal: string | null } }).lastExit;
    return exit ? (exit.signal ? `killed by ${exit.signal}` : `exited with ${exit.code}`) : 'failed';
  }

  /** A start failed or the service ended: restart it if its policy says so, after its delay. */
  private ended(s: Supervised, reason: string, failed: boolean, retryAfter?: number): void {
    clearTimeout(s.stableTimer);
    if (this.stopping || s.held) return;
    const again = s.policy.restart === 'always' || (s.policy.restart === 'on-failure' && failed);
    if (!again) {
      this.log.log(failed ? 'error' : 'info', 'supervisor', `${s.service.name} ${reason}; restart policy ${s.policy.restart}: not restarting`);
      s.reason = failed ? reason : undefined;
      return;
    }
    const delay = retryAfter ?? s.backoff.next();
    s.delays.push(delay);
    if (s.delays.length > 20) s.delays.shift();
    s.reason = reason;
    s.retryAt = Date.now() + delay;
    // A wait that repeats (an interface that is not there yet) is logged once, not every second.
    if (s.logged !== reason) {
      this.log.log(retryAfter !== undefined ? 'warn' : 'error', 'supervisor', `${s.service.name}: ${reason}; trying again in ${delay} ms`, { attempt: s.backoff.attempts });
      s.logged = reason;
    }
    clearTimeout(s.timer);
    s.timer = setTimeout(() => {
      s.restarts++;
      void this.attempt(s);
    }, delay);
  }

  /** A running service that stopped making progress is restarted (counted as a failure). */
  private checkHealth(): void {
    for (const s of this.supervised) {
      if (s.held || s.busy || s.timer || s.service.state !== 'running') {
        s.unhealthyChecks = 0;
        continue;
      }
      const h = s.service.health();
      // Restart only what stays unhealthy for a few checks in a row: a busy moment is not a dead service.
      s.unhealthyChecks = h.healthy ? 0 : s.unhealthyChecks + 1;
      if (s.unhealthyChecks < UNHEALTHY_CHECKS) continue;
      s.unhealthyChecks = 0;
      const reason = `no progress (${h.detail ?? 'unhealthy'})`;
      this.log.log('error', 'supervisor', `${s.service.name}: ${reason}; restarting it`);
      s.busy = true;
      void s.service.stop().catch(() => {}).finally(() => {
        s.busy = false;
        this.ended(s, reason, true);
      });
    }
  }

  /**
   * Shuts down within one deadline: first every service's outputs go to their safe level (bounded by a
   * second), then all services stop in parallel; whatever has not stopped by `deadlineMs` is killed
   * (`forceStop`) and given one more second. The default, 12 s, fits inside the unit's TimeoutStopSec=20s, so
   * systemd's SIGKILL never lands before the outputs are safe. Resolves when done; never rejects.
   */
  async stop(deadlineMs = DEFAULT_STOP_DEADLINE_MS): Promise<void> {
    this.stopping = true;
    clearInterval(this.healthTimer);
    for (const s of this.supervised) {
      s.held = true;
      clearTimeout(s.timer);
      clearTimeout(s.stableTimer);
      s.timer = undefined;
    }
    const start = Date.now();
    const within = (p: Promise<unknown>, ms: number) => Promise.race([p, new Promise((r) => setTimeout(r, Math.max(0, ms)).unref?.())]);
    await within(Promise.all(this.services.map((s) => s.safe?.().catch((e: Error) => {
      this.log.log('error', 'supervisor', `${s.name}: could not set its safe state: ${e.message}`);
    }))), 1000);
    const pending = new Set<Service>(this.services);
    const stops = Promise.all(this.services.map(async (s) => {
      try {
        await s.stop();
      } catch (e) {
        this.log.log('error', 'supervisor', `${s.name} failed to stop cleanly: ${(e as Error).message}`);
      }
      pending.delete(s);
    }));
    await within(stops, deadlineMs - (Date.now() - start));
    if (pending.size > 0) {
      this.log.log('error', 'supervisor', `not stopped within ${deadlineMs} ms, killed: ${[...pending].map((s) => s.name).join(', ')}`);
      for (const s of pending) s.forceStop?.();
      await within(stops, 1000);
    }
    for (const off of this.offs.splice(0)) off();
  }

  private find(name: string): Supervised {
    const s = this.supervised.find((x) => x.service.name === name);
    if (!s) throw new SupervisorError(`no service named '${name}'; services: ${this.services.map((x) => x.name).join(', ')}`);
    return s;
  }

  /** Starts a service that was stopped on request (its backoff starts afresh). */
  async startService(name: string): Promise<void> {
    const s = this.find(name);
    s.held = false;
    s.backoff.reset();
    clearTimeout(s.timer);
    await this.attempt(s);
  }

  /** Stops a service and keeps it stopped (no restarts) until started again. */
  async stopService(name: string): Promise<void> {
    const s = this.find(name);
    s.held = true;
    clearTimeout(s.timer);
    s.timer = undefined;
    s.reason = undefined;
    await s.service.stop();
  }

  async restartService(name: string): Promise<void> {
    const s = this.find(name);
    this.log.log('info', 'supervisor', `restarting ${name} on request`);
    s.held = true;
    clearTimeout(s.timer);
    s.timer = undefined;
    await s.service.stop();
    s.held = false;
    s.restarts++;
    await this.attempt(s);
  }

  /** A service's most recent restart delays (ms), newest last. */
  delays(name: string): number[] {
    return [...this.find(name).delays];
  }

  /** How often a service was restarted (after a failure, for no progress, or on request). */
  restarts(name: string): number {
    return this.find(name).restarts;
  }

  list(): ServiceStatus[] {
    return this.supervised.map((s) => {
      const h = s.service.health();
      if (s.timer && s.retryAt !== undefined) {
        const secs = Math.max(0, Math.round((s.retryAt - Date.now()) / 1000));
        return { name: s.service.name, state: 'backoff', restarts: s.restarts, healthy: false, detail: `${s.reason} (retry in ${secs} s)` };
      }
      const detail = s.reason && s.service.state !== 'running' ? s.reason : h.detail;
      return { name: s.service.name, state: s.service.state, restarts: s.restarts, ...h, ...(detail !== undefined ? { detail } : {}) };
    });
  }

  /** Every service's counters, and the supervisor's own (log entries pushed out of the ring). */
  stats(): Record<string, Counters> {
    const out: Record<string, Counters> = { supervisor: { 'log.evicted': this.log.evicted } };
    for (const s of this.supervised) {
      try {
        out[s.service.name] = { restarts: s.restarts, ...s.service.stats() };
      } catch (e) {
        out[s.service.name] = { restarts: s.restarts };
        this.log.log('error', 'supervisor', `${s.service.name}: stats failed: ${(e as Error).message}`);
      }
    }
    return out;
  }

  /** Services that are not as they should be, each with why (empty when all is well). */
  problems(): string[] {
    const out: string[] = [];
    for (const [i, row] of this.list().entries()) {
      const s = this.supervised[i]!;
      if (s.held) continue;
      if (row.state === 'running' && row.healthy) continue;
      if (row.state === 'exited' && !s.reason) continue; // ended as its policy allows
      out.push(`${row.name}: ${row.detail ?? row.state}`);
    }
    return out;
  }

  /** True when every service runs and is healthy, ended as its policy allows, or was stopped on request. */
  healthy(): boolean {
    return this.problems().length === 0;
  }
}
