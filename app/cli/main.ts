/**
 * `starling` — the one CLI. `starling COMMAND --help` documents each command; errors print one line and exit
 * non-zero (2 for a usage mistake, 1 for a failure at run time).
 */
import { CliError, type Command } from './common.ts';
import { demo } from './demo.ts';
import { peers } from './peers.ts';
import { listen } from './listen.ts';
import { shout, whisper } from './send.ts';
import { publish, tail } from './telemetry.ts';
import { check, gpio, logs, restart, run, sensors, status } from './device.ts';
import { version } from './version.ts';
import { simulate } from './simulate.ts';
import { keygen, trust } from './security.ts';
import { receive, release, send, update } from './files.ts';
import pkg from '../../package.json' with { type: 'json' };
import { launchRelease } from '../launch.ts';

const COMMANDS: Record<string, Command> = { demo, run, status, restart, logs, check, sensors, gpio, peers, listen, shout, whisper, tail, publish, keygen, trust, send, receive, release, update, simulate, version };

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
  const command = COMMANDS[name];
  if (!command) throw new CliError(`unknown command '${name}'; commands: ${Object.keys(COMMANDS).join(', ')}`);
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
