// `starling version`: what this build is and what it runs on — which Node, whether it is the single
// executable, and which native addons were loaded (zeromq: the system-libzmq build with epgm, or the prebuilt one).
import { capability, version as libzmq } from 'zeromq';
import { out, parse, type Command } from './common.ts';
import { nativeReport } from '../../runtime/native.ts';
import pkg from '../../package.json' with { type: 'json' };

function isSea(): boolean {
  try {
    return (process.getBuiltinModule?.('node:sea') as { isSea(): boolean } | undefined)?.isSea() ?? false;
  } catch {
    return false;
  }
}

export const version: Command = {
  summary: 'print the version, the Node it runs on and the native addons it loaded',
  help: `Usage: starling version [--json]

Prints Starling's version, the Node.js version and architecture, whether this is the
single executable, the libzmq version and its transports (epgm needs the system-libzmq
build of the zeromq addon), the Node/V8 flags it runs with, and where each native addon
was loaded from.`,
  async run(argv) {
    const { values } = parse(argv, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, false);
    const info = {
      version: pkg.version, node: process.versions.node, arch: process.arch, executable: isSea(), execArgv: process.execArgv,
      libzmq, pgm: Boolean(capability.pgm), curve: Boolean(capability.curve), native: [...nativeReport()],
    };
    if (values.json) out(JSON.stringify(info));
    else {
      out(`starling ${info.version} on Node ${info.node} (${info.arch}${info.executable ? ', single executable' : ''})${info.execArgv.length ? ` with ${info.execArgv.join(' ')}` : ''}`);
      out(`libzmq ${libzmq}: epgm ${info.pgm ? 'yes' : 'no'}, CURVE ${info.curve ? 'yes' : 'no'}`);
      for (const line of info.native) out(line);
    }
    return 0;
  },
};
