// `starling check`, `sensors`, `gpio` and `run`: the device described by the YAML configuration.
import type { MeshRow } from '../../services/fleet.ts';
import { CliError, intOption, out, parse, untilSignal, type Command } from './common.ts';
import { ConfigError, loadConfig, parseConfig, type Config } from '../../runtime/config/load.ts';
import { createSensor } from '../../drivers/sensors/index.ts';
import { GpioDriver } from '../../drivers/gpio/gpio.ts';
import { STATUS_NAMES } from '../../drivers/driver.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { Notifier } from '../../runtime/supervisor/notify.ts';
import { connectSupervisor, exportSupervisor, networkConnectivity } from '../../runtime/supervisor/dbus.ts';
import { servicesFrom, zmqSocketsFor } from '../compose.ts';
import { EXIT_UPDATE } from '../../services/files.ts';
import { openSecurity, type Security } from '../../runtime/security/context.ts';
import { smallBufferPool, trimFreeMemory } from '../../runtime/memory.ts';

const DEFAULT_CONFIG = '/etc/starling/starling.yaml';
const configFile = (given?: string) => given ?? process.env.STARLING_CONFIG ?? DEFAULT_CONFIG;
const CONFIG_HELP = `  --config FILE       the configuration (default: $STARLING_CONFIG, else ${DEFAULT_CONFIG})`;

/** Loads the config or throws a CliError whose message lists every problem as file:line:col. */
function load(file: string): Config {
  try {
    return loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) throw new CliError(`${e.problems.length} problem(s) in the configuration:\n${e.message}`, 1);
    throw e;
  }
}

export const check: Command = {
  help: `Usage: starling check [FILE] [--json]

Validates FILE (default: $STARLING_CONFIG, else ${DEFAULT_CONFIG}) against the schema.
Each problem is printed as FILE:LINE:COL: what was found; what was expected. Exits 1 if
there is any.`,
  async run(argv) {
    const { values, positionals } = parse(argv, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } });
    const file = configFile(positionals[0]);
    try {
      const c = loadConfig(file);
      out(values.json ? JSON.stringify({ file, ok: true, sensors: c.sensors.length, gpio: c.gpio.length }) : `${file}: ok (${c.sensors.length} sensor(s), ${c.gpio.length} GPIO line(s))`);
      return 0;
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      if (values.json) out(JSON.stringify({ file, ok: false, problems: e.problems }));
      else process.stderr.write(e.message + '\n');
      return 1;
    }
  },
};

export const sensors: Command = {
  help: `Usage: starling sensors [--config FILE] [--json]

Opens each sensor of the configuration, reads it once and prints name, value, unit and
status (a missing or failing device is shown with its status, and the rest go on).

${CONFIG_HELP}
  --json              one JSON object per sensor`,
  async run(argv) {
    const { values } = parse(argv, { config: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, false);
    const c = load(configFile(values.config));
    for (const s of c.sensors) {
      const d = createSensor(s, c, c.simulate);
      const opened = await d.open();
      const r = opened.status === 0 ? await d.read() : opened;
      await d.close();
      const status = STATUS_NAMES[r.status] ?? String(r.status);
      if (values.json) out(JSON.stringify({ name: s.name, platform: d.kind, values: r.values.map((v) => (Number.isNaN(v) ? null : v)), unit: d.unit, status, error: r.error }));
      else out(`${s.name.padEnd(16)} ${r.status === 0 ? `${r.values.map((v) => Math.round(v * 1000) / 1000).join(',')} ${d.unit}` : '-'}`.padEnd(40) + ` ${status}${r.error ? `: ${r.error}` : ''}`);
    }
    return 0;
  },
};

export const gpio: Command = {
  help: `Usage: starling gpio get NAME [--config FILE] [--json]
       starling gpio set NAME 0|1 [--config FILE]

Reads or sets a line declared under gpio: in the configuration, through sysfs (onoff),
as it is: an output keeps its level, nothing is reset on exit. Simulated lines live in
the running device: set them over the mesh with
  starling whisper NODE '{"gpio":"NAME","set":1}'

${CONFIG_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, { config: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } });
    const [verb, name, value] = positionals;
    if ((verb !== 'get' && verb !== 'set') || !name || (verb === 'set') !== (value !== undefined) || positionals.length > 3) {
      throw new CliError('expected: gpio get NAME, or gpio set NAME 0|1');
    }
    const c = load(configFile(values.config));
    const g = c.gpio.find((x) => x.name === name);
    if (!g) throw new CliError(`no GPIO line named '${name}'; lines: ${c.gpio.map((x) => x.name).join(', ') || 'none'}`, 1);
    if (g.simulate ?? c.simulate) throw new CliError(`line '${name}' is simulated; set it on the running device: starling whisper NODE '{"gpio":"${name}","set":1}'`, 1);
    if (verb === 'set' && g.mode !== 'output') throw new CliError(`line '${name}' is an input`, 1);
    if (verb === 'set' && value !== '0' && value !== '1') throw new CliError(`value '${value}': expected 0 or 1`);
    const d = new GpioDriver(g, c.sysfs, undefined, true);
    const opened = await d.open();
    if (opened.status !== 0) throw new CliError(opened.error ?? 'cannot open the line', 1);
    try {
      if (verb === 'set') await d.write(Number(value));
      const r = await d.read();
      out(values.json ? JSON.stringify({ name, value: r.values[0], number: d.number }) : String(r.values[0]));
    } finally {
      await d.close();
    }
    return 0;
  },
};

export const run: Command = {
  help: `Usage: starling run [--config FILE] [--fallback FILE]

The supervisor. Starts, in order: the device described by the configuration (mesh node
advertising its telemetry, sensors and GPIO sampled onto it, GPIO commands from peers),
then each external service under services:, restarting those by their policy with
backoff. Logs go to stdout as JSON lines (journald keeps them) and to a RAM ring that
\`starling logs\` reads. Exports org.starling.Supervisor1 on the system bus when it can
(status, restart, logs), and tells systemd READY/WATCHDOG/STATUS when NOTIFY_SOCKET is
set. SIGTERM or Ctrl-C first sets every output to its safe level, then stops everything at
once within 12 s (what has not stopped by then is killed).

A configuration with problems stops the start with each problem as FILE:LINE:COL, unless
--fallback names another: then the problems are logged (journald keeps them), the fallback
runs, and the status says degraded until the configuration is fixed and Starling restarted.
The node's name, when the configuration gives none, is $STARLING_NODE_NAME if set (the
board image sets it to the host name), else 6 hex digits of its UUID.

${CONFIG_HELP}
  --fallback FILE     the configuration to run when FILE has problems (the .deb's unit
                      gives /usr/share/starling/starling.yaml, the packaged default)`,
  async run(argv) {
    smallBufferPool();
    zmqSocketsFor();
    const { values } = parse(argv, { config: { type: 'string' }, fallback: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, false);
    const file = configFile(values.config);
    let c: Config;
    let configProblems: string[] = [];
    if (values.fallback === undefined) c = load(file);
    else {
      try {
        c = loadConfig(file);
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        configProblems = e.message.split('\n');
        c = load(values.fallback);
      }
    }
    const named = process.env.STARLING_NODE_NAME;
    if (c.node.name === undefined && named) {
      try {
        c.node.name = parseConfig(`node: { name: ${JSON.stringify(named)} }`, '$STARLING_NODE_NAME').node.name;
      } catch (e) {
        throw new CliError(`STARLING_NODE_NAME: ${e instanceof ConfigError ? e.problems[0]!.message : (e as Error).message}`, 1);
      }
    }
    const log = new LogRing(c.logs.ring);
    if (configProblems.length) {
      const n = configProblems.length;
      log.log('error', 'supervisor', `${file} has ${n} problem(s); running the fallback configuration ${values.fallback} instead:`);
      for (const p of configProblems) log.log('error', 'supervisor', p);
    }
    // Secure mode: this node's identity (made on first start) and its allowlist, before anything opens a socket.
    let security: Security | undefined;
    try {
      security = openSecurity(c.security, { create: true, name: c.node.name, onProblem: (m) => log.log('warn', 'security', m) });
    } catch (e) {
      throw new CliError(`security: ${(e as Error).message}`, 1);
    }
    if (security) log.log('info', 'security', `secure mode (CURVE): key ${security.identity.publicKey} (fingerprint ${security.identity.fingerprint}); trusted keys in ${c.security.trusted}`);
    else log.log('info', 'security', 'plain mode (security.mode: none): the mesh and telemetry are not encrypted, and any node may join and command');
    const { services, files, web, fleet } = servicesFrom(c, log, security);
    // SIGHUP: read the trusted keys again now (they are also read every second).
    const onHup = () => security?.trust.reload();
    process.on('SIGHUP', onHup);
    const sup = new Supervisor(services, log);
    if (web) web.supervisor = sup;
    fleet.supervisor = sup;
    const notifier = new Notifier();
    if (notifier.enabled) log.log('info', 'supervisor', `systemd notifications ${notifier.via === 'addon' ? 'from this process (sd_notify addon)' : 'through systemd-notify'}`);
    // Listen for SIGTERM/SIGINT from the start: one that arrives while starting stops everything once started.
    let restartFor: string | undefined;
    let restartNow = () => {};
    const restarting = new Promise<void>((r) => (restartNow = r));
    const stopped = Promise.race([untilSignal(), restarting]);
    await sup.start();
    let bus: { close(): void } | undefined;
    try {
      bus = await exportSupervisor(sup, log, security?.identity, fleet);
    } catch (e) {
      log.log('warn', 'supervisor', `no D-Bus control: ${(e as Error).message}`);
    }
    const connectivity = await networkConnectivity();
    if (connectivity !== undefined) log.log('info', 'supervisor', `NetworkManager connectivity: ${connectivity}`);
    // STATUS=: the services, or what is wrong ("degraded: device: waiting for interface wlan0 (retry in 1 s)").
    const summary = () => {
      const problems = sup.problems();
      if (configProblems.length) problems.unshift(`${file} has ${configProblems.length} problem(s), running ${values.fallback}`);
      return problems.length ? `degraded: ${problems.join('; ')}` : sup.list().map((s) => `${s.name} ${s.state}`).join(', ');
    };
    await notifier.ready(summary());
    // WATCHDOG=1 proves the event loop turns, not that every service is healthy: a device waiting for Wi-Fi is
    // retried here, in the process, and a blocked loop gets the process restarted by systemd.
    notifier.startWatchdog();
    // glibc's free pages back to the kernel every 10 s (runtime/memory.ts).
    const stopTrimming = trimFreeMemory();
    // An installed update: stop as on SIGTERM, then exit 75 so systemd (Restart=) starts the new release.
    files.watch(() => sup.healthy() && !configProblems.length, (why) => {
      restartFor = why;
      log.log('info', 'supervisor', `restarting: ${why}`);
      restartNow();
    });
    let said = summary();
    const update = () => {
      const now = summary();
      if (now !== said) void notifier.status((said = now));
    };
    sup.on('state', update);
    const ticker = setInterval(update, 1000);
    await stopped;
    clearInterval(ticker);
    stopTrimming();
    sup.off('state', update);
    notifier.stop();
    process.off('SIGHUP', onHup);
    await notifier.send('STOPPING=1');
    await sup.stop();
    bus?.close();
    // Everything is closed; should anything still hold the event loop (a pipe an escaped grandchild keeps open,
    // a socket a library forgot), exit anyway rather than outlive systemd's stop timeout.
    const code = restartFor ? EXIT_UPDATE : 0;
    setTimeout(() => process.exit(code), 2000).unref();
    return code;
  },
};

export const status: Command = {
  help: `Usage: starling status [--json [--identity]]
       starling status --mesh [--json]

Asks the running supervisor (org.starling.Supervisor1 on the system bus) for its identity
(public key and fingerprint in secure mode), each service's state, health and restart
count, and below each its counters that are not zero: what every bound dropped or
refused (sequence gaps, refused peers and keys, malformed telemetry, spool drops, broker
faults …). --json gives every counter (a list of services; with --identity, an object
{identity, services}).

--mesh prints one row per node of the mesh instead, as the supervisor hears them (each
node publishes its status every fleet.status_interval, default 10 s): presence, version,
uptime, health, RSS, CPU temperature, load, messages spooled, drops, and how long ago it
reported. Nodes that left show as gone. --json gives the rows as a JSON list.`,
  async run(argv) {
    const { values } = parse(argv, { json: { type: 'boolean' }, identity: { type: 'boolean' }, mesh: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, false);
    const sup = await reach();
    try {
      if (values.mesh) {
        const rows = JSON.parse((await sup.call('Mesh')) as string) as MeshRow[];
        if (values.json) out(JSON.stringify(rows));
        else for (const line of meshTable(rows, Date.now())) out(line);
        return 0;
      }
      const rows = (await sup.call('List')) as [string, string, boolean, number, string][];
      const stats = (await sup.call('Stats')) as Record<string, Record<string, number>>;
      const [publicKey, fingerprint] = ((await sup.call('Identity').catch(() => [])) as string[]);
      if (values.json) {
        const list = rows.map(([name, state, healthy, restarts, detail]) => ({ name, state, healthy, restarts, detail, stats: stats[name] ?? {} }));
        out(JSON.stringify(values.identity ? { identity: publicKey ? { publicKey, fingerprint } : null, services: list } : list));
        return 0;
      }
      out(publicKey ? `identity         ${publicKey} (fingerprint ${fingerprint}), secure mode` : 'identity         none: plain mode (security.mode: none)');
      const nonZero = (c: Record<string, number> | undefined) => Object.entries(c ?? {}).filter(([k, v]) => v !== 0 && k !== 'restarts').sort(([a], [b]) => a.localeCompare(b));
      for (const [name, state, healthy, restarts, detail] of rows) {
        out(`${name.padEnd(16)} ${state.padEnd(9)} ${healthy ? 'healthy' : 'unhealthy'}  restarts=${restarts}${detail ? `  ${detail}` : ''}`);
        const shown = nonZero(stats[name]);
        if (shown.length) out(`  ${shown.map(([k, v]) => `${k}=${v}`).join(' ')}`);
      }
      const own = nonZero(stats.supervisor);
      if (own.length) out(`${'supervisor'.padEnd(16)} ${own.map(([k, v]) => `${k}=${v}`).join(' ')}`);
      return 0;
    } finally {
      sup.close();
    }
  },
};

export const restart: Command = {
  help: `Usage: starling restart SERVICE

Asks the running supervisor to stop and start SERVICE. The D-Bus policy allows this to
root and to members of the group starling only.`,
  async run(argv) {
    const { positionals } = parse(argv, { help: { type: 'boolean', short: 'h' } });
    if (positionals.length !== 1) throw new CliError(`restart takes one SERVICE, got ${positionals.length}`);
    const sup = await reach();
    try {
      await sup.call('Restart', positionals[0]);
      out(`restarted ${positionals[0]}`);
      return 0;
    } finally {
      sup.close();
    }
  },
};

export const logs: Command = {
  help: `Usage: starling logs [SERVICE] [-n COUNT] [-f] [--json]
       starling logs --mesh [-n COUNT] [--follow|-f] [--node NAME] [--level LEVEL] [--json]

Prints the last COUNT (default 100) log entries of SERVICE (default: all) from the
supervisor's RAM ring; -f keeps following new ones.

--mesh prints every node's lines instead (each node sends its ring to the mesh, at most
fleet.log_rate lines a second), merged by time, each with its node's name; lines that
did not arrive (a link that dropped, a node over its rate) are marked as a gap.
--node keeps one node's, --level those at LEVEL (debug, info, warn, error) or above.
Nothing is written to disk for this.`,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      n: { type: 'string', short: 'n' }, f: { type: 'boolean', short: 'f' }, follow: { type: 'boolean' }, json: { type: 'boolean' }, mesh: { type: 'boolean' },
      node: { type: 'string' }, level: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    });
    const service = positionals[0] ?? '';
    const count = values.n === undefined ? 100 : intOption('-n', values.n, 1, 1_000_000);
    if (values.mesh) return meshLogs(values, count, service);
    if (values.node !== undefined || values.level !== undefined) throw new CliError('--node and --level go with --mesh');
    const show = (json: string) => {
      const e = JSON.parse(json) as { ts: number; level: string; service: string; msg: string };
      if (service && e.service !== service) return;
      out(values.json ? json : `${new Date(e.ts).toISOString()} ${e.level.padEnd(5)} ${e.service}: ${e.msg}`);
    };
    const sup = await reach();
    try {
      for (const line of (await sup.call('Logs', service, count)) as string[]) show(line);
      if (!values.f) return 0;
      sup.on('Log', (json) => show(String(json)));
      await untilSignal();
      return 0;
    } finally {
      sup.close();
    }
  },
};

const LEVELS = ['debug', 'info', 'warn', 'error'];

/** `starling logs --mesh`: the supervisor's merged lines of every node, then (--follow) new ones as they come. */
async function meshLogs(values: { f?: boolean; follow?: boolean; json?: boolean; node?: string; level?: string }, count: number, service: string): Promise<number> {
  if (values.level !== undefined && !LEVELS.includes(values.level)) throw new CliError(`--level ${values.level}: expected one of ${LEVELS.join(', ')}`);
  const least = values.level === undefined ? 0 : LEVELS.indexOf(values.level);
  const show = (json: string) => {
    const l = JSON.parse(json) as { node: string; ts: number; level: string; service: string; msg: string; gap?: number };
    if (values.node !== undefined && l.node !== values.node) return;
    if (service && l.service !== service && l.gap === undefined) return;
    if (l.gap === undefined && Math.max(0, LEVELS.indexOf(l.level)) < least) return;
    if (values.json) return out(json);
    const when = new Date(l.ts).toISOString();
    out(l.gap !== undefined ? `${when} ----- ${l.node}: … ${l.gap} line(s) missed …` : `${when} ${l.level.padEnd(5)} ${l.node} ${l.service}: ${l.msg}`);
  };
  const sup = await reach();
  try {
    for (const line of (await sup.call('MeshLogs', count)) as string[]) show(line);
    if (!values.f && !values.follow) return 0;
    sup.on('MeshLog', (json) => show(String(json)));
    await untilSignal();
    return 0;
  } finally {
    sup.close();
  }
}

async function reach() {
  try {
    return await connectSupervisor();
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  }
}

/** `starling status --mesh`: a header and one line per node; a blank for what a node did not report. */
export function meshTable(rows: MeshRow[], now: number): string[] {
  const f = (v: number | undefined, digits = 0, unit = '') => (v === undefined ? '-' : `${v.toFixed(digits)}${unit}`);
  const age = (r: MeshRow) => (r.updated === undefined ? '-' : r.presence === 'self' ? 'now' : `${Math.max(0, Math.round((now - r.updated) / 1000))}s ago`);
  const uptime = (s: number | undefined) => (s === undefined ? '-' : s >= 86_400 ? `${(s / 86_400).toFixed(1)}d` : s >= 3600 ? `${(s / 3600).toFixed(1)}h` : `${Math.round(s)}s`);
  const table = [['NODE', 'PRESENCE', 'VERSION', 'UPTIME', 'HEALTH', 'RSS', 'TEMP', 'LOAD', 'SPOOL', 'DROPPED', 'REPORTED']];
  for (const r of rows) {
    table.push([
      r.name, r.presence, r.version ?? '-', uptime(r.uptime), r.healthy === undefined ? '-' : r.healthy ? 'healthy' : 'UNHEALTHY',
      f(r.rss, 1, 'MB'), f(r.cpu_temp, 1, '°C'), f(r.load, 2), f(r.spool), f(r.dropped), age(r),
    ]);
  }
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return table.map((row) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
}
