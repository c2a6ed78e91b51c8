// `starling tail` and `starling publish`: telemetry on the mesh, publishers found through ZRE.
import { capability } from 'zeromq';
import { CliError, MESH_HELP, MESH_OPTIONS, intOption, meshSecurity, nodeOptions, out, parse, secondsOption, sleep, untilSignal, type Command } from './common.ts';
import { clientCurve, publisherCurve } from '../../runtime/security/context.ts';
import { ZreNode } from '../../runtime/zre/node.ts';
import { chooseInterface } from '../../runtime/net/iface.ts';
import { Publisher } from '../../runtime/telemetry/publisher.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import { advertise, follow, type Transport } from '../../runtime/telemetry/mesh.ts';

export const tail: Command = {
  help: `Usage: starling tail [PREFIX] [--transport auto|tcp|epgm] [--no-snapshot] [--rate KBIT] [mesh options]

Joins the mesh, connects to every node that advertises telemetry, and prints each
sample whose topic starts with PREFIX (default: all): first the last known value of
each topic (snapshot), then the live stream. Lost samples are reported as GAP lines.

  --transport T       auto (default: epgm when offered and available, else tcp), tcp, epgm
  --no-snapshot       do not ask publishers for the last values
  --rate KBIT         epgm receive rate in kbit/s; match the publisher's (default 10000)
${MESH_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...MESH_OPTIONS, transport: { type: 'string' }, 'no-snapshot': { type: 'boolean' }, rate: { type: 'string' } });
    if (positionals.length > 1) throw new CliError(`tail takes at most one PREFIX, got ${positionals.length}`);
    const transport = (values.transport ?? 'auto') as Transport;
    if (!['auto', 'tcp', 'epgm'].includes(transport)) throw new CliError(`--transport '${transport}': expected auto, tcp or epgm`);
    if (transport === 'epgm' && !capability.pgm) throw new CliError('--transport epgm: this zeromq.js has no OpenPGM; run `bash image/setup.sh` to build it against the system libzmq', 1);
    const json = Boolean(values.json);
    const rate = values.rate === undefined ? undefined : intOption('--rate', values.rate, 1, 10_000_000);
    const sec = meshSecurity(values);
    const sub = new Subscriber({ prefix: positionals[0] ?? '', rate, onProblem: (m) => process.stderr.write(`tail: ${m}\n`), ...(sec ? { curve: clientCurve(sec) } : {}) });
    const node = new ZreNode(nodeOptions(values));
    sub.on('batch', (b, from) => {
      for (let i = from; i < b.count; i++) {
        const s = b.sample(i);
        try {
          if (json) out(JSON.stringify({ ...s, ts: Number.isFinite(s.ts) ? s.ts : String(s.ts), values: s.values.map(jsonValue) }));
          else out(`${isoTime(s.ts)} ${JSON.stringify(s.topic).slice(1, -1)} ${s.values.join(',')}${s.unit ? ' ' + JSON.stringify(s.unit).slice(1, -1) : ''}${s.status ? ` status=${s.status}` : ''} #${s.seq}`);
        } catch (e) {
          // Whatever a publisher sent, tail goes on: say what could not be shown.
          out(`UNPRINTABLE sample of ${JSON.stringify(b.topic.slice(0, 80))}: ${(e as Error).message}`);
        }
      }
    });
    sub.on('gap', (g) => (json ? out(JSON.stringify({ event: 'GAP', ...g })) : out(`GAP ${g.topic}: ${g.lost} sample(s) lost from ${g.publisher.slice(0, 6)}`)));
    try {
      sub.start();
      await node.start();
    } catch (e) {
      await sub.stop();
      throw new CliError((e as Error).message, 1);
    }
    const stopFollowing = follow(node, sub, {
      transport, pgm: Boolean(capability.pgm), snapshot: !values['no-snapshot'],
      onConnect: (endpoint, peer) => process.stderr.write(`tail: ${peer.name} publishes at ${endpoint}\n`),
      onError: (e) => process.stderr.write(`tail: ${e.message}\n`),
    });
    if (!json) process.stderr.write(`tail: on ${node.iface!.name} (${node.iface!.address}) as ${node.name}; waiting for publishers\n`);
    await untilSignal();
    stopFollowing.stop();
    await node.stop();
    await sub.stop();
    return 0;
  },
};

/** ISO time, or the raw number marked `?time=` when it is no date (tail prints what it got). */
export function isoTime(ts: number): string {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? `?time=${ts}` : d.toISOString();
}

/** A value for JSON: numbers as they are, NaN and ±Infinity (which JSON cannot hold) as null and strings. */
const jsonValue = (v: number): number | string | null => (Number.isNaN(v) ? null : Number.isFinite(v) ? v : String(v));

function parseValues(text: string): number[] {
  const values = text.split(',').map((v) => Number(v.trim()));
  if (values.length === 0 || values.length > 32 || values.some((v) => !Number.isFinite(v) || text.trim() === '')) {
    throw new CliError(`VALUE '${text}': expected a number, or up to 32 comma-separated numbers`);
  }
  return values;
}

export const publish: Command = {
  help: `Usage: starling publish TOPIC VALUE [--unit U] [--count N] [--interval MS] [--wait SEC]
                         [--epgm GROUP:PORT] [--rate KBIT] [mesh options]

Joins the mesh advertising a publisher, waits up to SEC seconds (default 5) for a
subscriber of TOPIC, then publishes VALUE (a number, or comma-separated numbers)
COUNT times (default 1), INTERVAL ms apart (default 100), and leaves. Exits 1 if no
subscriber came (over tcp; with --epgm it waits SEC seconds and sends regardless).

  --unit U            unit of the value, e.g. °C
  --count N           how many samples (default 1)
  --interval MS       pause between samples (default 100)
  --wait SEC          how long to wait for a subscriber (default 5)
  --epgm GROUP:PORT   also send on this multicast group (epgm, e.g. 239.192.7.1:5555)
  --rate KBIT         epgm rate in kbit/s (default 10000)
${MESH_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      ...MESH_OPTIONS, unit: { type: 'string' }, count: { type: 'string' }, interval: { type: 'string' }, wait: { type: 'string' },
      epgm: { type: 'string' }, rate: { type: 'string' },
    });
    if (positionals.length !== 2) throw new CliError(`publish takes TOPIC and VALUE, got ${positionals.length} argument(s)`);
    const [topic, text] = positionals as [string, string];
    const sampleValues = parseValues(text);
    const count = values.count === undefined ? 1 : intOption('--count', values.count, 1, 1e9);
    const interval = values.interval === undefined ? 100 : intOption('--interval', values.interval, 0, 3_600_000);
    const wait = secondsOption('--wait', values.wait, 5);
    if (values.epgm && !/^\d+\.\d+\.\d+\.\d+:\d+$/.test(values.epgm)) throw new CliError(`--epgm '${values.epgm}': expected GROUP:PORT, e.g. 239.192.7.1:5555`);
    const rate = values.rate === undefined ? undefined : intOption('--rate', values.rate, 1, 10_000_000);
    const opts = nodeOptions(values);
    let iface;
    try {
      iface = chooseInterface(opts.iface);
    } catch (e) {
      throw new CliError((e as Error).message, 1);
    }
    const endpoints = [`tcp://${iface.address}:*`];
    if (values.epgm) endpoints.push(`epgm://${iface.address};${values.epgm}`);
    let pub: Publisher;
    try {
      const sec = meshSecurity(values);
      pub = new Publisher({ endpoints, snapshotEndpoint: `tcp://${iface.address}:*`, rate, batchSamples: 1, ...(sec ? { curve: publisherCurve(sec) } : {}) });
      await pub.start();
    } catch (e) {
      throw new CliError((e as Error).message, 1);
    }
    const node = new ZreNode({ ...opts, iface: iface.address });
    try {
      advertise(node, pub, values.epgm);
      await node.start();
      if (values.epgm) await sleep(wait * 1000);
      else if (!(await pub.waitForSubscriber(topic, wait * 1000))) throw new CliError(`no subscriber for '${topic}' within ${wait} s; nothing was published`, 1);
      for (let i = 0; i < count; i++) {
        pub.publish(topic, sampleValues, { unit: values.unit ?? '' });
        if (i + 1 < count && interval > 0) await sleep(interval);
      }
      pub.flushAll();
      await pub.drained();
      const st = pub.stats();
      out(values.json ? JSON.stringify({ topic, published: st.samplesPublished, dropped: st.samplesDropped }) : `published ${st.samplesPublished} sample(s) of ${topic}`);
      return 0;
    } finally {
      await node.stop();
      await pub.stop();
    }
  },
};
