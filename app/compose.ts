/**
 * The composition root: the one place that turns a configuration into running parts. `run` and `demo` both
 * build their services here and hand them to the Supervisor; nothing else constructs a service.
 *
 * Order (the Supervisor starts them in this order; it stops them all at once):
 *   1. the device — mesh node, telemetry publisher, sensors and GPIO (services/device.ts);
 *   2. the embedded MQTT broker, when `mqtt.embedded` and no `mqtt.url`;
 *   3. the MQTT bridge, when there is a broker (the configured one, or the embedded one's address);
 *   4. the Influx sink (services/influx.ts), when `influx.url` is set;
 *   5. the web view (services/web/service.ts), unless `web.listen: off`; the caller hands it the supervisor;
 *   6. files and updates (services/files.ts): offers and pushed releases from peers;
 *   7. the fleet service (services/fleet.ts): this node's status on the mesh, and every peer's;
 *   8. each external service of `services:`, in the order written.
 * The configuration is read, never changed.
 *
 * This lives in app/, beside the CLI, because it is the only code that knows services/ (and through them
 * drivers/): with it inside runtime/, runtime/ and services/ would import each other.
 */
import { context } from 'zeromq';
import type { Config } from '../runtime/config/load.ts';
import { DEFAULT_MAX_PEERS } from '../runtime/zre/node.ts';
import type { LogRing } from '../runtime/supervisor/log.ts';
import { ProcessService } from '../runtime/supervisor/process.ts';
import type { Service } from '../runtime/supervisor/service.ts';
import { Device } from '../services/device.ts';
import { BridgeService } from '../services/mqtt-bridge/service.ts';
import { EmbeddedBroker } from '../services/mqtt-bridge/broker.ts';
import { publisherCurve, type Security } from '../runtime/security/context.ts';
import { LogStream } from '../runtime/supervisor/logstream.ts';
import { FilesService } from '../services/files.ts';
import { WebService } from '../services/web/service.ts';
import { InfluxService } from '../services/influx.ts';
import { FleetService } from '../services/fleet.ts';
import { releasesDir } from '../runtime/update/releases.ts';
import { baseBundle, runningRelease, runningVersion } from './launch.ts';

/**
 * ZeroMQ sockets one node may hold for each peer at most: its DEALER to the peer's inbox, a telemetry SUB to
 * the peer's publisher and a DEALER for its snapshot while that runs, the status and log SUBs of fleet.follow,
 * and one file transfer.
 */
const ZMQ_SOCKETS_PER_PEER = 6;

/**
 * Sets libzmq's socket limit for `nodes` nodes in this process, each with up to `peers` peers (call before any
 * socket opens: libzmq fixes it when its context starts). Its default, 1,023 sockets, ended a hub following
 * 200 simulated peers: its log follower could not open a socket for some of them. libzmq keeps about 12 bytes a
 * socket of the limit (75 KB for the default 1,024 peers).
 */
export function zmqSocketsFor(nodes = 1, peers = DEFAULT_MAX_PEERS): void {
  context.maxSockets = Math.max(context.maxSockets, nodes * (peers * ZMQ_SOCKETS_PER_PEER + 64));
}

export interface Composition {
  /** In start order. */
  services: Service[];
  device: Device;
  broker: EmbeddedBroker | undefined;
  bridge: BridgeService | undefined;
  influx: InfluxService | undefined;
  files: FilesService;
  /** The web view; set its `supervisor` once the Supervisor exists. */
  web: WebService | undefined;
  /** Status across the mesh; set its `supervisor` once the Supervisor exists. */
  fleet: FleetService;
}

/**
 * The services a configuration implies, constructed (nothing starts); each logs into `log` under its name.
 * `security` (secure mode: see runtime/security/context.ts, opened by the caller before this) goes to the
 * device and the bridge.
 */
export function servicesFrom(config: Config, log: LogRing, security?: Security): Composition {
  if (config.security.mode === 'curve' && !security) throw new Error('security.mode is curve but no identity was opened (openSecurity): refusing to run in the clear');
  const logger = (name: string) => (level: 'info' | 'warn' | 'error', msg: string) => log.log(level, name, msg);
  const version = runningVersion();
  // This node's log ring on the mesh (read role in secure mode, like telemetry); off with fleet.log_rate 0.
  const logStream = config.fleet.log_rate > 0
    ? new LogStream(log, config.fleet.log_rate, security ? { ...publisherCurve(security), zapDomain: `${security.zapDomain}.logs` } : undefined)
    : undefined;
  const device = new Device(config, logger('device'), security, { version, release: runningRelease() }, logStream);
  const broker = !config.mqtt.url && config.mqtt.embedded ? new EmbeddedBroker(config.mqtt.embedded_listen) : undefined;
  const url = config.mqtt.url ?? broker?.url;
  const bridge = url ? new BridgeService(config, device, logger('mqtt'), url, security) : undefined;
  const influx = config.influx.url ? new InfluxService(config, device, logger('influx'), security) : undefined;
  const processes = config.services.map((s) => new ProcessService({
    name: s.name, command: s.command, args: s.args, env: s.env ?? {}, cwd: s.cwd, restart: s.restart,
    backoffMin: s.backoff_min, backoffMax: s.backoff_max, stableAfter: s.stable_after, stopTimeout: s.stop_timeout, progressInterval: s.progress_interval,
  }, log));
  const files = new FilesService(config, device, { version, releases: releasesDir(), baseBundle: baseBundle() }, logger('files'), security);
  const web = config.web.listen === 'off' ? undefined : new WebService(config, device, log, logger('web'), security);
  const fleet = new FleetService(config, device, logger('fleet'), security, log);
  const services: Service[] = [device, ...(broker ? [broker] : []), ...(bridge ? [bridge] : []), ...(influx ? [influx] : []), ...(web ? [web] : []), files, fleet, ...processes];
  return { services, device, broker, bridge, influx, files, web, fleet };
}
