/**
 * The ZAP handler (ZeroMQ RFC 27) for this process: a ROUTER on `inproc://zeromq.zap.01` in the default
 * context, which libzmq asks about every CURVE handshake on a server socket with a ZAP domain. Each policy is
 * registered under a domain; a request for a domain nobody registered, a mechanism other than CURVE, or a key
 * the policy refuses gets 400. Every CURVE server socket also sets `zapEnforceDomain`, so a missing handler
 * means "refuse", never "allow all".
 *
 * Start it (`Zap.shared()`) before any CURVE server binds. Cost: one inproc round trip per handshake.
 */
import { Router, capability } from 'zeromq';
import { z85Encode } from './z85.ts';

export const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';

/** A decision about one client key (Z85) from `address` (the client's IP, from libzmq). */
export type ZapPolicy = (publicKey: string, address: string) => boolean;

export interface ZapStats {
  zapRequests: number;
  zapAllowed: number;
  zapRefused: number;
  zapMalformed: number;
}

export class Zap {
  private static instance: Promise<Zap> | undefined;
  private readonly policies = new Map<string, ZapPolicy>();
  private readonly counters: ZapStats = { zapRequests: 0, zapAllowed: 0, zapRefused: 0, zapMalformed: 0 };
  private router: Router | undefined;

  private constructor() {}

  /** The process's handler, bound on first use; later calls get the same one. */
  static shared(): Promise<Zap> {
    Zap.instance ??= (async () => {
      const zap = new Zap();
      let router: Router | undefined;
      // A handler closed a moment ago may still hold the endpoint: try a few times.
      for (let attempt = 0; !router; attempt++) {
        const r = new Router({ linger: 0 });
        try {
          await r.bind(ZAP_ENDPOINT);
          router = r;
        } catch (e) {
          r.close();
          if (attempt >= 20) {
            Zap.instance = undefined;
            throw new Error(`cannot start the ZAP handler on ${ZAP_ENDPOINT}: ${(e as Error).message}`);
          }
          await new Promise((res) => setTimeout(res, 10));
        }
      }
      zap.router = router;
      Zap.current = zap;
      void zap.serve(router);
      return zap;
    })();
    return Zap.instance;
  }

  /**
   * Registers `policy` under a domain named like `base` (`base`, or `base.2`, `base.3` … when taken: two nodes
   * in one process keep their own allowlists). Returns the domain and the function that unregisters it.
   */
  register(base: string, policy: ZapPolicy): { domain: string; unregister: () => void } {
    let domain = base;
    for (let n = 2; this.policies.has(domain); n++) domain = `${base}.${n}`;
    this.policies.set(domain, policy);
    return {
      domain,
      unregister: () => {
        if (!this.policies.delete(domain) || this.policies.size > 0) return;
        // Nobody left to serve: close, so a CLI command's process can end (an open socket keeps it alive).
        if (Zap.current === this) Zap.instance = undefined;
        Zap.current = undefined;
        this.router?.close();
        this.router = undefined;
      },
    };
  }

  private static current: Zap | undefined;

  stats(): ZapStats {
    return { ...this.counters };
  }

  private async serve(router: Router): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await router.receive();
      } catch {
        return;
      }
      // [routing id, empty, "1.0", request id, domain, address, identity, mechanism, credentials…]
      const [rid, delimiter, version, requestId, domain, address, , mechanism, key] = frames;
      this.counters.zapRequests++;
      if (!rid || delimiter?.length !== 0 || !requestId) {
        this.counters.zapMalformed++; // not a request libzmq would send: nothing to answer
        continue;
      }
      let code = '400';
      let text = 'refused';
      try {
        if (version?.toString() !== '1.0') {
          this.counters.zapMalformed++;
          text = 'ZAP version must be 1.0';
        } else if (mechanism?.toString() !== 'CURVE' || key?.length !== 32) {
          text = 'CURVE only';
        } else {
          const policy = this.policies.get(domain?.toString() ?? '');
          if (!policy) text = 'no policy for this domain';
          else if (policy(z85Encode(key), address?.toString() ?? '')) {
            code = '200';
            text = 'OK';
          }
        }
      } catch {
        text = 'policy failed';
      }
      if (code === '200') this.counters.zapAllowed++;
      else this.counters.zapRefused++;
      try {
        await router.send([rid, Buffer.alloc(0), '1.0', requestId, code, text, '', Buffer.alloc(0)]);
      } catch {
        return;
      }
    }
  }
}

/** A CURVE server's side of ZAP: the socket options to use, the handler's counters, and its release. */
export interface CurveServer {
  options: { curveServer: true; curvePublicKey: string; curveSecretKey: string; zapDomain: string; zapEnforceDomain: true };
  stats(): ZapStats;
  /** Unregisters the domain (the handler closes with its last one). */
  release(): void;
}

/**
 * Registers `allows` with the process's ZAP handler (started on first use) under a domain named like `base`,
 * and returns the options of a CURVE server socket behind it: the domain enforced, so no handler means
 * refusal. `onRefused` hears each key refused. Rejects where the loaded libzmq has no CURVE.
 */
export async function curveServer(
  keys: { publicKey: string; secretKey: string }, base: string, allows: (key: string) => boolean, onRefused?: (key: string, address: string) => void,
): Promise<CurveServer> {
  if (!capability.curve) throw new Error('the loaded libzmq has no CURVE');
  const zap = await Zap.shared();
  const { domain, unregister } = zap.register(base, (key, address) => {
    if (allows(key)) return true;
    onRefused?.(key, address);
    return false;
  });
  return {
    options: { curveServer: true, curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey, zapDomain: domain, zapEnforceDomain: true },
    stats: () => zap.stats(),
    release: unregister,
  };
}
