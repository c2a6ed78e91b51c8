// The MQTT client against a real Mosquitto: QoS 0/1 round trips on MQTT 3.1.1 and 5, the last will on a
// broken connection, and QoS 1 messages kept across a broker restart and re-sent from the persistent session.
import { afterEach, describe, expect, it } from 'vitest';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { readFileSync } from 'node:fs';
import { Mosquitto, makeCertificates } from '../mosquitto.ts';
import { until } from '../helpers.ts';

const brokers: Mosquitto[] = [];
const clients: MqttClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.stop();
  for (const b of brokers.splice(0)) await b.destroy();
});

async function broker(): Promise<Mosquitto> {
  const b = new Mosquitto();
  brokers.push(b);
  await b.start();
  return b;
}

function client(url: string, over: Partial<ConstructorParameters<typeof MqttClient>[0]> = {}): MqttClient {
  const c = new MqttClient({ url, clientId: `t-${Math.random().toString(16).slice(2, 10)}`, reconnect: { min: 100, max: 500 }, ...over });
  clients.push(c);
  return c;
}


describe('MQTT client', () => {
  it.each([4, 5] as const)('MQTT %s: subscribe, publish QoS 0 and 1, receive in order', async (protocolVersion) => {
    const b = await broker();
    const sub = client(b.url, { protocolVersion });
    const pub = client(b.url, { protocolVersion });
    await sub.start();
    await pub.start();
    expect(await sub.subscribe('room/#', 1)).toEqual([1]);
    const got: [string, string][] = [];
    sub.on('message', (t, p) => got.push([t, p.toString()]));
    await pub.publish('room/temp', '21.5', { qos: 1 });
    await pub.publish('room/hum', '40', { qos: 0 });
    for (let i = 0; i < 100; i++) void pub.publish('room/n', String(i), { qos: 1 });
    await until(() => got.length === 102, 5000, '102 messages');
    expect(got.slice(0, 2)).toEqual([['room/temp', '21.5'], ['room/hum', '40']]);
    expect(got.slice(2).map(([, p]) => Number(p))).toEqual([...Array(100).keys()]);
    await until(() => pub.unacknowledged === 0, 5000, 'every PUBACK');
  });

  it('the last will is published when the connection breaks without DISCONNECT', async () => {
    const b = await broker();
    const watcher = client(b.url);
    await watcher.start();
    await watcher.subscribe('dev/status', 1);
    const got: string[] = [];
    watcher.on('message', (_t, p) => got.push(p.toString()));
    const dev = client(b.url, { will: { topic: 'dev/status', payload: 'offline', qos: 1, retain: true }, keepalive: 1 });
    await dev.start();
    await dev.publish('dev/status', 'online', { qos: 1, retain: true });
    await until(() => got.includes('online'), 5000, 'online');
    // Break the TCP connection under the client, as a dead link would.
    (dev as unknown as { socket: { destroy(): void } }).socket.destroy();
    await until(() => got.includes('offline'), 5000, 'the last will');
  });

  it('QoS 1 messages published while the broker is down arrive after it comes back (persistent session)', async () => {
    const b = await broker();
    const sub = client(b.url, { clientId: 'sub-persistent' });
    await sub.start();
    await sub.subscribe('q/#', 1);
    const got: string[] = [];
    sub.on('message', (_t, p) => got.push(p.toString()));
    const pub = client(b.url, { clientId: 'pub-persistent' });
    await pub.start();
    await pub.publish('q/x', 'before', { qos: 1 });
    await until(() => got.length === 1, 5000, 'the first message');
    await b.stop();
    await until(() => !pub.isConnected, 5000, 'the disconnect');
    const pending = [1, 2, 3].map((i) => pub.publish('q/x', `during ${i}`, { qos: 1 }));
    expect(pub.unacknowledged).toBe(3);
    const sessions: boolean[] = [];
    sub.on('connect', ({ sessionPresent }) => sessions.push(sessionPresent));
    await b.start();
    await Promise.all(pending);
    await until(() => got.length === 4, 10_000, `the three messages sent while down (got ${JSON.stringify(got)}, sessions ${JSON.stringify(sessions)})`);
    expect(got).toEqual(['before', 'during 1', 'during 2', 'during 3']);
  }, 30_000);

  it('reports a refused connection and keeps retrying', async () => {
    const b = await broker();
    const port = b.port;
    await b.stop();
    const c = client(`mqtt://127.0.0.1:${port}`);
    void c.start();
    await until(() => c.failures >= 2, 5000, 'two failed attempts');
    expect(c.lastError).toMatch(/ECONNREFUSED|connection closed/);
    await b.start();
    await until(() => c.isConnected, 5000, 'the connection');
  });

  it('TLS with a test CA and client certificates: a round trip; no client certificate or a foreign CA is refused', async () => {
    const plain = new Mosquitto();
    brokers.push(plain);
    const certs = makeCertificates(plain.dir);
    const b = new Mosquitto(certs);
    brokers.push(b);
    await b.start();
    const tls = { ca: readFileSync(certs.ca), cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) };
    const c = client(b.url, { tls });
    await c.start();
    await c.subscribe('secure/#', 1);
    const got: string[] = [];
    c.on('message', (_t, p) => got.push(p.toString()));
    await c.publish('secure/x', 'over TLS', { qos: 1 });
    await until(() => got.length === 1, 5000, 'the TLS round trip');
    expect(got).toEqual(['over TLS']);
    const noCert = client(b.url, { tls: { ca: tls.ca } });
    void noCert.start();
    await until(() => noCert.failures >= 1, 5000, 'a refusal without a client certificate');
    const wrongCa = client(b.url, { tls: { ...tls, ca: readFileSync(certs.clientCert) } });
    void wrongCa.start();
    await until(() => wrongCa.failures >= 1, 5000, 'a refusal of a server signed by another CA');
    expect(wrongCa.lastError).toMatch(/certificate/i);
    expect(noCert.isConnected || wrongCa.isConnected).toBe(false);
  }, 30_000);

  it('user name and password: accepted when right, refused with the broker\'s reason when wrong', async () => {
    const b = new Mosquitto(undefined, { sensor: 's3cret' });
    brokers.push(b);
    await b.start();
    const good = client(b.url, { username: 'sensor', password: 's3cret' });
    await good.start();
    expect(good.isConnected).toBe(true);
    const bad = client(b.url, { username: 'sensor', password: 'wrong' });
    void bad.start();
    await until(() => bad.failures >= 1, 5000, 'the refusal');
    expect(bad.lastError).toMatch(/broker refused the connection: (bad user name or password|not authorized)/);
  });
});
