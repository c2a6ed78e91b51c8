// `starling check`, `sensors`, `gpio` and `run`: the device described by the YAML configuration.
import { CliError, out, parse, untilSignal, type Command } from './common.ts';
import { ConfigError, loadConfig, type Config } from '../config/load.ts';
import { createSensor } from '../../drivers/sensors/index.ts';
import { GpioDriver } from '../../drivers/gpio/gpio.ts';
import { STATUS_NAMES } from '../../drivers/driver.ts';
import { Device } from '../device.ts';

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
  summary: 'validate a configuration file without running anything',
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
  summary: 'read every configured sensor once and print the readings',
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
  summary: 'read or set a configured GPIO line on this device',
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
  summary: 'run the device: mesh node, sensors, GPIO and telemetry, until stopped',
  help: `Usage: starling run [--config FILE]

Starts the device described by the configuration: the mesh node (advertising its
telemetry), every sensor and GPIO line, the sampler publishing their readings on
<prefix><name>, and GPIO commands from peers over WHISPER. SIGTERM or Ctrl-C stops it
cleanly (outputs go to their safe level).

${CONFIG_HELP}`,
  async run(argv) {
    const { values } = parse(argv, { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, false);
    const c = load(configFile(values.config));
    const device = new Device(c);
    try {
      await device.start();
    } catch (e) {
      await device.stop().catch(() => {});
      throw new CliError((e as Error).message, 1);
    }
    const node = device.node!;
    process.stderr.write(`run: ${node.name} on ${node.iface!.name} (${node.iface!.address}); ${c.sensors.length} sensor(s), ${c.gpio.length} GPIO line(s); telemetry at ${device.publisher!.endpoints.join(' ')}\n`);
    for (const s of device.sampler!.status()) {
      if (s.status !== 0 || s.error) process.stderr.write(`run: ${s.name}: ${STATUS_NAMES[s.status]}${s.error ? `: ${s.error}` : ''}\n`);
    }
    await untilSignal();
    await device.stop();
    return 0;
  },
};
