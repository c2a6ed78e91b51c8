/**
 * YAML → typed config, validated against the one schema (schema.ts). Every problem becomes a
 * {@link ConfigError} line `file:line:col: what was found; what was expected`; all of them are collected, so
 * one run of `starling check` shows every mistake. Durations come out in milliseconds, defaults filled in.
 */
import { readFileSync, statSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import { MAX_CONFIG_BYTES, parseDuration, SCHEMA, type FieldSpec } from './schema.ts';

export interface ConfigProblem {
  file: string;
  line: number;
  col: number;
  message: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly problems: ConfigProblem[]) {
    problems.sort((a, b) => a.line - b.line || a.col - b.col);
    super(problems.map((p) => `${p.file}:${p.line}:${p.col}: ${p.message}`).join('\n'));
  }
}

export type Filter = { moving_average: number } | { delta: number } | { throttle: number };

interface SensorBase {
  name: string;
  interval: number;
  filters: Filter[];
  simulate?: boolean;
}
export type SensorConfig = SensorBase & (
  | { platform: 'ds18b20'; address: string }
  | { platform: 'iio'; device: string; channel: 'temp' | 'humidityrelative' | 'pressure' }
  | { platform: 'hwmon'; chip: string; input: string }
  | { platform: 'thermal'; zone: string }
  | { platform: 'system'; metric: 'load1' | 'load5' | 'load15' | 'mem_available' | 'mem_used_percent' | 'wifi_signal' | 'wifi_quality'; interface: string }
  | { platform: 'sim'; waveform: 'sine' | 'square' | 'ramp' | 'random_walk' | 'constant'; min: number; max: number; period: number; noise: number; unit: string; fail_rate: number; seed: number }
);

export interface GpioConfig {
  name: string;
  pin: string;
  mode: 'input' | 'output';
  pull: 'none' | 'up' | 'down';
  inverted: boolean;
  debounce: number;
  initial: 0 | 1;
  safe?: 0 | 1;
  simulate?: boolean;
}

export interface ServiceConfig {
  name: string;
  command: string;
  args: string[];
  env?: Record<string, string>;
  cwd?: string;
  restart: 'always' | 'on-failure' | 'never';
  backoff_min: number;
  backoff_max: number;
  stable_after: number;
  stop_timeout: number;
  progress_interval?: number;
}

export interface Config {
  node: { name?: string; iface?: string; port: number; evasive: number; expired: number; headers?: Record<string, string>; groups: string[]; peers?: string[]; gossip: { bind?: string; connect: string[]; ttl: number } };
  telemetry: { prefix: string; epgm?: string; rate: number };
  security: { mode: 'curve' | 'none'; identity: string; trusted: string; zap_domain: string };
  simulate: boolean;
  sysfs: string;
  procfs: string;
  sensors: SensorConfig[];
  gpio: GpioConfig[];
  services: ServiceConfig[];
  logs: { ring: number };
  fleet: { status_interval: number; log_rate: number; log_lines: number; follow: boolean };
  files: { accept: boolean; inbox: string; quota_mb: number; max_uploads: number };
  update: { keys: string[]; commit_after: number; max_attempts: number; trial_timeout: number };
  web: { listen: string; token?: string; token_file: string; hosts: string[]; history: number; max_topics: number; max_clients: number };
  influx: {
    url?: string; db?: string; bucket?: string; org?: string; token?: string; username?: string; password?: string; measurement: string;
    batch: number; interval: number; timeout: number; spool: string; spool_max_mb: number; spool_fsync: 'always' | 'interval' | 'never'; mesh: boolean;
  };
  mqtt: {
    url?: string; failover: string[]; client_id?: string; username?: string; password?: string; protocol: 4 | 5; keepalive: number;
    ca?: string; cert?: string; key?: string; topic: string; embedded: boolean; embedded_listen: string; discovery: boolean; discovery_prefix: string;
    spool: string; spool_max_mb: number; spool_fsync: 'always' | 'interval' | 'never'; mesh: boolean; shape: 'sample' | 'device';
  };
}

const describe = (v: unknown): string => {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  return `${typeof v} ${JSON.stringify(v)}`;
};

class Validator {
  readonly problems: ConfigProblem[] = [];
  constructor(private readonly file: string, private readonly lc: LineCounter) {}

  problem(node: Node | null | undefined, message: string, fallbackOffset = 0): void {
    const offset = node?.range?.[0] ?? fallbackOffset;
    const { line, col } = this.lc.linePos(offset);
    this.problems.push({ file: this.file, line, col, message });
  }

  /** Validates `node` against `spec` at `path`; returns the typed value (undefined when absent or invalid). */
  value(spec: FieldSpec, node: Node | null | undefined, path: string, parent?: Node): unknown {
    if (node === undefined || node === null || (isScalar(node) && node.value === null)) {
      if ('required' in spec && spec.required) {
        this.problem(node ?? parent, `${path} is required: ${spec.doc}`);
        return undefined;
      }
      return this.defaultOf(spec);
    }
    switch (spec.type) {
      case 'string':
      case 'number':
      case 'boolean':
      case 'duration':
      case 'enum':
        return this.scalar(spec, node, path);
      case 'stringmap': {
        if (!isMap(node)) return this.problem(node, `${path} should be a map of names to text, found ${describe(node.toJSON())}`);
        const out: Record<string, string> = {};
        for (const pair of node.items) out[String((pair.key as Node & { value?: unknown })?.toJSON?.() ?? pair.key)] = String((pair.value as Node | null)?.toJSON() ?? '');
        return out;
      }
      case 'list': {
        if (!isSeq(node)) return this.problem(node, `${path} should be a list (lines starting with '- '), found ${describe(node.toJSON())}`);
        return node.items.map((item, i) => this.value(spec.item, item as Node, `${path}[${i}]`, node));
      }
      case 'object':
        return this.object(spec.fields, node, path);
      case 'variant': {
        if (!isMap(node)) return this.problem(node, `${path} should be a map, found ${describe(node.toJSON())}`);
        const keyNode = node.get(spec.key, true) as Node | undefined;
        const choice = keyNode?.toJSON() as unknown;
        const names = Object.keys(spec.variants);
        if (typeof choice !== 'string' || !(choice in spec.variants)) {
          this.problem(keyNode ?? node, choice === undefined
            ? `${path}.${spec.key} is required: one of ${names.join(', ')}`
            : `${path}.${spec.key} is ${describe(choice)}; expected one of ${names.join(', ')}`);
          return undefined;
        }
        const fields = { [spec.key]: { type: 'string', doc: spec.key } as FieldSpec, ...spec.shared, ...spec.variants[choice] };
        return this.object(fields, node, path);
      }
      case 'oneof': {
        const names = Object.keys(spec.options);
        if (!isMap(node) || node.items.length !== 1) {
          return this.problem(node, `${path} should be one of ${names.map((n) => `{${n}: …}`).join(', ')}, found ${describe(node.toJSON())}`);
        }
        const pair = node.items[0]!;
        const key = String((pair.key as Node).toJSON());
        const option = spec.options[key];
        if (!option) return this.problem(pair.key as Node, `${path}: unknown ${key}; expected one of ${names.join(', ')}`);
        const v = this.value(option, pair.value as Node, `${path}.${key}`, node);
        return v === undefined ? undefined : { [key]: v };
      }
    }
  }

  /** A map against its fields; `node` undefined (the key is absent) gives the defaults. */
  private object(fields: Record<string, FieldSpec>, node: Node | undefined, path: string): Record<string, unknown> | undefined {
    if (node === undefined) {
      const out: Record<string, unknown> = {};
      for (const [key, spec] of Object.entries(fields)) {
        const d = this.defaultOf(spec);
        if (d !== undefined) out[key] = d;
      }
      return out;
    }
    if (!isMap(node)) {
      this.problem(node, `${path || 'the file'} should be a map of keys to values, found ${describe(node.toJSON())}`);
      return undefined;
    }
    const out: Record<string, unknown> = {};
    const seen = new Set<string>();
    for (const pair of node.items) {
      const key = String((pair.key as Node).toJSON());
      const spec = fields[key];
      const where = path ? `${path}.${key}` : key;
      if (!spec) {
        this.problem(pair.key as Node, `unknown key '${where}'; expected one of ${Object.keys(fields).join(', ')}`);
        continue;
      }
      seen.add(key);
      const v = this.value(spec, pair.value as Node, where, node);
      if (v !== undefined) out[key] = v;
    }
    for (const [key, spec] of Object.entries(fields)) {
      if (seen.has(key)) continue;
      if ('required' in spec && spec.required) this.problem(node, `${path ? path + '.' : ''}${key} is required: ${spec.doc}`);
      else {
        const d = this.defaultOf(spec);
        if (d !== undefined) out[key] = d;
      }
    }
    return out;
  }

  private defaultOf(spec: FieldSpec): unknown {
    if (spec.type === 'list') return [];
    if (spec.type === 'object') return this.object(spec.fields, undefined, '');
    if (!('default' in spec) || spec.default === undefined) return undefined;
    return spec.type === 'duration' ? parseDuration(spec.default) : spec.default;
  }

  private scalar(spec: FieldSpec, node: Node, path: string): unknown {
    if (!isScalar(node)) {
      this.problem(node, `${path} should be a single value (${spec.doc}), found ${describe(node.toJSON())}`);
      return undefined;
    }
    const v = node.value;
    switch (spec.type) {
      case 'string': {
        if (typeof v !== 'string' && typeof v !== 'number') return this.problem(node, `${path} should be text, found ${describe(v)}`);
        const s = String(v);
        if (spec.pattern && !spec.pattern.test(s)) return this.problem(node, `${path} is ${JSON.stringify(s)}; expected ${spec.patternDoc}`);
        if (spec.maxBytes !== undefined && Buffer.byteLength(s) > spec.maxBytes) return this.problem(node, `${path} is ${Buffer.byteLength(s)} bytes; at most ${spec.maxBytes} allowed`);
        return s;
      }
      case 'number': {
        if (typeof v !== 'number' || !Number.isFinite(v)) return this.problem(node, `${path} is ${describe(v)}; expected a number (${spec.doc})`);
        if (spec.integer && !Number.isInteger(v)) return this.problem(node, `${path} is ${v}; expected a whole number`);
        if (spec.min !== undefined && v < spec.min) return this.problem(node, `${path} is ${v}; expected at least ${spec.min}`);
        if (spec.max !== undefined && v > spec.max) return this.problem(node, `${path} is ${v}; expected at most ${spec.max}`);
        return v;
      }
      case 'boolean':
        if (typeof v !== 'boolean') return this.problem(node, `${path} is ${describe(v)}; expected true or false`);
        return v;
      case 'duration': {
        const ms = parseDuration(v);
        if (ms === undefined) return this.problem(node, `${path} is ${describe(v)}; expected a duration such as 500ms, 10s, 2m or 1h`);
        if (spec.min !== undefined && ms < spec.min) return this.problem(node, `${path} is ${String(v)}; expected at least ${spec.min} ms`);
        return ms;
      }
      case 'enum':
        if (typeof v !== 'string' || !spec.values.includes(v)) return this.problem(node, `${path} is ${describe(v)}; expected one of ${spec.values.join(', ')}`);
        return v;
      default:
        return undefined;
    }
  }
}

/** Parses and validates YAML text. Throws {@link ConfigError} listing every problem found. */
export function parseConfig(text: string, file = '<config>'): Config {
  if (text.length > MAX_CONFIG_BYTES) throw new ConfigError([{ file, line: 1, col: 1, message: `the configuration is ${text.length} characters; at most ${MAX_CONFIG_BYTES} allowed (1 MiB)` }]);
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const v = new Validator(file, lc);
  for (const e of doc.errors) {
    const [start] = e.pos;
    const { line, col } = lc.linePos(start);
    v.problems.push({ file, line, col, message: `YAML: ${e.message.split('\n')[0]}` });
  }
  if (v.problems.length > 0) throw new ConfigError(v.problems);
  const root = doc.contents as Node | null;
  const config = (root === null ? v.value(SCHEMA, undefined, '') : v.value(SCHEMA, root, '')) as Config | undefined;
  if (config) {
    // Cross-field rules: names are unique across sensors and lines (they become topics and command targets).
    const names = new Map<string, string>();
    const items = root && isMap(root) ? root : undefined;
    for (const [list, what] of [['sensors', 'sensor'], ['gpio', 'line'], ['services', 'service']] as const) {
      const seq = items?.get(list, true);
      (config[list] ?? []).forEach((item: { name?: string } | undefined, i: number) => {
        if (!item?.name) return;
        const node = isSeq(seq) ? ((seq.items[i] as Node & { get?: (k: string, keep: boolean) => Node }).get?.('name', true)) : undefined;
        const other = names.get(item.name);
        if (other) v.problem(node, `${list}[${i}].name '${item.name}' is already used by ${other}; names must be unique`);
        else names.set(item.name, `${what} ${list}[${i}]`);
      });
    }
    // The Influx sink writes to exactly one place: a database (1.x, VictoriaMetrics) or a bucket of an org (2.x).
    const influx = config.influx;
    if (influx.url) {
      const inf = items?.get('influx', true);
      const at = (k: string) => (inf && isMap(inf) ? ((inf.get(k, true) as Node | undefined) ?? inf) : undefined);
      if (influx.db === undefined && influx.bucket === undefined) v.problem(at('url'), 'influx.url is set but neither influx.db (InfluxDB 1.x, VictoriaMetrics) nor influx.bucket (InfluxDB 2.x) is');
      if (influx.db !== undefined && influx.bucket !== undefined) v.problem(at('bucket'), 'influx.db and influx.bucket are both set; a sink writes to one (db: InfluxDB 1.x or VictoriaMetrics; bucket with org: InfluxDB 2.x)');
      if (influx.bucket !== undefined && influx.org === undefined) v.problem(at('bucket'), 'influx.bucket needs influx.org (InfluxDB 2.x writes to a bucket of an organisation)');
    }
    // epgm has no CURVE in libzmq: a secure device must not multicast in the clear.
    if (config.security.mode === 'curve' && config.telemetry.epgm) {
      const tel = items?.get('telemetry', true);
      const node = tel && isMap(tel) ? (tel.get('epgm', true) as Node) : undefined;
      v.problem(node, 'telemetry.epgm cannot be used with security.mode: curve (libzmq has no CURVE for multicast, and plaintext would undo the rest); drop epgm, or set security.mode: none');
    }
  }
  if (v.problems.length > 0 || !config) throw new ConfigError(v.problems);
  return config;
}

/** Reads and validates a config file. Throws {@link ConfigError}; a missing file is one problem at 1:1. */
export function loadConfig(file: string): Config {
  let text: string;
  try {
    const size = statSync(file).size;
    if (size > MAX_CONFIG_BYTES) throw new ConfigError([{ file, line: 1, col: 1, message: `the file is ${size} bytes; a configuration may be at most ${MAX_CONFIG_BYTES} bytes (1 MiB)` }]);
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError([{ file, line: 1, col: 1, message: `cannot read the file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }]);
  }
  return parseConfig(text, file);
}
