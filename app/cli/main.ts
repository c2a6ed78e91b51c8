/**
 * `starling` — the one CLI. `starling COMMAND --help` documents each command; errors print one line and exit
 * non-zero (2 for a usage mistake, 1 for a failure at run time).
 */
import { CliError, type Command } from './command.ts';
import pkg from '../../package.json' with { type: 'json' };
import { launchRelease } from '../launch.ts';

/**
 * Every command: its line in the list, and its module, loaded only when that command runs, so start-up
 * evaluates one command's code and what it imports (in the bundle too: esbuild keeps a module reached only
 * through import() unevaluated until then), not every command's.
 */
const COMMANDS: Record<string, { summary: string; load(): Promise<Command> }> = {
  demo: { summary: 'three simulated devices and a hub bridging them to an embedded MQTT broker, live (the default job)', load: async () => (await import('./demo.ts')).demo },
  run: { summary: 'run the supervisor: the device and the configured services, until stopped', load: async () => (await import('./device.ts')).run },
  status: { summary: 'show the running supervisor\'s services (over D-Bus)', load: async () => (await import('./device.ts')).status },
  restart: { summary: 'restart a service of the running supervisor (root or group starling)', load: async () => (await import('./device.ts')).restart },
  logs: { summary: 'print the running supervisor\'s recent logs (from RAM, over D-Bus)', load: async () => (await import('./device.ts')).logs },
  check: { summary: 'validate a configuration file without running anything', load: async () => (await import('./device.ts')).check },
  sensors: { summary: 'read every configured sensor once and print the readings', load: async () => (await import('./device.ts')).sensors },
  gpio: { summary: 'read or set a configured GPIO line on this device', load: async () => (await import('./device.ts')).gpio },
  peers: { summary: 'join the mesh, wait, and list the peers found', load: async () => (await import('./peers.ts')).peers },
  listen: { summary: 'join groups and print mesh events, one per line', load: async () => (await import('./listen.ts')).listen },
  shout: { summary: 'send a text to every peer in a group', load: async () => (await import('./send.ts')).shout },
  whisper: { summary: 'send a text to one peer, by name or UUID', load: async () => (await import('./send.ts')).whisper },
  tail: { summary: 'print telemetry samples from every publisher on the mesh', load: async () => (await import('./telemetry.ts')).tail },
  publish: { summary: 'publish a telemetry sample (or a series) on the mesh', load: async () => (await import('./telemetry.ts')).publish },
  keygen: { summary: 'create this node\'s CURVE key pair (zcert files)', load: async () => (await import('./security.ts')).keygen },
  trust: { summary: 'manage the keys this node trusts: add, list, remove, pending, accept', load: async () => (await import('./security.ts')).trust },
  send: { summary: 'send a file to a peer or a group (they fetch it in checked chunks)', load: async () => (await import('./files.ts')).send },
  receive: { summary: 'a mesh node that accepts files into a directory', load: async () => (await import('./files.ts')).receive },
  release: { summary: 'make release keys and sign releases (keygen, sign)', load: async () => (await import('./files.ts')).release },
  update: { summary: 'push a signed release to devices, and follow it (push, status, cancel)', load: async () => (await import('./files.ts')).update },
  simulate: { summary: 'a mesh of N simulated nodes in network namespaces, with loss and flapping links, measured (root)', load: async () => (await import('./simulate.ts')).simulate },
  version: { summary: 'print the version, the Node it runs on and the native addons it loaded', load: async () => (await import('./version.ts')).version },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  return [
    'Usage: starling COMMAND [options]   (starling COMMAND --help for its options)',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V') {
    process.stdout.write(`starling ${pkg.version}\n`);
    return 0;
  }
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name ? 0 : 2;
  }
  const entry = COMMANDS[name];
  if (!entry) throw new CliError(`unknown command '${name}'; commands: ${Object.keys(COMMANDS).join(', ')}`);
  const command = await entry.load();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(command.help + '\n');
    return 0;
  }
  return command.run(rest);
}

// `run` hands over to an installed release when there is one (app/launch.ts: the guard); that release's CLI
// then runs the command.
if (!launchRelease(process.argv.slice(2))) main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const err = e as Error;
    process.stderr.write(`starling: ${err.message}\n`);
    if (process.env.STARLING_DEBUG) process.stderr.write(`${err.stack}\n`);
    process.exitCode = e instanceof CliError ? e.code : 1;
  },
);
