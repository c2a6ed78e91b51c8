/**
 * The embedded broker: aedes (MQTT 3.1.1) on a TCP port, for a hub or a demo that has no broker of its own.
 * A supervised service; the bridge connects to it like to any broker. aedes is loaded only when this runs.
 */
import type { Server } from 'node:net';
import { ServiceBase } from '../../runtime/supervisor/service.ts';

export class EmbeddedBroker extends ServiceBase {
  readonly name = 'broker';
  private server: Server | undefined;
  private readonly sockets = new Set<import('node:net').Socket>();
  private broker: { handle: (socket: unknown) => void; close(cb?: () => void): void } | undefined;

  /** `listen` is `IPv4:PORT`. Stores it; listens on nothing yet. */
  constructor(readonly listen: string) {
    super();
  }


  get url(): string {
    return `mqtt://${this.listen}`;
  }

  async start(): Promise<void> {
    this.setState('starting');
    const [{ Aedes }, { writeToStream }] = (await Promise.all([import('aedes'), import('mqtt-packet')])) as unknown as
      [{ Aedes: { createBroker(): Promise<EmbeddedBroker['broker']> } }, { writeToStream: { cacheNumbers: boolean } }];
    // mqtt-packet, by default, makes a Buffer for each of the 65,536 two-byte numbers on the first packet it
    // writes: 6.9 MB of heap (bench/soak.ts's device, a heap snapshot) to save a 2-byte allocation per packet
    // id or length. MQTT.js turns it off the same way.
    writeToStream.cacheNumbers = false;
    const broker = (await Aedes.createBroker())!;
    const server = (process.getBuiltinModule('node:net') as typeof import('node:net')).createServer((socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      broker.handle(socket);
    });
    const [host, port] = [this.listen.slice(0, this.listen.lastIndexOf(':')), Number(this.listen.slice(this.listen.lastIndexOf(':') + 1))];
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => resolve());
      });
    } catch (e) {
      broker.close();
      this.setState('failed');
      throw new Error(`embedded MQTT broker cannot listen on ${this.listen}: ${(e as Error).message}`);
    }
    this.broker = broker;
    this.server = server;
    this.setState('running');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.setState('stopping');
    // Close the clients rather than wait for them: net.Server.close() waits for every connection to end, and
    // a connected client would hold the shutdown past systemd's stop timeout.
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await closed;
    await new Promise<void>((r) => (this.broker ? this.broker.close(() => r()) : r()));
    this.server = undefined;
    this.broker = undefined;
    this.setState('stopped');
  }

}
