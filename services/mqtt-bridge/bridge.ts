/**
 * The MQTT bridge: telemetry samples → MQTT state topics, with store-and-forward and Home Assistant discovery.
 *
 * - Each sample goes to its state topic (the template with `{topic}` filled in; default `starling/{topic}`),
 *   QoS 1, as JSON: `{"value": 21.5, "unit": "°C", "ts": …, "seq": …,
 *   "publisher": …}` (`value` an array for several values; `{"status": "missing", …}` for a failed read).
 *   `seq` and `publisher` let a consumer drop the duplicates QoS 1 allows. GPIO states are retained.
 * - Or, with `shape: 'device'`, one JSON state per device as Zigbee2MQTT publishes them: a topic `a/b/c` is
 *   field `c` of device `a/b`, whose state topic (the template with the device for `{topic}`) carries every
 *   field's latest value, `{"c": 21.5, "d": [1, 2], "ts": …}` (`null` and `"status": {"c": "missing"}` for a
 *   failed read), and each Home Assistant entity reads its field with a `value_template`. What arrived in one
 *   turn of the event loop leaves as one message per device, so a device of 20 sensors costs the broker one
 *   message where it cost 20; a sample followed by a newer one of the same topic before its device's message
 *   left is superseded (counted as `coalesced`), as a state is. A topic without `/` stays one message per sample.
 * - Nothing is lost while the broker or the uplink is away: messages go straight to the client while it is
 *   connected and nothing waits; while the window awaiting PUBACK is full, up to MEMORY_QUEUE wait in memory
 *   (moved to the spool, in order, when that passes or the connection goes); otherwise to the disk spool,
 *   which is drained in order, one PUBACK at a time, once connected again (new messages queue behind it, so
 *   order holds). Only a full spool drops (counted).
 * - Availability: a retained `online` at `<prefix>bridge/<node>/status` on every connect, `offline` as the
 *   last will; and for each peer with a telemetry prefix, `<state topic of its prefix>@node/availability`,
 *   `online` while it is on the mesh and `offline` after its EXIT, which its entities' configs also name. Discovery configs are published for each topic when first seen and again after every
 *   (re)connect and every Home Assistant birth message (`<discovery prefix>/status` = online), since a broker
 *   restart can lose retained messages — the Zigbee2MQTT bug the issue recalls.
 * - Commands: Home Assistant's `<state topic>/set` for switchable topics is handed to `onCommand` when its
 *   payload is exactly `0`, `1`, `OFF` or `ON`; anything else is refused with a reason (counted, logged).
 * - Topics come from the mesh, so each is checked against MQTT's rules (config/names.ts) before it is
 *   published or spooled: one a broker would disconnect us for is a counted refusal, never a message. A
 *   message the broker still will not take (it drops the connection on it, or refuses it in an MQTT 5 PUBACK)
 *   is given up after a bounded number of tries (the client's `maxDeliveries`) and skipped in the spool, with
 *   a log line, so it cannot hold back everything behind it.
 */
import { MqttClient, type MqttOptions } from './client.ts';
import { Spool, type SpooledMessage } from '../../runtime/spool.ts';
import { discoveryMessage, type Entity, type EntityKind } from './discovery.ts';
import type { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import type { Batch } from '../../runtime/telemetry/sample.ts';
import { STATUS_NAMES } from '../../drivers/driver.ts';
import { mqttTopicProblem } from '../../runtime/config/names.ts';
import { ProblemLog, type ProblemSink } from '../../runtime/problems.ts';
import { MqttGiveUpError } from './client.ts';

/** Home Assistant entities the bridge announces at most (each is a retained config on the broker). */
export const MAX_ENTITIES = 10_000;

export interface BridgeOptions {
  mqtt: Omit<MqttOptions, 'will'>;
  /** Name of this bridge (availability topic). */
  node: string;
  /** MQTT state topic for a telemetry topic; `{topic}` stands for it. Default 'starling/{topic}'. */
  template?: string;
  discovery?: boolean;
  discoveryPrefix?: string;
  spoolDir: string;
  spoolBytes?: number;
  spoolFsync?: 'always' | 'interval' | 'never';
  /** Telemetry topics that are GPIO outputs (announced as switches). */
  switches?: string[];
  /** Telemetry topics that are GPIO inputs (announced as binary sensors). */
  binarySensors?: string[];
  /** Called for a command from MQTT on a switchable topic. */
  onCommand?: (topic: string, value: 0 | 1) => Promise<void>;
  /** Hears refusals and faults, rate-limited per kind (and the spool's disk trouble). */
  onProblem?: ProblemSink;
  /** 'sample' (default): one message per sample; 'device': one state per device (see the module comment). */
  shape?: 'sample' | 'device';
}

/** Devices whose state the bridge keeps in `shape: 'device'` (the longest unseen goes), and fields per device. */
export const MAX_DEVICE_STATES = 4096;
export const MAX_DEVICE_FIELDS = 1024;
/** Messages the bridge holds in memory while the window of messages awaiting PUBACK is full (then: the spool). */
export const MEMORY_QUEUE = 1024;

/** A device's state (shape 'device'): every field's latest value, and the fields updated since its last message. */
interface DeviceState {
  values: Map<string, unknown>;
  failed: Map<string, string>;
  ts: number;
  fresh: Set<string>;
}

export interface BridgeStats {
  forwarded: number;
  spooled: number;
  commands: number;
  commandErrors: number;
  /** Samples of topics not announced to Home Assistant because MAX_ENTITIES were already (and entities refused). */
  unannounced: number;
  /** Samples (and entities) whose MQTT topic would break MQTT's rules, refused. */
  refusedTopics: number;
  /** Messages the broker would not take, given up (see the client's `maxDeliveries`). */
  givenUp: number;
  /** shape 'device': device states sent (or spooled), the samples they carried, and samples superseded by a
   * newer one of the same topic before their device's message left. */
  deviceStates: number;
  samplesCarried: number;
  coalesced: number;
  /** Messages waiting in memory for room in the window (at most MEMORY_QUEUE). */
  memoryQueued: number;
  spool: ReturnType<Spool['stats']>;
  connected: boolean;
}

export class Bridge {
  readonly client: MqttClient;
  readonly spool: Spool;
  /** Announced entities, one per topic; bounded, since topics come from the whole mesh. */
  private readonly entities = new Map<string, Entity>();
  private draining = false;
  private readonly counters = { forwarded: 0, spooled: 0, commands: 0, commandErrors: 0, unannounced: 0, refusedTopics: 0, givenUp: 0, deviceStates: 0, samplesCarried: 0, coalesced: 0 };
  private readonly problems: ProblemLog;
  /** Peers' telemetry prefixes and whether each is on the mesh: their retained availability (bounded). */
  private readonly devices = new Map<string, boolean>();
  /** Topics whose discovery config the broker would not take (given up): not announced again. */
  private readonly refusedConfigs = new Set<string>();
  private readonly before: string;
  private readonly after: string;
  private readonly discoveryPrefix: string;
  private readonly availability: string;
  private onBatchBound = (b: Batch, from: number) => this.onBatch(b, from);
  private readonly maxInflight: number;
  /** True once this connection's subscriptions are in place: only then is a switch announced, or a command
   * sent by Home Assistant right after the announcement could arrive before we listen for it. */
  private listening = false;
  /** shape 'device': each device's state, most recently updated last (bounded by MAX_DEVICE_STATES). */
  private readonly states = new Map<string, DeviceState>();
  private flushScheduled = false;
  /** Messages waiting for room in the window while nothing is spooled (at most MEMORY_QUEUE; see send). */
  private readonly memory: SpooledMessage[] = [];
  private readonly pumpBound = () => this.pump();
  /** Devices whose state is due, in the order they became due. */
  private readonly due: string[] = [];

  /** Stores its parts; connects nothing. */
  constructor(private readonly o: BridgeOptions, private readonly subscriber: Subscriber) {
    const template = o.template ?? 'starling/{topic}';
    const at = template.indexOf('{topic}');
    if (at < 0) throw new Error(`MQTT topic template '${template}' has no {topic}`);
    this.before = template.slice(0, at);
    this.after = template.slice(at + '{topic}'.length);
    this.discoveryPrefix = o.discoveryPrefix ?? 'homeassistant';
    this.availability = `${this.before}bridge/${o.node}/status`;
    this.client = new MqttClient({ ...o.mqtt, will: { topic: this.availability, payload: 'offline', qos: 1, retain: true } });
    this.spool = new Spool(o.spoolDir, o.spoolBytes, o.spoolFsync, { onProblem: o.onProblem });
    this.problems = new ProblemLog(o.onProblem);
    this.maxInflight = o.mqtt.maxInflight ?? 32;
    for (const t of o.switches ?? []) this.entities.set(t, { topic: t, unit: '', kind: 'switch' });
    for (const t of o.binarySensors ?? []) this.entities.set(t, { topic: t, unit: '', kind: 'binary_sensor' });
  }

  /** Opens the spool, starts the client (it keeps reconnecting), and listens to the subscriber. */
  async start(): Promise<void> {
    this.spool.open();
    this.client.on('connect', () => void this.onConnect());
    this.client.on('close', () => {
      this.listening = false;
      this.spillMemory(); // what waited in memory waits on disk while the broker is away
    });
    this.client.on('message', (topic, payload) => void this.onMessage(topic, payload));
    this.subscriber.on('batch', this.onBatchBound);
    void this.client.start();
  }

  /** Stops taking samples, waits (up to `ms`) for the broker to acknowledge what is in flight, then closes. */
  async stop(ms = 2000): Promise<void> {
    this.subscriber.off('batch', this.onBatchBound);
    this.flushStates(); // due device states leave (or are spooled) before the wait for PUBACKs
    const end = Date.now() + ms;
    while (this.client.isConnected && (this.client.unacknowledged > 0 || this.draining || this.memory.length > 0) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    this.spillMemory(); // not sent in time: kept on disk for the next start
    // A clean stop sends DISCONNECT, which suppresses the last will: say offline ourselves.
    if (this.client.isConnected) {
      await Promise.race([this.client.publish(this.availability, 'offline', { qos: 1, retain: true }).catch(() => {}), new Promise((r) => setTimeout(r, Math.max(0, end - Date.now())))]);
    }
    await this.client.stop();
    this.spool.close();
  }

  stats(): BridgeStats {
    return { ...this.counters, memoryQueued: this.memory.length, spool: this.spool.stats(), connected: this.client.isConnected };
  }

  /** False (counted, logged) when the MQTT topic of `topic` would break MQTT's rules. */
  private acceptable(topic: string): boolean {
    const problem = mqttTopicProblem(this.stateTopic(topic));
    if (!problem) return true;
    this.counters.refusedTopics++;
    this.problems.note('topic', `telemetry topic ${JSON.stringify(topic.slice(0, 80))} not bridged: its MQTT ${problem}`);
    return false;
  }

  private gaveUp(e: Error): void {
    this.counters.givenUp++;
    this.problems.note('given up', `MQTT: ${e.message}`);
  }

  private async onConnect(): Promise<void> {
    const c = this.client;
    try {
      await c.subscribe(`${this.discoveryPrefix}/status`, 1);
      // Commands: <state topic>/set, for telemetry topics of 1 to 5 levels. (Not `<start>#`: that would bring
      // every state we publish back to us.)
      for (let depth = 1; depth <= 5; depth++) await c.subscribe(`${this.before}${Array(depth).fill('+').join('/')}${this.after}/set`, 1);
      this.listening = true;
      c.publish(this.availability, 'online', { qos: 1, retain: true }).catch((e: Error) => {
        if (e instanceof MqttGiveUpError) this.gaveUp(e);
      });
      for (const prefix of this.devices.keys()) this.publishAvailability(prefix);
      if (this.o.discovery !== false) for (const e of this.entities.values()) this.announce(e);
    } catch {
      // the connection went again; the next connect repeats this
    }
    void this.drain();
  }

  private announce(e: Entity): void {
    if (this.refusedConfigs.has(e.topic)) return;
    const device = this.deviceOf(e.topic);
    const field = this.o.shape === 'device' ? splitField(e.topic) : undefined;
    const [topic, payload] = discoveryMessage(e, {
      stateTopic: this.stateTopic(field ? field[0] : e.topic), discoveryPrefix: this.discoveryPrefix, availabilityTopic: this.availability,
      ...(field ? { field: field[1], commandTopic: `${this.stateTopic(e.topic)}/set` } : {}),
      ...(device !== undefined ? { deviceAvailability: this.availabilityTopic(device) } : {}),
    });
    if (this.client.isConnected && this.listening) {
      this.client.publish(topic, payload, { qos: 1, retain: true }).catch((err: Error) => {
        if (!(err instanceof MqttGiveUpError)) return;
        // The broker will not take this config: never announce it again, or every reconnect would repeat the fault.
        this.refusedConfigs.add(e.topic);
        this.gaveUp(err);
      });
    }
  }

  /** The retained availability topic of a peer's telemetry prefix: `<state topic of prefix>@node/availability`. */
  availabilityTopic(prefix: string): string {
    return this.stateTopic(`${prefix}@node/availability`);
  }

  /** The prefix of the peer a topic belongs to (the longest that matches), if any. */
  private deviceOf(topic: string): string | undefined {
    let best: string | undefined;
    for (const p of this.devices.keys()) if (topic.startsWith(p) && (best === undefined || p.length > best.length)) best = p;
    return best;
  }

  /**
   * A peer with telemetry prefix `prefix` entered (`online`) or left the mesh: its retained availability says
   * so, and its entities' discovery configs name it (Home Assistant then shows them unavailable while it is
   * gone). An empty prefix cannot be told apart from others: ignored. At most 4,096 prefixes (the oldest go).
   */
  setDeviceAvailability(prefix: string, online: boolean): void {
    if (!prefix || this.devices.get(prefix) === online) return;
    if (!this.acceptable(`${prefix}@node/availability`)) return;
    if (!this.devices.has(prefix) && this.devices.size >= 4096) this.devices.delete(this.devices.keys().next().value as string);
    this.devices.set(prefix, online);
    this.publishAvailability(prefix);
  }

  private publishAvailability(prefix: string): void {
    if (!this.client.isConnected) return; // sent on the next connect
    this.client.publish(this.availabilityTopic(prefix), this.devices.get(prefix) ? 'online' : 'offline', { qos: 1, retain: true }).catch((e: Error) => {
      if (e instanceof MqttGiveUpError) this.gaveUp(e);
    });
  }

  /** Announces a telemetry topic as a switch or binary sensor (a GPIO line, here or on a peer). */
  addEntity(topic: string, kind: EntityKind): void {
    if (this.entities.get(topic)?.kind === kind) return;
    if (!this.acceptable(topic)) return;
    if (!this.entities.has(topic) && this.entities.size >= MAX_ENTITIES) {
      this.counters.unannounced++;
      return;
    }
    const e = { topic, unit: '', kind };
    this.entities.set(topic, e);
    if (this.o.discovery !== false) this.announce(e);
  }

  /** The MQTT topic of a telemetry topic's state. */
  stateTopic(topic: string): string {
    return this.before + topic + this.after;
  }

  /** GPIO lines' states are retained (a new subscriber learns whether the pump is on); readings are not. */
  private retained(topic: string): boolean {
    return (this.entities.get(topic)?.kind ?? 'sensor') !== 'sensor';
  }

  private onBatch(b: Batch, from: number): void {
    if (!this.acceptable(b.topic)) return;
    if (this.o.discovery !== false && !this.entities.has(b.topic)) {
      if (this.entities.size >= MAX_ENTITIES) {
        // Past the bound a new topic is still forwarded, only not announced (counted).
        this.counters.unannounced++;
      } else {
        const e: Entity = { topic: b.topic, unit: b.unit, kind: 'sensor' };
        this.entities.set(b.topic, e);
        this.announce(e);
      }
    }
    if (this.o.shape === 'device' && this.toState(b, from)) return;
    const retain = this.retained(b.topic);
    const topic = this.stateTopic(b.topic);
    // The JSON is written out rather than JSON.stringify'd object by object: the same text, for every sample.
    const tail = `${b.unit ? `,"unit":${JSON.stringify(b.unit)}` : ''},"ts":`;
    const publisher = `,"publisher":"${b.publisher}"}`;
    for (let i = from; i < b.count; i++) {
      const status = b.status(i);
      const head = status !== 0 ? `{"status":${JSON.stringify(STATUS_NAMES[status] ?? String(status))}`
        : b.arity === 1 ? `{"value":${jsonNumber(b.value(i))}`
        : `{"value":[${Array.from({ length: b.arity }, (_, k) => jsonNumber(b.value(i, k))).join(',')}]`;
      this.send({ topic, payload: Buffer.from(`${head}${tail}${jsonNumber(b.ts(i))},"seq":${b.seq(i)}${publisher}`), qos: 1, retain });
    }
  }

  /**
   * shape 'device': the batch's newest sample becomes its field's value in its device's state, and the state is
   * due to leave at the end of this turn of the event loop. False when the topic is sent per sample instead
   * (no `/` in it, or its device already has MAX_DEVICE_FIELDS other fields).
   */
  private toState(b: Batch, from: number): boolean {
    const split = splitField(b.topic);
    if (!split) return false;
    const [device, field] = split;
    let st = this.states.get(device);
    if (st) this.states.delete(device); // re-inserted below: the map's order is least recently updated first
    else {
      if (this.states.size >= MAX_DEVICE_STATES) {
        const [oldest, old] = this.states.entries().next().value as [string, DeviceState];
        this.sendState(oldest, old); // a due state leaves before it is forgotten (no-op when not due)
        this.states.delete(oldest);
      }
      st = { values: new Map(), failed: new Map(), ts: 0, fresh: new Set() };
    }
    this.states.set(device, st);
    if (!st.values.has(field) && st.values.size >= MAX_DEVICE_FIELDS) return false;
    const i = b.count - 1;
    const status = b.status(i);
    if (status !== 0) {
      st.values.set(field, null);
      st.failed.set(field, STATUS_NAMES[status] ?? String(status));
    } else {
      st.values.set(field, b.arity === 1 ? b.value(i) : Array.from({ length: b.arity }, (_, k) => b.value(i, k)));
      st.failed.delete(field);
    }
    st.ts = Math.max(st.ts, b.ts(i));
    // Every sample before the newest is superseded, and so is one a due state already held for this field.
    this.counters.coalesced += i - from + (st.fresh.has(field) ? 1 : 0);
    if (st.fresh.size === 0) this.due.push(device);
    st.fresh.add(field);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flushStates());
    }
    return true;
  }

  private flushStates(): void {
    this.flushScheduled = false;
    for (const device of this.due.splice(0)) {
      const st = this.states.get(device);
      if (st) this.sendState(device, st);
    }
  }

  /** Sends a due device state: the whole state (all its fields), retained when it holds a GPIO line. */
  private sendState(device: string, st: DeviceState): void {
    if (st.fresh.size === 0) return;
    this.counters.samplesCarried += st.fresh.size;
    st.fresh.clear();
    const state: Record<string, unknown> = {};
    let retain = false;
    for (const [field, v] of st.values) {
      state[field] = v;
      if (!retain && this.retained(`${device}/${field}`)) retain = true;
    }
    if (st.failed.size) state.status = Object.fromEntries(st.failed);
    state.ts = st.ts;
    this.counters.deviceStates++;
    this.send({ topic: this.stateTopic(device), payload: Buffer.from(JSON.stringify(state)), qos: 1, retain });
  }

  /**
   * Straight to the client when connected and nothing waits; behind a short queue in memory while the window
   * of `maxInflight` messages awaiting PUBACK is full (a burst costs no disk); else behind what waits, on disk.
   * The memory queue only ever holds messages older than any in the spool: when it would pass
   * MEMORY_QUEUE, or the connection goes, what it holds moves to the spool first, in order.
   */
  private send(m: SpooledMessage): void {
    if (this.client.isConnected && this.spool.length === 0 && !this.draining) {
      if (this.memory.length === 0 && this.client.unacknowledged < this.maxInflight) return this.publishNow(m);
      if (this.memory.length < MEMORY_QUEUE) {
        this.memory.push(m);
        return;
      }
    }
    this.spillMemory();
    this.spool.append(m);
    this.counters.spooled++;
    if (this.client.isConnected) void this.drain();
  }

  private publishNow(m: SpooledMessage): void {
    this.counters.forwarded++;
    this.client.publish(m.topic, m.payload, { qos: m.qos, retain: m.retain }).then(this.pumpBound, (e: Error) => {
      if (e instanceof MqttGiveUpError) this.gaveUp(e);
      this.pump();
    });
  }

  /** Hands the memory queue to the client while the window has room. */
  private pump(): void {
    while (this.memory.length > 0 && this.client.isConnected && this.client.unacknowledged < this.maxInflight) this.publishNow(this.memory.shift()!);
  }

  /** Moves the memory queue to the spool (it is empty then: see send), in order. */
  private spillMemory(): void {
    for (const m of this.memory.splice(0)) {
      this.spool.append(m);
      this.counters.spooled++;
    }
  }

  /**
   * Sends the spool in order with up to `maxInflight` messages awaiting PUBACK at once, and removes each from
   * the spool only once its PUBACK came (in order). A connection lost meanwhile just delays the PUBACKs: the
   * client re-sends what is in flight when it reconnects.
   */
  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    // Each publish settles to undefined (PUBACK) or its error, so none can reject unawaited.
    const window: Promise<Error | undefined>[] = [];
    try {
      while (this.client.isConnected || window.length > 0) {
        for (let m = this.spool.peek(window.length); m && this.client.isConnected && window.length < this.maxInflight; m = this.spool.peek(window.length)) {
          window.push(this.client.publish(m.topic, m.payload, { qos: m.qos, retain: m.retain }).then(() => undefined, (e: Error) => e));
        }
        if (window.length === 0) break;
        const error = await window.shift();
        if (error instanceof MqttGiveUpError) {
          // The broker will not take it: skip it in the spool (counted there too) and go on with the rest.
          this.spool.ack(true);
          this.gaveUp(error);
          continue;
        }
        if (error) break; // stopped; what is left stays spooled
        this.spool.ack();
        this.counters.forwarded++;
      }
    } finally {
      this.draining = false;
    }
  }

  private async onMessage(topic: string, payload: Buffer): Promise<void> {
    if (topic === `${this.discoveryPrefix}/status`) {
      if (payload.toString() === 'online' && this.o.discovery !== false) for (const e of this.entities.values()) this.announce(e);
      return;
    }
    const suffix = `${this.after}/set`;
    if (!topic.startsWith(this.before) || !topic.endsWith(suffix) || topic.length <= this.before.length + suffix.length) return;
    const target = topic.slice(this.before.length, -suffix.length);
    const entity = this.entities.get(target);
    this.counters.commands++;
    const value = commandValue(payload);
    const refused = entity?.kind !== 'switch' || !this.o.onCommand ? `${JSON.stringify(target.slice(0, 80))} is not a switch`
      : value === undefined ? `payload ${JSON.stringify(payload.subarray(0, 40).toString())} is not 0, 1, OFF or ON` : undefined;
    if (refused !== undefined || value === undefined) {
      this.counters.commandErrors++;
      this.problems.note('command', `MQTT command on ${topic.slice(0, 120)} refused: ${refused}`);
      return;
    }
    try {
      await this.o.onCommand!(target, value);
    } catch (e) {
      this.counters.commandErrors++;
      this.problems.note(`command ${target}`, `MQTT command on ${topic.slice(0, 120)} failed: ${(e as Error).message}`);
    }
  }
}

/** A number as JSON.stringify writes it (non-finite: null). */
const jsonNumber = (v: number): string => (Number.isFinite(v) ? String(v) : 'null');

/** A topic `a/b/c` as device `a/b` and field `c`; undefined for a topic without `/` (or ending in one). */
export function splitField(topic: string): [string, string] | undefined {
  const at = topic.lastIndexOf('/');
  return at <= 0 || at === topic.length - 1 ? undefined : [topic.slice(0, at), topic.slice(at + 1)];
}

/** A switch command's payload: exactly `0`, `1`, `OFF` or `ON` (what Home Assistant sends); anything else undefined. */
export function commandValue(payload: Buffer): 0 | 1 | undefined {
  switch (payload.toString('utf8')) {
    case '0': case 'OFF': return 0;
    case '1': case 'ON': return 1;
    default: return undefined;
  }
}
