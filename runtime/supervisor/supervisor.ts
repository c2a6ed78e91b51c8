/**
 * The supervisor: starts its services in the order given, stops them in reverse, and carries on whatever any
 * one of them does. State changes are logged and emitted (D-Bus turns them into signals).
 */
import { EventEmitter } from 'node:events';
import type { LogRing } from './log.ts';
import type { Health, Service, ServiceState } from './service.ts';

export interface ServiceStatus extends Health {
  name: string;
  state: ServiceState;
  restarts: number;
}

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

  /** Stops every service in reverse order (each bounded by its own stop timeout). */
  async stop(): Promise<void> {
    for (const s of [...this.services].reverse()) {
      try {
        await s.stop();
      } catch (e) {
        this.log.log('error', 'supervisor', `${s.name} failed to stop cleanly: ${(e as Error).message}`);
      }
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

  healthy(): boolean {
    return this.services.every((s) => s.state !== 'running' || s.health().healthy);
  }
}
