// `starling keygen` and `starling trust`: this node's CURVE identity and the keys it lets in.
import { existsSync } from 'node:fs';
import { CliError, out, parse, type Command } from './common.ts';
import { ConfigError, loadConfig } from '../../runtime/config/load.ts';
import { createIdentity, CertificateError, DEFAULT_IDENTITY_DIR, readCertificate } from '../../runtime/security/identity.ts';
import { DEFAULT_TRUSTED_DIR, parseRoles, TrustError, TrustStore, type Role } from '../../runtime/security/trust.ts';
import { pendingFile } from '../../runtime/security/context.ts';
import { isZ85Key } from '../../runtime/security/z85.ts';

const DEFAULT_CONFIG = '/etc/starling/starling.yaml';

/** The identity and trusted directories: flags, else the configuration's security section, else the defaults. */
function dirs(values: { identity?: string; trusted?: string; config?: string }): { identity: string; trusted: string } {
  let identity = values.identity;
  let trusted = values.trusted;
  const file = values.config ?? process.env.STARLING_CONFIG ?? (existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : undefined);
  if ((!identity || !trusted) && file) {
    try {
      const c = loadConfig(file);
      identity ??= c.security.identity;
      trusted ??= c.security.trusted;
    } catch (e) {
      if (e instanceof ConfigError) throw new CliError(`${e.problems.length} problem(s) in the configuration:\n${e.message}`, 1);
      throw e;
    }
  }
  return { identity: identity ?? DEFAULT_IDENTITY_DIR, trusted: trusted ?? DEFAULT_TRUSTED_DIR };
}

const failing = <T>(fn: () => T): T => {
  try {
    return fn();
  } catch (e) {
    if (e instanceof CertificateError || e instanceof TrustError) throw new CliError(e.message, 1);
    throw e;
  }
};

export const keygen: Command = {
  help: `Usage: starling keygen [--dir DIR] [--name NAME] [--force] [--json]

Writes a new Curve25519 key pair in CZMQ's zcert format: the public certificate
DIR/node.key (give it to the nodes that should trust this one) and the secret one
DIR/node.key_secret (mode 0600, never leaves this machine). Prints the public key
and its fingerprint. Refuses to replace an existing pair without --force.

  --dir DIR           where (default: the configuration's security.identity, else ${DEFAULT_IDENTITY_DIR})
  --name NAME         a name in the certificate's metadata
  --force             replace an existing key pair
  --json              machine-readable output`,
  async run(argv) {
    const { values } = parse(argv, { dir: { type: 'string' }, name: { type: 'string' }, force: { type: 'boolean' }, config: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, false);
    const dir = values.dir ?? dirs({ config: values.config }).identity;
    const id = failing(() => createIdentity(dir, { force: values.force, name: values.name }));
    out(values.json ? JSON.stringify({ dir, ...id.toJSON() }) : `${dir}/node.key: public key ${id.publicKey} (fingerprint ${id.fingerprint})`);
    return 0;
  },
};

const TRUST_HELP = `Usage: starling trust add FILE|KEY [--name N] [--role read|command]...
       starling trust list
       starling trust remove NAME|FINGERPRINT
       starling trust pending
       starling trust accept FINGERPRINT [--name N] [--role read|command]...

The trusted directory holds one zcert public certificate per key that may join the
mesh (metadata: name, roles). Roles: read (its telemetry may be read by it), command
(it may set GPIO outputs and take any later write action). Without --role a key gets
read. A running node picks changes up within a second (or at once on SIGHUP); a
removed key's connections are dropped.

pending lists keys this node refused (the last 100: address, first and last seen, the
name from their HELLO where one came); accept trusts one of them.

  --trusted DIR       the trusted directory (default: the configuration's security.trusted,
                      else ${DEFAULT_TRUSTED_DIR})
  --identity DIR      where the node keeps pending keys (default: security.identity)
  --config FILE       the configuration to take both from
  --name N            the key's name (default: the certificate's, else its fingerprint)
  --role R            a role; repeat for both
  --json              machine-readable output`;

export const trust: Command = {
  help: TRUST_HELP,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      trusted: { type: 'string' }, identity: { type: 'string' }, config: { type: 'string' }, name: { type: 'string' },
      role: { type: 'string', multiple: true }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    });
    const [verb, arg, ...rest] = positionals;
    if (rest.length) throw new CliError(`trust ${verb}: unexpected ${rest.join(' ')}`);
    const d = dirs(values);
    const store = new TrustStore(d.trusted, { pendingFile: pendingFile(d.identity) });
    failing(() => store.open());
    const roles: Role[] | undefined = values.role ? failing(() => parseRoles(values.role!.join(' '), '--role')) : undefined;
    const show = (k: { name: string; fingerprint: string; roles: Role[]; publicKey: string }) => `${k.name.padEnd(20)} ${k.fingerprint}  ${k.roles.join(',').padEnd(12)} ${k.publicKey}`;
    switch (verb) {
      case 'add': {
        if (!arg) throw new CliError('trust add needs a certificate FILE or a 40-character Z85 KEY');
        let key = arg;
        let name = values.name;
        if (!isZ85Key(arg)) {
          const cert = failing(() => readCertificate(arg));
          if (cert.secretKey !== undefined) throw new CliError(`${arg} is a secret certificate; give the public one (node.key), the secret never leaves its node`, 1);
          key = cert.publicKey;
          name ??= cert.metadata.name;
          if (!roles && cert.metadata.roles) values.role = [cert.metadata.roles];
        }
        const k = failing(() => store.add(key, { name, roles: roles ?? (values.role ? parseRoles(values.role.join(' '), arg) : undefined) }));
        out(values.json ? JSON.stringify(k) : `trusted: ${show(k)}`);
        return 0;
      }
      case 'list': {
        const list = store.list();
        if (values.json) out(JSON.stringify(list));
        else if (list.length === 0) out(`no trusted keys in ${d.trusted}`);
        else for (const k of list) out(show(k));
        return 0;
      }
      case 'remove': {
        if (!arg) throw new CliError('trust remove needs a NAME or FINGERPRINT');
        const gone = failing(() => store.remove(arg));
        if (gone.length === 0) throw new CliError(`no trusted key named or with fingerprint '${arg}' in ${d.trusted}`, 1);
        out(values.json ? JSON.stringify(gone) : gone.map((k) => `removed: ${show(k)}`).join('\n'));
        return 0;
      }
      case 'pending': {
        const list = store.pending();
        if (values.json) out(JSON.stringify(list));
        else if (list.length === 0) out('no pending keys');
        else for (const p of list) out(`${p.fingerprint}  ${(p.name ?? '-').padEnd(16)} ${(p.address ?? '-').padEnd(15)} first ${p.firstSeen} last ${p.lastSeen} (${p.refusals}×)  ${p.publicKey}`);
        return 0;
      }
      case 'accept': {
        if (!arg) throw new CliError('trust accept needs the FINGERPRINT shown by starling trust pending');
        const p = failing(() => store.findPending(arg));
        if (!p) throw new CliError(`no pending key with fingerprint '${arg}' (see starling trust pending)`, 1);
        const k = failing(() => store.add(p.publicKey, { name: values.name ?? p.name, roles }));
        out(values.json ? JSON.stringify(k) : `trusted: ${show(k)}`);
        return 0;
      }
      default:
        throw new CliError(`trust: expected add, list, remove, pending or accept${verb ? `, got '${verb}'` : ''}`);
    }
  },
};
