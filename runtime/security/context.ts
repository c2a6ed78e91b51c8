/**
 * A node's security as its services use it: its identity and the allowlist, opened from the configuration's
 * `security` section, and the CURVE options each part takes (the mesh node, the telemetry publisher, a
 * subscriber). `mode: none` gives none of it: plain ZRE and plain telemetry.
 */
import { join } from 'node:path';
import type { ZreCurve } from '../zre/node.ts';
import { ensureIdentity, loadIdentity, type Identity } from './identity.ts';
import { TrustStore } from './trust.ts';

export interface SecurityConfig {
  mode: 'curve' | 'none';
  identity: string;
  trusted: string;
  zap_domain: string;
}

export interface Security {
  identity: Identity;
  trust: TrustStore;
  zapDomain: string;
}

/** Where a node keeps the keys it refused (for `starling trust pending`): beside its identity. */
export const pendingFile = (identityDir: string): string => join(identityDir, 'pending.json');

/**
 * The security of a node configured by `cfg`, or undefined for `mode: none`. With `create`, a missing identity
 * is made (and `onProblem` told once); without, a missing one is an error saying how to make it. The trust
 * store is constructed, not started.
 */
export function openSecurity(cfg: SecurityConfig, opts: { create: boolean; name?: string; onProblem?: (message: string) => void }): Security | undefined {
  if (cfg.mode === 'none') return undefined;
  let identity: Identity;
  if (opts.create) {
    const r = ensureIdentity(cfg.identity, opts.name);
    identity = r.identity;
    if (r.created) opts.onProblem?.(`created this node's identity in ${cfg.identity}: key ${identity.publicKey} (fingerprint ${identity.fingerprint})`);
  } else identity = loadIdentity(cfg.identity);
  const trust = new TrustStore(cfg.trusted, { pendingFile: pendingFile(cfg.identity), onProblem: opts.onProblem });
  return { identity, trust, zapDomain: cfg.zap_domain };
}

/** The mesh node's secure mode: any trusted key joins. */
export function meshCurve(s: Security): ZreCurve {
  return {
    publicKey: s.identity.publicKey, secretKey: s.identity.secretKey, zapDomain: s.zapDomain,
    // Our own key is always ours: a CLI command run with the node's identity beside it may talk to it.
    allows: (k) => k === s.identity.publicKey || s.trust.allows(k), refused: (r) => s.trust.refused(r),
  };
}

/** The telemetry publisher's: keys with the `read` role subscribe. */
export function publisherCurve(s: Security): { publicKey: string; secretKey: string; allows(k: string): boolean; refused(r: { publicKey: string; address?: string; why: string }): void; zapDomain: string } {
  return {
    publicKey: s.identity.publicKey, secretKey: s.identity.secretKey, zapDomain: `${s.zapDomain}.telemetry`,
    allows: (k) => k === s.identity.publicKey || s.trust.allows(k, 'read'), refused: (r) => s.trust.refused({ ...r, why: `${r.why} (needs the read role)` }),
  };
}

/** A subscriber's (or any CURVE client's): our key pair. */
export function clientCurve(s: Security): { publicKey: string; secretKey: string } {
  return { publicKey: s.identity.publicKey, secretKey: s.identity.secretKey };
}
