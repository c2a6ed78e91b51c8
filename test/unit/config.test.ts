// The configuration schema: a good file loads with defaults filled in; each broken file gives errors that
// name file, line and column, and say what was found and what was expected.
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfig } from '../../runtime/config/load.ts';
import { parseDuration } from '../../runtime/config/schema.ts';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/config/${name}`, import.meta.url));

function problems(name: string): string[] {
  try {
    loadConfig(fixture(name));
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.problems.map((p) => `${p.line}:${p.col} ${p.message}`);
  }
  throw new Error(`${name} loaded without errors`);
}

describe('configuration', () => {
  it('loads a good file, fills defaults and turns durations into milliseconds', () => {
    const c = loadConfig(fixture('good.yaml'));
    expect(c.node).toMatchObject({ name: 'kitchen', iface: 'lo', port: 5670 });
    expect(c.telemetry).toEqual({ prefix: 'kitchen/', rate: 10000 });
    expect(c.sensors.map((s) => s.platform)).toEqual(['ds18b20', 'iio', 'hwmon', 'thermal', 'system', 'sim']);
    expect(c.sensors[0]).toMatchObject({ interval: 30_000, filters: [{ moving_average: 3 }, { delta: 0.2 }] });
    expect(c.sensors[1]).toMatchObject({ interval: 10_000, filters: [] });
    expect(c.sensors[2]).toMatchObject({ input: 'temp1' });
    expect(c.sensors[4]).toMatchObject({ interface: 'wlan0' });
    expect(c.gpio[1]).toEqual({ name: 'button', pin: 'pinctrl-bcm2711:27', mode: 'input', pull: 'up', inverted: true, debounce: 50, initial: 0 });
    expect(c).toMatchObject({ simulate: false, sysfs: '/sys', procfs: '/proc' });
  });

  it('reports wrong values with their line and column', () => {
    expect(problems('bad-types.yaml')).toEqual([
      "3:9 node.port is 99999; expected at most 65535",
      '7:14 sensors[0].address is "28-XYZ"; expected a 1-Wire id such as 28-0316a2795aff',
      '8:15 sensors[0].interval is string "soon"; expected a duration such as 500ms, 10s, 2m or 1h',
    ]);
  });

  it('reports unknown platforms, misspelt keys, out-of-range values and unknown keys', () => {
    expect(problems('bad-keys.yaml')).toEqual([
      '2:15 sensors[0].platform is string "thermometer"; expected one of ds18b20, iio, hwmon, thermal, system, sim',
      '4:5 sensors[1].platform is required: one of ds18b20, iio, hwmon, thermal, system, sim',
      '10:14 gpio[0].initial is 2; expected at most 1',
      "11:5 unknown key 'gpio[0].colour'; expected one of name, pin, mode, pull, inverted, debounce, initial, safe, simulate",
    ]);
  });

  it('reports YAML syntax errors where the parser found them', () => {
    const [first] = problems('bad-yaml.yaml');
    expect(first).toMatch(/^4:\d+ YAML: /);
  });

  it('refuses a name used twice (names become topics and command targets)', () => {
    expect(problems('duplicate-names.yaml')).toEqual([
      "5:11 gpio[0].name 'temp' is already used by sensor sensors[0]; names must be unique",
    ]);
  });

  it('reports a map where a list belongs, a missing required key, and an unknown key, all at once', () => {
    expect(problems('bad-shape.yaml')).toEqual([
      "2:3 sensors should be a list (lines starting with '- '), found a map",
      '5:5 gpio[0].pin is required: which line',
      "7:5 unknown key 'gpio[0].filters'; expected one of name, pin, mode, pull, inverted, debounce, initial, safe, simulate",
    ]);
  });

  it('a missing file is one clear problem; an empty file is a device with nothing configured', () => {
    expect(problems('does-not-exist.yaml')).toEqual(['1:1 cannot read the file: ENOENT']);
    expect(parseConfig('', 'empty.yaml')).toMatchObject({ sensors: [], gpio: [], simulate: false });
  });

  it('security defaults to curve with the state directory\'s identity; epgm with curve is an error at its line', () => {
    expect(parseConfig('', 'empty.yaml').security).toEqual({ mode: 'curve', identity: '/var/lib/starling/identity', trusted: '/var/lib/starling/trusted', zap_domain: 'global' });
    expect(parseConfig('security: { mode: none }\ntelemetry: { epgm: "239.192.7.1:5555" }', 'plain.yaml').telemetry.epgm).toBe('239.192.7.1:5555');
    expect(() => parseConfig('telemetry:\n  epgm: "239.192.7.1:5555"', 'secure.yaml')).toThrow(/secure\.yaml:2:9: telemetry\.epgm cannot be used with security\.mode: curve/);
    expect(() => parseConfig('security: { mode: tls }', 's.yaml')).toThrow(/s\.yaml:1:/);
  });

  it('parses durations', () => {
    expect([parseDuration('500ms'), parseDuration('10s'), parseDuration('2m'), parseDuration('1h'), parseDuration(3), parseDuration('1.5s')])
      .toEqual([500, 10_000, 120_000, 3_600_000, 3000, 1500]);
    expect(parseDuration('soon')).toBeUndefined();
    expect(parseDuration(-1)).toBeUndefined();
  });

  it('names, prefixes and topic templates that MQTT or Home Assistant cannot take are caught by check, each at its place', () => {
    const text = [
      'node: { name: "kitchen/+" }',
      'telemetry: { prefix: "home/#/" }',
      'mqtt: { url: "mqtt://127.0.0.1", topic: "$SYS/{topic}", discovery_prefix: "ha/+" }',
    ].join('\n');
    let found: string[] = [];
    try {
      parseConfig(text, 'wild.yaml');
    } catch (e) {
      found = (e as ConfigError).problems.map((p) => `${p.line}:${p.col} ${p.message}`);
    }
    expect(found).toHaveLength(4);
    expect(found[0]).toMatch(/^1:15 node\.name is "kitchen\/\+"; expected a name without \/, \+, # or control characters/);
    expect(found[1]).toMatch(/^2:22 telemetry\.prefix is "home\/#\/"; expected text without \+, #/);
    expect(found[2]).toMatch(/^3:41 mqtt\.topic is "\$SYS\/\{topic\}"; expected a template containing \{topic\}, without \+, #, control characters or a leading \$/);
    expect(found[3]).toMatch(/mqtt\.discovery_prefix is "ha\/\+"/);
    // Fair ones pass.
    expect(() => parseConfig('node: { name: "Küche 2" }\ntelemetry: { prefix: "home/kitchen/" }\nmqtt: { topic: "h/{topic}/state" }', 'ok.yaml')).not.toThrow();
  });

  it('a file over 1 MiB is refused at once with a clear error, before YAML parsing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'starling-config-'));
    const file = join(dir, 'huge.yaml');
    writeFileSync(file, '# ' + 'x'.repeat(20 * 1024 * 1024) + '\n');
    const t0 = Date.now();
    try {
      expect(() => loadConfig(file)).toThrow(/huge\.yaml:1:1: the file is 20971523 bytes; a configuration may be at most 1048576 bytes/);
      expect(Date.now() - t0).toBeLessThan(2000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
