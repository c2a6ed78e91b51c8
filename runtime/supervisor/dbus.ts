/**
 * The supervisor on D-Bus (dbus-next): bus name and interface org.starling.Supervisor1 at
 * /org/starling/Supervisor1 on the system bus (DBUS_SYSTEM_BUS_ADDRESS points tests at a private one).
 *
 *   List()            → a(ssbus)  name, state, healthy, restarts, detail
 *   Start(s) Stop(s) Restart(s)  mutating: only root or the starling group (image/dbus policy)
 *   Logs(s service, u count) → as  JSON lines from the RAM ring ('' for all services)
 *   Mesh()            → s   JSON: one row per node of the mesh (services/fleet.ts), [] when not known
 *   MeshLogs(u count) → as  JSON lines of the mesh's logs, every node's, by time (runtime/supervisor/logstream.ts)
 *   Identity()        → as  [public key (Z85), fingerprint] in secure mode, [] in plain mode (never a secret)
 *   Healthy           property b: every running service healthy
 *   Services          property a(ssbus): the rows of List()
 *   StateChanged(s name, s state), Log(s json), MeshLog(s json)   signals
 *
 * Also reads NetworkManager's Connectivity where NetworkManager runs, and carries on without it.
 */
import { existsSync } from 'node:fs';
import type { Supervisor } from './supervisor.ts';
import type { LogRing } from './log.ts';

type DBus = typeof import('dbus-next');

/** What D-Bus shows of the mesh (services/fleet.ts implements it). */
export interface FleetView {
  mesh(): unknown[];
  meshTail(count: number): { seq: number }[];
  meshFollow(listener: (l: { seq: number }) => void): () => void;
}
let loaded: DBus | undefined;

/**
 * The system bus's socket files when every address in DBUS_SYSTEM_BUS_ADDRESS (default: the D-Bus
 * specification's `unix:path=/var/run/dbus/system_bus_socket`) is a `unix:path=` whose file is missing, else
 * undefined (a bus may be there, or its address cannot be checked without connecting: abstract sockets, tcp).
 */
export function missingBusSockets(): string[] | undefined {
  const addresses = (process.env.DBUS_SYSTEM_BUS_ADDRESS || 'unix:path=/var/run/dbus/system_bus_socket').split(';').filter(Boolean);
  const paths = addresses.map((a) => /^unix:(?:.*,)?path=([^,]+)/.exec(a)?.[1]);
  if (paths.some((p) => p === undefined)) return undefined;
  const files = paths.map((p) => decodeURIComponent(p!));
  return files.every((f) => !existsSync(f)) ? files : undefined;
}

/**
 * dbus-next, loaded on first use: a command or device that never touches D-Bus does not pay for it, and where
 * the system bus's socket is not there (containers, a board without dbus) it is not loaded at all — 1.2 MB
 * of an idle device's heap and about 10 ms, for a connection that would only end in ENOENT.
 */
async function loadDbus(): Promise<DBus> {
  const missing = missingBusSockets();
  if (missing) throw new DbusError(`system bus: no socket at ${missing.join(', ')}`);
  if (!loaded) {
    const m = (await import('dbus-next')) as DBus & { default?: DBus };
    loaded = m.default ?? m;
  }
  return loaded;
}

export const BUS_NAME = 'org.starling.Supervisor1';
export const OBJECT_PATH = '/org/starling/Supervisor1';
export const INTERFACE = 'org.starling.Supervisor1';

/** The D-Bus interface class, made once dbus-next is loaded (it extends dbus-next's Interface). */
function interfaceClass(dbus: DBus) {
  const SupervisorInterface = class extends dbus.interface.Interface {
    constructor(private readonly sup: Supervisor, private readonly log: LogRing, private readonly identity?: { publicKey: string; fingerprint: string }, private readonly fleet?: FleetView) {
      super(INTERFACE);
    }

    Mesh(): string {
      return JSON.stringify(this.fleet?.mesh() ?? []);
    }

    MeshLogs(count: number): string[] {
      return (this.fleet?.meshTail(count || 100) ?? []).map((l) => JSON.stringify(l));
    }

    MeshLog(json: string): string {
      return json;
    }

    Identity(): string[] {
      return this.identity ? [this.identity.publicKey, this.identity.fingerprint] : [];
    }

    get Healthy(): boolean {
      return this.sup.healthy();
    }

    /** Each service's state and health, as a property (the same rows as List). */
    get Services(): [string, string, boolean, number, string][] {
      return this.List();
    }

    List(): [string, string, boolean, number, string][] {
      return this.sup.list().map((s) => [s.name, s.state, s.healthy, s.restarts, s.detail ?? '']);
    }

    private async act(fn: () => Promise<void>): Promise<void> {
      try {
        await fn();
      } catch (e) {
        throw new dbus.DBusError('org.starling.Error.Failed', (e as Error).message);
      }
    }

    Start(name: string): Promise<void> {
      return this.act(() => this.sup.startService(name));
    }

    Stop(name: string): Promise<void> {
      return this.act(() => this.sup.stopService(name));
    }

    Restart(name: string): Promise<void> {
      return this.act(() => this.sup.restartService(name));
    }

    /** Every service's counters: service → counter → value (a{sa{sd}}). */
    Stats(): Record<string, Record<string, number>> {
      return this.sup.stats();
    }

    Logs(service: string, count: number): string[] {
      return this.log.tail(count || 100, service || undefined).map((e) => JSON.stringify(e));
    }

    StateChanged(name: string, state: string): [string, string] {
      return [name, state];
    }

    Log(json: string): string {
      return json;
    }
  };

  SupervisorInterface.configureMembers({
    properties: {
      Healthy: { signature: 'b', access: dbus.interface.ACCESS_READ },
      Services: { signature: 'a(ssbus)', access: dbus.interface.ACCESS_READ },
    },
    methods: {
      List: { outSignature: 'a(ssbus)' },
      Start: { inSignature: 's' },
      Stop: { inSignature: 's' },
      Restart: { inSignature: 's' },
      Logs: { inSignature: 'su', outSignature: 'as' },
      Stats: { outSignature: 'a{sa{sd}}' },
      Identity: { outSignature: 'as' },
      Mesh: { outSignature: 's' },
      MeshLogs: { inSignature: 'u', outSignature: 'as' },
    },
    signals: { StateChanged: { signature: 'ss' }, Log: { signature: 's' }, MeshLog: { signature: 's' } },
  });
  return SupervisorInterface;
}

export class DbusError extends Error {
  override name = 'DbusError';
}

/** Exports the supervisor on the system bus. Rejects (with the bus's reason) if the bus or the name cannot be had. */
export async function exportSupervisor(sup: Supervisor, log: LogRing, identity?: { publicKey: string; fingerprint: string }, fleet?: FleetView): Promise<{ close(): void }> {
  const dbus = await loadDbus();
  const bus = dbus.systemBus();
  // dbus-next reports connection failures as 'error' events; make them a rejection here.
  const failed = new Promise<never>((_, reject) => bus.once('error', (e: Error) => reject(new DbusError(`system bus: ${e.message}`))));
  // Only the public half: the Identity object's secret never reaches the bus.
  const iface = new (interfaceClass(dbus))(sup, log, identity ? { publicKey: identity.publicKey, fingerprint: identity.fingerprint } : undefined, fleet);
  bus.export(OBJECT_PATH, iface);
  const reply = await Promise.race([bus.requestName(BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE), failed]);
  if (reply !== dbus.RequestNameReply.PRIMARY_OWNER) {
    bus.disconnect();
    throw new DbusError(`could not own ${BUS_NAME} on the system bus (another supervisor running?)`);
  }
  bus.on('error', () => {});
  const onState = (name: string, state: string) => iface.StateChanged(name, state);
  const stopFollow = log.follow((e) => iface.Log(JSON.stringify(e)));
  // Every node's lines, this one's included (with its name), for `starling logs --mesh --follow`.
  const stopMesh = fleet?.meshFollow((l) => iface.MeshLog(JSON.stringify(l)));
  sup.on('state', onState);
  return {
    close() {
      sup.off('state', onState);
      stopFollow();
      stopMesh?.();
      bus.disconnect();
    },
  };
}

/** A client of the supervisor on the system bus, for the CLI. */
export async function connectSupervisor(): Promise<{ call(method: string, ...args: unknown[]): Promise<unknown>; on(signal: string, fn: (...a: unknown[]) => void): void; close(): void }> {
  const dbus = await loadDbus().catch((e: Error) => {
    throw new DbusError(`cannot reach the Starling supervisor on D-Bus (${e.message}); is \`starling run\` running?`);
  });
  const bus = dbus.systemBus();
  const failed = new Promise<never>((_, reject) => bus.once('error', (e: Error) => reject(new DbusError(`system bus: ${e.message}`))));
  try {
    const obj = await Promise.race([bus.getProxyObject(BUS_NAME, OBJECT_PATH), failed]);
    const iface = obj.getInterface(INTERFACE) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>> & { on(s: string, f: (...a: unknown[]) => void): void };
    return {
      call: async (method, ...args) => {
        try {
          return await iface[method]!(...args);
        } catch (e) {
          throw new DbusError((e as Error).message);
        }
      },
      on: (signal, fn) => iface.on(signal, fn),
      close: () => bus.disconnect(),
    };
  } catch (e) {
    bus.disconnect();
    throw new DbusError(`cannot reach the Starling supervisor on D-Bus (${(e as Error).message}); is \`starling run\` running?`);
  }
}

/** NetworkManager's connectivity (1 none … 4 full), or undefined when NetworkManager or the bus is not there (after at most `ms`). */
export async function networkConnectivity(ms = 2000): Promise<number | undefined> {
  const dbus = await loadDbus().catch(() => undefined);
  if (!dbus) return undefined;
  const bus = dbus.systemBus();
  let timer: NodeJS.Timeout | undefined;
  const giveUp = new Promise<undefined>((resolve) => {
    bus.on('error', () => resolve(undefined));
    timer = setTimeout(() => resolve(undefined), ms);
  });
  const ask = (async () => {
    const obj = await bus.getProxyObject('org.freedesktop.NetworkManager', '/org/freedesktop/NetworkManager');
    const props = obj.getInterface('org.freedesktop.DBus.Properties') as unknown as { Get(i: string, p: string): Promise<{ value: number }> };
    return (await props.Get('org.freedesktop.NetworkManager', 'Connectivity')).value;
  })().catch(() => undefined);
  try {
    return await Promise.race([ask, giveUp]);
  } finally {
    clearTimeout(timer);
    bus.disconnect();
  }
}
