// `starling demo`: the whole house on one machine, on loopback — three simulated devices and a hub that bridges
// their telemetry to an embedded MQTT broker, with every step printed as it happens.
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CliError, intOption, out, parse, secondsOption, sleep, untilSignal, type Command } from './common.ts';
import { parseConfig, type Config } from '../../runtime/config/load.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { servicesFrom } from '../compose.ts';
import { createIdentity } from '../../runtime/security/identity.ts';
import { TrustStore } from '../../runtime/security/trust.ts';
import { openSecurity } from '../../runtime/security/context.ts';

/** The three devices: what each measures (simulated twins of real sensors) and the line it drives. */
const DEVICES: { name: string; sensors: string; gpio: string }[] = [
  {
    name: 'greenhouse',
    sensors: `
  - { platform: sim, name: air, waveform: sine, min: 14, max: 28, period: 40s, noise: 0.05, unit: "°C", interval: 1s, seed: 1 }
  - { platform: sim, name: humidity, waveform: sine, min: 55, max: 85, period: 55s, unit: "%", interval: 2s, seed: 2 }`,
    gpio: `
  - { name: fan, pin: GPIO17, mode: output, initial: 0 }`,
  },
  {
    name: 'kitchen',
    sensors: `
  - { platform: sim, name: fridge, waveform: random_walk, min: 2, max: 6, unit: "°C", interval: 1s, seed: 3 }
  - { platform: sim, name: power, waveform: square, min: 80, max: 1200, period: 14s, noise: 5, unit: W, interval: 1s, seed: 4 }`,
    gpio: `
  - { name: light, pin: GPIO27, mode: output, initial: 0 }`,
  },
  {
    name: 'garage',
    sensors: `
  - { platform: sim, name: battery, waveform: ramp, min: 11.8, max: 13.6, period: 60s, unit: V, interval: 2s, seed: 5 }
  - { platform: thermal, name: cpu, zone: cpu-thermal, interval: 2s }`,
    gpio: `
  - { name: door, pin: GPIO22, mode: output, initial: 1 }`,
  },
];

function deviceConfig(name: string, body: string, iface: string, port: number, keys: string, web = 'web: { listen: "off" }'): Config {
  return parseConfig(`simulate: true
${web}
node: { name: ${name}, iface: "${iface}", port: ${port} }
telemetry: { prefix: ${name}/ }
security: { mode: curve, identity: "${join(keys, `${name}-identity`)}", trusted: "${join(keys, `${name}-trusted`)}" }
${body}`, `<demo ${name}>`);
}

/**
 * The demo's keys, in `dir`: a key pair per board, every board trusting the others (read), and the devices
 * giving the hub `command` too, as one would set a real house up (README "Securing a mesh").
 */
function demoKeys(dir: string, names: string[]): void {
  const ids = new Map(names.map((n) => [n, createIdentity(join(dir, `${n}-identity`), { name: n })]));
  for (const n of names) {
    const store = new TrustStore(join(dir, `${n}-trusted`));
    for (const [other, id] of ids) {
      if (other !== n) store.add(id.publicKey, { name: other, roles: other === 'hub' ? ['read', 'command'] : ['read'] });
    }
  }
}

export const demo: Command = {
  help: `Usage: starling demo [--seconds S] [--mqtt IP:PORT] [--web IP:PORT|off] [--iface NAME] [--port N] [--json]

Runs, in this one process and on loopback (nothing leaves this machine):
  - an embedded MQTT broker on --mqtt (default 127.0.0.1:1883);
  - three devices — greenhouse, kitchen, garage — each a mesh node with simulated
    sensors and a simulated GPIO output, publishing telemetry;
  - a hub: a node that finds the devices by their beacons, subscribes to their
    telemetry and bridges it to the broker, with Home Assistant discovery, and serves
    the web view (--web, default http://127.0.0.1:8080/): open it in a browser to see
    the devices live and switch their outputs.
Prints what the broker receives (states, discovery) and what the mesh does. After a
few seconds it switches the greenhouse fan on from MQTT, as Home Assistant would:
the hub whispers the command to the greenhouse, whose new state comes back.
Ends S seconds after it starts watching the broker (default 20; 0 = until Ctrl-C).
Watch the broker from elsewhere with, for example:
  mosquitto_sub -h 127.0.0.1 -t 'starling/#' -v

  --seconds S         how long to watch (default 20, 0 = until interrupted)
  --mqtt IP:PORT      where the embedded broker listens (default 127.0.0.1:1883)
  --web IP:PORT|off   where the hub's web view listens (default 127.0.0.1:8080; port 0: any)
  --iface NAME|IP     interface for the mesh (default lo)
  --port N            UDP beacon port (default 5670)
  --json              one JSON object per line
  -h, --help          this help`,
  async run(argv) {
    const { values } = parse(argv, {
      seconds: { type: 'string' }, mqtt: { type: 'string' }, web: { type: 'string' }, iface: { type: 'string' }, port: { type: 'string' },
      json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    }, false);
    const seconds = secondsOption('--seconds', values.seconds, 20);
    const port = values.port === undefined ? 5670 : intOption('--port', values.port, 1, 65535);
    const listen = values.mqtt ?? '127.0.0.1:1883';
    if (!/^\d+\.\d+\.\d+\.\d+:\d+$/.test(listen)) throw new CliError(`--mqtt '${listen}': expected IPv4:PORT, e.g. 127.0.0.1:1883`);
    const webListen = values.web ?? '127.0.0.1:8080';
    if (webListen !== 'off' && !/^\d+\.\d+\.\d+\.\d+:\d+$/.test(webListen)) throw new CliError(`--web '${webListen}': expected IPv4:PORT or off, e.g. 127.0.0.1:8080`);
    const iface = values.iface ?? 'lo';
    const json = Boolean(values.json);
    const say = (note: string) => out(json ? JSON.stringify({ source: 'demo', note }) : `-- ${note}`);

    const spool = mkdtempSync(join(tmpdir(), 'starling-demo-'));
    const keys = join(spool, 'keys');
    demoKeys(keys, [...DEVICES.map((d) => d.name), 'hub']);
    // Four boards' configurations through the composition root, each under a supervisor of its own, as each
    // would run on its board: three devices, and a hub with the embedded broker and the bridge.
    const configs = [
      ...DEVICES.map((d) => deviceConfig(d.name, `sensors:${d.sensors}\ngpio:${d.gpio}`, iface, port, keys)),
      // The hub's web view: a token of this run's own (the page carries it for its switches).
      deviceConfig('hub', `mqtt: { embedded: true, embedded_listen: "${listen}", mesh: true, spool: "${join(spool, 'spool')}", spool_fsync: never }`, iface, port, keys,
        webListen === 'off' ? undefined : `web: { listen: "${webListen}", token: ${randomBytes(18).toString('base64url')} }`),
    ];
    // The supervisors' logs stay in their rings: the demo prints what the broker and the mesh show.
    const boards = configs.map((c) => {
      const log = new LogRing(c.logs.ring, null);
      const composed = servicesFrom(c, log, openSecurity(c.security, { create: false, onProblem: (m) => log.log('warn', 'security', m) }));
      const supervisor = new Supervisor(composed.services, log);
      if (composed.web) composed.web.supervisor = supervisor;
      composed.fleet.supervisor = supervisor;
      return { config: c, log, ...composed, supervisor };
    });
    const hub = boards[boards.length - 1]!;
    const watcher = new MqttClient({ url: `mqtt://${listen}`, clientId: 'starling-demo-watcher', clean: true, reconnect: { min: 200, max: 1000 } });
    const started: Supervisor[] = [];
    /** Starts a board; a service that did not come up is the demo's failure, with its reason from the log. */
    const start = async (b: (typeof boards)[number], what: string, hint = '') => {
      started.push(b.supervisor);
      await b.supervisor.start();
      const failed = b.supervisor.list().find((s) => s.state !== 'running');
      if (failed) {
        const why = b.log.tail(50).reverse().find((e) => e.level === 'error')?.msg ?? failed.state;
        throw new CliError(`${what}: ${why}${failed.name === 'broker' ? hint : failed.name === 'web' ? '; give it another port with --web 127.0.0.1:PORT (or --web off)' : ''}`, 1);
      }
    };

    let states = 0;
    const seen = new Set<string>();
    watcher.on('message', (topic, payload) => {
      const text = payload.toString();
      if (topic.startsWith('homeassistant/')) {
        const c = JSON.parse(text) as { name?: string; device?: { name?: string }; entity_category?: string };
        const kind = topic.split('/')[1];
        // A node's own status (<prefix>@node/…) is a diagnostic entity.
        const diagnostic = c.entity_category === 'diagnostic';
        if (json) out(JSON.stringify({ source: 'mqtt', topic, discovery: { kind, device: c.device?.name, name: c.name, ...(diagnostic ? { diagnostic } : {}) } }));
        else out(`mqtt  discovery  ${kind} ${c.device?.name}/${c.name}${diagnostic ? ' (diagnostic)' : ''}`);
        return;
      }
      if (topic.endsWith('/set')) return;
      let state: { value?: number; unit?: string; publisher?: string };
      try {
        state = JSON.parse(text) as typeof state;
      } catch {
        state = {};
      }
      states++;
      seen.add(topic);
      if (json) out(JSON.stringify({ source: 'mqtt', topic, state: state.value === undefined ? text : state }));
      else out(`mqtt  ${topic.padEnd(32)} ${state.value === undefined ? text : `${Math.round(state.value * 100) / 100} ${state.unit ?? ''}`.trimEnd()}`);
    });

    // Ctrl-C or SIGTERM ends it at any time; the S seconds count from when the broker is watched, so a slow
    // start (a loaded machine) does not eat the time the states have to arrive.
    const interrupted = untilSignal();
    let stopped: Promise<void> = interrupted;
    say(`secure mesh (CURVE): a key pair for each of the four boards made in ${keys}, each trusting the others; the devices let the hub command them`);
    try {
      for (const d of boards.slice(0, -1)) {
        await start(d, `device ${d.config.node.name}`);
        say(`device ${d.config.node.name} on ${d.device.node!.iface!.name}: ${d.config.sensors.map((s) => s.name).join(', ')} and line ${d.config.gpio.map((g) => g.name).join(', ')}; telemetry at ${d.device.publisher!.endpoints[0]}`);
      }
      await start(hub, 'demo', '; give it another port with --mqtt 127.0.0.1:PORT');
      say(`hub with an embedded MQTT broker on ${listen}`);
      if (hub.web?.url) {
        if (json) out(JSON.stringify({ source: 'demo', note: `web view at ${hub.web.url}`, web: hub.web.url }));
        else out(`-- web view at ${hub.web.url} (open it in a browser: the devices live, their switches)`);
      }
      const hubNode = hub.device.node!;
      hubNode.on('enter', (p) => (json ? out(JSON.stringify({ source: 'mesh', node: 'hub', event: 'ENTER', name: p.name, endpoint: p.endpoint })) : out(`mesh  hub sees ${p.name} at ${p.endpoint}`)));
      hubNode.on('exit', (p) => (json ? out(JSON.stringify({ source: 'mesh', node: 'hub', event: 'EXIT', name: p.name })) : out(`mesh  ${p.name} left`)));
      for (const p of hubNode.peerList()) json ? out(JSON.stringify({ source: 'mesh', node: 'hub', event: 'ENTER', name: p.name, endpoint: p.endpoint })) : out(`mesh  hub sees ${p.name} at ${p.endpoint}`);
      await watcher.start();
      await watcher.subscribe('starling/#', 0);
      await watcher.subscribe('homeassistant/#', 0);
      say(`hub bridging the mesh to mqtt://${listen}; watching starling/# and homeassistant/#`);
      if (seconds > 0) stopped = Promise.race([interrupted, sleep(seconds * 1000)]);

      // As Home Assistant would: switch the greenhouse fan on once its state has arrived.
      const command = (async () => {
        const deadline = Date.now() + 15_000;
        while (!seen.has('starling/greenhouse/fan') && Date.now() < deadline) await sleep(100);
        if (!seen.has('starling/greenhouse/fan')) return say('the greenhouse fan never reported; no command sent');
        await sleep(1000);
        say('MQTT command: starling/greenhouse/fan/set = 1 (hub → greenhouse by WHISPER)');
        await watcher.publish('starling/greenhouse/fan/set', '1', { qos: 1 });
      })();
      await stopped;
      await command;
    } finally {
      say('stopping');
      await watcher.stop().catch(() => {});
      await Promise.all(started.map((s) => s.stop()));
      rmSync(spool, { recursive: true, force: true });
    }
    say(`stopped; ${states} states from ${seen.size} topics reached the broker`);
    return 0;
  },
};
