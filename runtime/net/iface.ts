/**
 * Choosing the network interface the mesh runs on, shared by ZRE and telemetry.
 *
 * Linux only: flags come from /sys/class/net/NAME/flags (IFF_UP 0x1, IFF_BROADCAST 0x2, IFF_LOOPBACK 0x8),
 * addresses from os.networkInterfaces(). Cost: a few small file reads; call once at start.
 */
import { networkInterfaces } from 'node:os';
import { readFileSync } from 'node:fs';

export interface MeshInterface {
  /** Interface name, e.g. `eth0`, `wlan0`, `lo`. */
  name: string;
  /** Its IPv4 address: what HELLO advertises and where the inbox binds (never a hostname). */
  address: string;
  netmask: string;
  /** Where beacons go: the subnet's directed broadcast address (127.255.255.255 on loopback). */
  broadcast: string;
  /** True when the interface was chosen automatically. */
  automatic: boolean;
}

export class InterfaceError extends Error {
  override name = 'InterfaceError';
}

const IFF_UP = 0x1;
const IFF_BROADCAST = 0x2;
const IFF_LOOPBACK = 0x8;

function flagsOf(name: string, sysRoot: string): number | undefined {
  try {
    return parseInt(readFileSync(`${sysRoot}/class/net/${name}/flags`, 'utf8').trim(), 16);
  } catch {
    return undefined;
  }
}

const toInt = (ip: string): number => ip.split('.').reduce((n, o) => (n << 8) + Number(o), 0) >>> 0;
const toIp = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 0xff).join('.');

/** The directed broadcast address of `address`/`netmask`. */
export function broadcastOf(address: string, netmask: string): string {
  return toIp((toInt(address) | ~toInt(netmask)) >>> 0);
}

/**
 * Picks the interface: the one named (by name, or by one of its IPv4 addresses), or else the first that is up,
 * not loopback, has an IPv4 address and can broadcast. Throws {@link InterfaceError} saying what was found.
 */
export function chooseInterface(wanted?: string, sysRoot = '/sys'): MeshInterface {
  const all = networkInterfaces();
  const candidates: MeshInterface[] = [];
  for (const [name, addrs] of Object.entries(all)) {
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv4') continue;
      candidates.push({ name, address: a.address, netmask: a.netmask, broadcast: broadcastOf(a.address, a.netmask), automatic: !wanted });
    }
  }
  if (wanted) {
    const hit = candidates.find((c) => c.name === wanted || c.address === wanted);
    if (!hit) {
      const known = candidates.map((c) => `${c.name} (${c.address})`).join(', ') || 'none';
      throw new InterfaceError(`interface '${wanted}' has no IPv4 address here; IPv4 interfaces: ${known}`);
    }
    return hit;
  }
  for (const c of candidates) {
    const flags = flagsOf(c.name, sysRoot);
    if (flags === undefined) continue;
    if (flags & IFF_UP && flags & IFF_BROADCAST && !(flags & IFF_LOOPBACK)) return c;
  }
  throw new InterfaceError('no interface is up with an IPv4 address and broadcast; name one with --iface (e.g. --iface lo for this machine alone)');
}
