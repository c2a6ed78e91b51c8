// `starling version`: what this build is and what it runs on — which Node, whether it is the single
// executable, and which native addons were loaded (zeromq: the system-libzmq build with epgm, or the prebuilt one).
import { capability, version as libzmq } from 'zeromq';
import { out, parse, type Command } from './common.ts';
import { nativeReport } from '../../runtime/native.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../runtime/config/load.ts';
import { fingerprint, PUBLIC_FILE, readCertificate } from '../../runtime/security/identity.ts';

/** This node's public key, from the configuration's identity directory (secure mode), when there is one. */
function identity(file: string | undefined): { publicKey: string; fingerprint: string; dir: string } | undefined {
  const config = file ?? process.env.STARLING_CONFIG ?? '/etc/starling/starling.yaml';
  try {
    if (!existsSync(config)) return undefined;
    const c = loadConfig(config);
    const path = join(c.security.identity, PUBLIC_FILE);
    if (c.security.mode !== 'curve' || !existsSync(path)) return undefined;
    const { publicKey } = readCertificate(path);
    return { publicKey, fingerprint: fingerprint(publicKey), dir: c.security.identity };
  } catch {
    return undefined;
  }
}
import pkg from '../../package.json' with { type: 'json' };

function isSea(): boolean {
  try {
    return (process.getBuiltinModule?.('node:sea') as { isSea(): boolean } | undefined)?.isSea() ?? false;
  } catch {
    return false;
  }
}

/** The single executable's compiled code for this start (app/sea-main.ts): own, base, none; ", refused" when V8 would not take it. */
function codeCache(): string | undefined {
  return (globalThis as Record<symbol, unknown>)[Symbol.for('starling.codeCache')] as string | undefined;
}

export const version: Command = {
  help: `Usage: starling version [--config FILE] [--json]

Prints Starling's version, the Node.js version and architecture, whether this is the
single executable, the libzmq version and its transports (epgm needs the system-libzmq
build of the zeromq addon), the Node/V8 flags it runs with, and where each native addon
was loaded from, which compiled code the executable started with (its own cache
for this command, the build's, or none), and in secure mode this node's public key and fingerprint (from the
configuration's security.identity).`,
  async run(argv) {
    const { values } = parse(argv, { json: { type: 'boolean' }, config: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, false);
    const info = {
      version: pkg.version, node: process.versions.node, arch: process.arch, executable: isSea(), codeCache: codeCache(), execArgv: process.execArgv,
      libzmq, pgm: Boolean(capability.pgm), curve: Boolean(capability.curve), native: [...nativeReport()], identity: identity(values.config),
    };
    if (values.json) out(JSON.stringify(info));
    else {
      out(`starling ${info.version} on Node ${info.node} (${info.arch}${info.executable ? ', single executable' : ''})${info.execArgv.length ? ` with ${info.execArgv.join(' ')}` : ''}`);
      if (info.codeCache) out(`compiled code: ${info.codeCache}`);
      out(`libzmq ${libzmq}: epgm ${info.pgm ? 'yes' : 'no'}, CURVE ${info.curve ? 'yes' : 'no'}`);
      for (const line of info.native) out(line);
      if (info.identity) out(`identity ${info.identity.publicKey} (fingerprint ${info.identity.fingerprint}) in ${info.identity.dir}`);
    }
    return 0;
  },
};
