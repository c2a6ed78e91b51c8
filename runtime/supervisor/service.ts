/**
 * The service contract (the Zigbee2MQTT habit): a constructor that only stores its dependencies, `start` that
 * acquires, `stop` that releases, and `health` that reports progress. The supervisor owns the lifecycle.
 */
import { EventEmitter } from 'node:events';

export type ServiceState = 'stopped' | 'starting' | 'running' | 'backoff' | 'stopping' | 'failed' | 'exited';

export interface Health {
  healthy: boolean;
  /** When the service last reported progress (ms since the epoch); undefined if it never did. */
  lastProgress?: number;
  detail?: string;
}

/** Flat counters: `mesh.sequenceGaps` → 3. */
export type Counters = Record<string, number>;

/**
 * Flattens an object of counters under `prefix`: numbers as they are, booleans as 0/1, nested objects as
 * `prefix.key.sub`; strings and the rest are left out.
 */
export function counters(prefix: string, o: object | undefined): Counters {
  const out: Counters = {};
  for (const [k, v] of Object.entries(o ?? {})) {
    const key = `${prefix}.${k}`;
    if (typeof v === 'number') out[key] = v;
    else if (typeof v === 'boolean') out[key] = v ? 1 : 0;
    else if (v && typeof v === 'object' && !Array.isArray(v)) Object.assign(out, counters(key, v));
  }
  return out;
}

export interface ServiceEvents {
  state: [ServiceState];
}

export interface Service extends EventEmitter<ServiceEvents> {
  readonly name: string;
  readonly state: ServiceState;
  start(): Promise<void>;
  stop(): Promise<void>;
  health(): Health;
  /**
   * Its counters (drops, refusals, gaps, reconnects …) and a few gauges (queue depths), flat: `kind.name` →
   * number. What every bound counts, for `starling status` and D-Bus `Stats`. Cheap: called on request.
   */
  stats(): Counters;
  /** Puts what the service drives into its safe state at once (GPIO outputs); called first on shutdown. */
  safe?(): Promise<void>;
  /** Ends the service now (SIGKILL): called when the shutdown deadline has passed and stop() has not finished. */
  forceStop?(): void;
}

/**
 * Health from progress (the balena-supervisor habit): healthy while progress was reported within twice the
 * interval. A service that reports no interval is healthy while running.
 */
export function progressHealth(state: ServiceState, lastProgress: number | undefined, interval: number | undefined, now = Date.now()): Health {
  if (state !== 'running') return { healthy: false, lastProgress, detail: state };
  if (!interval) return { healthy: true, lastProgress };
  if (lastProgress === undefined || now - lastProgress > 2 * interval) {
    return { healthy: false, lastProgress, detail: `no progress for ${lastProgress === undefined ? 'ever' : `${Math.round((now - lastProgress) / 1000)} s`}` };
  }
  return { healthy: true, lastProgress };
}

/**
 * The state bookkeeping every built-in service shares: `state`, the `state` event, and health from state
 * (healthy while running). Subclasses implement start/stop and may refine health.
 */
export abstract class ServiceBase extends EventEmitter<ServiceEvents> implements Service {
  abstract readonly name: string;
  private current: ServiceState = 'stopped';

  get state(): ServiceState {
    return this.current;
  }

  protected setState(state: ServiceState): void {
    if (state === this.current) return;
    this.current = state;
    this.emit('state', state);
  }

  health(): Health {
    return this.current === 'running' ? { healthy: true } : { healthy: false, detail: this.current };
  }

  stats(): Counters {
    return {};
  }

  abstract start(): Promise<void>;
  abstract stop(): Promise<void>;
}
