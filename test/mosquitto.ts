// A real Mosquitto broker for tests, on a free loopback port, with persistence in a temp dir so sessions
// survive a restart. Debian's mosquitto (image/setup.sh installs it).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** A test CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl in `dir`. */
export function makeCertificates(dir: string): { ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string } {
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=Starling test CA', '-keyout', f('ca.key'), '-out', f('ca.pem'));
  writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1\n');
  for (const who of ['server', 'client']) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=starling-${who}`, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`));
    ssl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-out', f(`${who}.pem`),
      ...(who === 'server' ? ['-extfile', f('server.ext')] : []));
  }
  return { ca: f('ca.pem'), serverCert: f('server.pem'), serverKey: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

export class Mosquitto {
  readonly dir = mkdtempSync(join(tmpdir(), 'starling-mosquitto-'));
  private proc: ChildProcess | undefined;
  port = 0;

  /**
   * With `tls`, the listener speaks TLS and requires a client certificate signed by the test CA; with `users`,
   * anonymous clients are refused and these user names and passwords are the only ones accepted.
   */
  constructor(private readonly tls?: ReturnType<typeof makeCertificates>, private readonly users?: Record<string, string>, private readonly extra: string[] = []) {}

  /** Where the broker logs connections and disconnections (`connection_messages`). */
  get logFile(): string {
    return join(this.dir, 'mosquitto.log');
  }

  /** The broker's log so far ('' before it wrote any). */
  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  get url(): string {
    return `${this.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (!this.port) this.port = await freePort();
    writeFileSync(join(this.dir, 'mosquitto.conf'), [
      `listener ${this.port} 127.0.0.1`, `allow_anonymous ${this.users ? 'false' : 'true'}`, 'persistence true', `persistence_location ${this.dir}/`,
      'autosave_interval 1', `log_dest file ${this.logFile}`, 'log_type error', 'log_type warning', 'log_type notice', 'connection_messages true',
      // Keep every QoS 1 message for an offline persistent session (the default drops past 1,000).
      'max_queued_messages 0',
      // Started as root, mosquitto would switch to the user mosquitto, who cannot write this temp dir.
      `user ${userInfo().username}`,
      ...(this.users ? [`password_file ${this.passwordFile()}`] : []),
      ...this.extra,
      ...(this.tls ? [`cafile ${this.tls.ca}`, `certfile ${this.tls.serverCert}`, `keyfile ${this.tls.serverKey}`, 'require_certificate true'] : []),
    ].join('\n') + '\n');
    this.proc = spawn('mosquitto', ['-c', join(this.dir, 'mosquitto.conf')], { stdio: 'ignore' });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const ok = await new Promise<boolean>((r) => {
        const s = connect(this.port, '127.0.0.1', () => (s.end(), r(true)));
        s.on('error', () => r(false));
      });
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`mosquitto did not listen on ${this.port} within 10 s (is it installed? bash image/setup.sh)`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private passwordFile(): string {
    const file = join(this.dir, 'passwords');
    writeFileSync(file, '');
    for (const [user, password] of Object.entries(this.users ?? {})) execFileSync('mosquitto_passwd', ['-b', file, user, password], { stdio: 'ignore' });
    return file;
  }

  /** Stops the broker (SIGTERM: it saves its persistence file). */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
