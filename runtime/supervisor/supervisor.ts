/**
 * The supervisor: starts its services in the order given, stops them all at once within one deadline (safe
 * outputs first), and carries on whatever any one of them does. State changes are logged and emitted (D-Bus turns them into signals).
 */
import { EventEmitter } from 'node:events';
import type { LogRing } from './log.ts';
import type { Counters, Health, Service, ServiceState } from './service.ts';

export interface ServiceStatus extends Health {
  name: string;
  state: ServiceState;
  restarts: number;
}

/** The whole shutdown, ms: inside the unit's TimeoutStopSec=20s with room to exit. */
export const DEFAULT_STOP_DEADLINE_MS = 12_000;

export class SupervisorError extends Error {
  override name = 'SupervisorError';
}

export class Supervisor extends EventEmitter<{ state: [string, ServiceState] }> {
  private readonly offs: (() => void)[] = [];

  /** Stores the services (in start order) and the log; starts nothing. */
  constructor(readonly services: Service[], readonly log: LogRing) {
    super();
  }

  /** Starts every service in order. One that fails to start is logged and marked failed; the rest go on. */
  async start(): Promise<void> {
    for (const s of this.services) {
      const onState = (state: ServiceState) => {
        this.log.log('info', 'supervisor', `${s.name}: ${state}`, { state });
        this.emit('state', s.name, state);
      };
      s.on('state', onState);
      this.offs.push(() => s.off('state', onState));
      try {
        await s.start();
      } catch (e) {
        this.log.log('error', 'supervisor', `${s.name} failed to start: ${(e as Error).message}`);
      }
    }
  }

  /**
   * Shuts down within one deadline: first every service's outputs go to their safe level (bounded by a
   * second), then all services stop in parallel; whatever has not stopped by `deadlineMs` is killed
   * (`forceStop`) and given one more second. The default, 12 s, fits inside the unit's TimeoutStopSec=20s, so
   * systemd's SIGKILL never lands before the outputs are safe. Resolves when done; never rejects.
   */
  async stop(deadlineMs = DEFAULT_STOP_DEADLINE_MS): Promise<void> {
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

  private find(name: string): Service {
    const s = this.services.find((x) => x.name === name);
    if (!s) throw new SupervisorError(`no service named '${name}'; services: ${this.services.map((x) => x.name).join(', ')}`);
    return s;
  }

  async startService(name: string): Promise<void> {
    await this.find(name).start();
  }

  async stopService(name: string): Promise<void> {
    await this.find(name).stop();
  }

  async restartService(name: string): Promise<void> {
    const s = this.find(name);
    this.log.log('info', 'supervisor', `restarting ${name} on request`);
    await s.stop();
    await s.start();
  }

  list(): ServiceStatus[] {
    return this.services.map((s) => ({ name: s.name, state: s.state, restarts: s.restarts, ...s.health() }));
  }

  /** Every service's counters, and the supervisor's own (log entries pushed out of the ring). */
  stats(): Record<string, Counters> {
    const out: Record<string, Counters> = { supervisor: { 'log.evicted': this.log.evicted } };
    for (const s of this.services) {
      try {
        out[s.name] = { restarts: s.restarts, ...s.stats() };
      } catch (e) {
        out[s.name] = { restarts: s.restarts };
        this.log.log('error', 'supervisor', `${s.name}: stats failed: ${(e as Error).message}`);
      }
    }
    return out;
  }

  healthy(): boolean {
    return this.services.every((s) => s.state !== 'running' || s.health().healthy);
  }
}
