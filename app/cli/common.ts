/**
 * What every `starling` subcommand shares: the mesh options, --help text, one-line errors, event formatting.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ZreNode, type ZreNodeOptions, type ZreEvents } from '../../runtime/zre/node.ts';
import { ConfigError, loadConfig, type Config } from '../../runtime/config/load.ts';
import { meshCurve, openSecurity, type Security } from '../../runtime/security/context.ts';

import { CliError } from './command.ts';

export { CliError, type Command } from './command.ts';

type Options = NonNullable<ParseArgsConfig['options']>;

/** Options every mesh subcommand takes. */
export const MESH_OPTIONS = {
  iface: { type: 'string' },
  port: { type: 'string' },
  name: { type: 'string' },
  header: { type: 'string', multiple: true },
  peer: { type: 'string', multiple: true },
  evasive: { type: 'string' },
  silent: { type: 'string' },
  expire: { type: 'string' },
  'gossip-bind': { type: 'string' },
  'gossip-connect': { type: 'string', multiple: true },
  'gossip-ttl': { type: 'string' },
  uuid: { type: 'string' },
  identity: { type: 'string' },
  trusted: { type: 'string' },
  config: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies Options;

export const MESH_HELP = `Mesh options:
  --iface NAME|IP     interface to run on (default: first up, non-loopback IPv4 with broadcast)
  --port N            UDP beacon port (default 5670)
  --name NAME         our node name (default: first 6 hex digits of our UUID)
  --header K=V        a HELLO header; repeat for more
  --peer tcp://IP:P   a static peer endpoint, for networks where broadcast does not pass; repeat for more
  --evasive SEC       silence before a peer counts as EVASIVE (default 5)
  --silent SEC        silence before a peer counts as SILENT (default 10)
  --expire SEC        silence before a peer is dropped (default 30)
  --gossip-bind tcp://IP:PORT      serve gossip here (zgossip, Zyre's gossip mode: no UDP beacons)
  --gossip-connect tcp://IP:PORT   a gossip seed to connect to; repeat for two or three
  --gossip-ttl SEC    lease of our gossip tuple: republished every third of it, gone when not (default 30)
  --uuid HEX          our UUID, 32 hex digits (default: a random one per start)
  --identity DIR      secure mode (CURVE) with the key pair in DIR (see starling keygen)
  --trusted DIR       ... and the trusted public keys in DIR (see starling trust); both or neither
  --config FILE       take the node and security sections of a configuration (options given here win)
  --json              machine-readable output
  -h, --help          this help`;

/** parseArgs with our wording for mistakes: one line naming the bad option. */
export function parse<O extends Options>(argv: string[], options: O, allowPositionals = true) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new CliError((e as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

type MeshValues = {
  iface?: string; port?: string; name?: string; header?: string[]; peer?: string[]; evasive?: string; silent?: string; expire?: string;
  'gossip-bind'?: string; 'gossip-connect'?: string[]; 'gossip-ttl'?: string; identity?: string; trusted?: string; config?: string; uuid?: string;
};

const configs = new WeakMap<object, Config | undefined>();
const securities = new WeakMap<object, Security | undefined>();

/** The configuration named by --config (loaded once per parsed options), or undefined. */
function meshConfig(values: MeshValues): Config | undefined {
  if (!values.config) return undefined;
  if (!configs.has(values)) {
    try {
      configs.set(values, loadConfig(values.config));
    } catch (e) {
      if (e instanceof ConfigError) throw new CliError(`${e.problems.length} problem(s) in the configuration:\n${e.message}`, 1);
      throw e;
    }
  }
  return configs.get(values);
}

/**
 * Secure mode of a mesh command: --identity DIR with --trusted DIR, or a configuration's security section
 * (--config) with mode curve; undefined for plain mode. The key pair must exist (`starling keygen` makes it);
 * the allowlist is watched while the command runs.
 */
export function meshSecurity(values: MeshValues): Security | undefined {
  if (securities.has(values)) return securities.get(values);
  let sec: Security | undefined;
  if ((values.identity === undefined) !== (values.trusted === undefined)) throw new CliError('--identity and --trusted go together (secure mode needs a key pair and an allowlist)');
  try {
    const onProblem = (m: string) => process.stderr.write(`starling: ${m}\n`);
    if (values.identity && values.trusted) sec = openSecurity({ mode: 'curve', identity: values.identity, trusted: values.trusted, zap_domain: 'global' }, { create: false, onProblem });
    else {
      const c = meshConfig(values);
      if (c) sec = openSecurity(c.security, { create: false, onProblem });
    }
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError((e as Error).message, 1);
  }
  sec?.trust.start();
  securities.set(values, sec);
  return sec;
}

/** Turns the mesh options into node options, checking each value. */
export function nodeOptions(values: MeshValues): ZreNodeOptions {
  const opts: ZreNodeOptions = {};
  const c = meshConfig(values);
  if (c) {
    Object.assign(opts, { name: c.node.name, iface: c.node.iface, beaconPort: c.node.port, headers: c.node.headers, peers: c.node.peers });
    if (c.node.gossip.bind || c.node.gossip.connect.length) opts.gossip = { bind: c.node.gossip.bind, connect: c.node.gossip.connect, ttl: c.node.gossip.ttl / 1000 };
  }
  const sec = meshSecurity(values);
  if (sec) opts.curve = meshCurve(sec);
  if (values.uuid !== undefined) {
    if (!/^[0-9a-fA-F]{32}$/.test(values.uuid)) throw new CliError(`--uuid '${values.uuid}': expected 32 hex digits`);
    opts.uuid = Buffer.from(values.uuid, 'hex');
  }
  if (values.evasive !== undefined) opts.evasiveTimeout = secondsOption('--evasive', values.evasive, 5) * 1000;
  if (values.silent !== undefined) opts.silentTimeout = secondsOption('--silent', values.silent, 10) * 1000;
  if (values.expire !== undefined) opts.expiredTimeout = secondsOption('--expire', values.expire, 30) * 1000;
  if (values.iface) opts.iface = values.iface;
  if (values.port !== undefined) opts.beaconPort = intOption('--port', values.port, 1, 65535);
  if (values.name !== undefined) opts.name = values.name;
  if (values.header) {
    opts.headers = {};
    for (const h of values.header) {
      const eq = h.indexOf('=');
      if (eq <= 0) throw new CliError(`--header '${h}': expected KEY=VALUE`);
      opts.headers[h.slice(0, eq)] = h.slice(eq + 1);
    }
  }
  if (values.peer) {
    for (const p of values.peer) {
      if (!/^tcp:\/\/\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/.test(p)) throw new CliError(`--peer '${p}': expected tcp://IPv4:PORT`);
    }
    opts.peers = values.peer;
  }
  const endpoint = /^tcp:\/\/\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/;
  const bind = values['gossip-bind'];
  const connect = values['gossip-connect'];
  if (bind !== undefined && !endpoint.test(bind)) throw new CliError(`--gossip-bind '${bind}': expected tcp://IPv4:PORT (an address, never a host name)`);
  for (const c of connect ?? []) if (!endpoint.test(c)) throw new CliError(`--gossip-connect '${c}': expected tcp://IPv4:PORT`);
  if (bind !== undefined || connect) {
    opts.gossip = { bind, connect, ttl: values['gossip-ttl'] === undefined ? undefined : secondsOption('--gossip-ttl', values['gossip-ttl'], 30) };
  }
  return opts;
}

export function intOption(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new CliError(`${flag} '${value}': expected a whole number from ${min} to ${max}`);
  return n;
}

export function secondsOption(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new CliError(`${flag} '${value}': expected a number of seconds, 0 or more`);
  return n;
}

/** Creates and starts a node; turns start failures into a one-line CLI error. */
export async function startNode(opts: ZreNodeOptions): Promise<ZreNode> {
  let node: ZreNode;
  try {
    node = new ZreNode(opts);
    await node.start();
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  }
  return node;
}

/** Resolves on the first SIGINT or SIGTERM (or after `seconds`, when given and > 0). */
export function untilSignal(seconds = 0): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      clearTimeout(timer);
      resolve();
    };
    const timer = seconds > 0 ? setTimeout(done, seconds * 1000) : undefined;
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `ready` every 25 ms until it holds (true) or `seconds` have passed (false). */
export async function waitUntil(seconds: number, ready: () => boolean): Promise<boolean> {
  const deadline = Date.now() + seconds * 1000;
  while (!ready()) {
    if (Date.now() >= deadline) return false;
    await sleep(25);
  }
  return true;
}

/** Content frames as text when every frame is valid UTF-8, else as hex (`contentHex`). */
export function contentFields(content: Buffer[]): { content: string[] } | { contentHex: string[] } {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  try {
    return { content: content.map((c) => decoder.decode(c)) };
  } catch {
    return { contentHex: content.map((c) => c.toString('hex')) };
  }
}

export const EVENT_NAMES = ['enter', 'exit', 'join', 'leave', 'whisper', 'shout', 'evasive', 'silent'] as const satisfies (keyof ZreEvents)[];

/** One event as a flat record: `{event, peer, name, …}` with content decoded. */
export function eventRecord(event: keyof ZreEvents, arg: ZreEvents[keyof ZreEvents][0]): Record<string, unknown> {
  const rec: Record<string, unknown> = { event: event.toUpperCase(), ...arg };
  if ('content' in arg) Object.assign(rec, { content: undefined }, contentFields(arg.content));
  return JSON.parse(JSON.stringify(rec)) as Record<string, unknown>;
}

/** One event as one human line: `ENTER  alpha (F880AC…) tcp://… {headers}`. */
export function eventLine(rec: Record<string, unknown>, self?: string): string {
  const who = `${String(rec.name)} (${String(rec.peer).slice(0, 6)})`;
  const parts = [self ? `[${self}]` : '', String(rec.event).padEnd(7), who];
  if (rec.group !== undefined) parts.push(`group=${String(rec.group)}`);
  if (rec.endpoint !== undefined) parts.push(String(rec.endpoint));
  if (rec.headers && Object.keys(rec.headers).length > 0) parts.push(JSON.stringify(rec.headers));
  if (rec.reason !== undefined) parts.push(`reason=${String(rec.reason)}`);
  if (rec.content) parts.push((rec.content as string[]).map((c) => JSON.stringify(c)).join(' '));
  if (rec.contentHex) parts.push((rec.contentHex as string[]).map((c) => `0x${c}`).join(' '));
  return parts.filter(Boolean).join(' ');
}

/** Prints every event of `node` as a line (or a JSON line). Returns the function that stops printing. */
export function printEvents(node: ZreNode, json: boolean, label?: string): () => void {
  const offs = EVENT_NAMES.map((event) => {
    const listener = (arg: ZreEvents[typeof event][0]) => {
      const rec = eventRecord(event, arg);
      out(json ? JSON.stringify(label ? { node: label, ...rec } : rec) : eventLine(rec, label));
    };
    node.on(event, listener as never);
    return () => node.off(event, listener as never);
  });
  return () => offs.forEach((off) => off());
}

/** Writes a line to stdout; a closed pipe (`| head`) ends the process quietly. */
export function out(line: string): void {
  process.stdout.write(line + '\n');
}
