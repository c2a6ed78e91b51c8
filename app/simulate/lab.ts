/**
 * The network of `starling simulate`: one Ethernet segment (a bridge) and a host on it per worker process,
 * each a network namespace. Nothing here is named or mounted: the bridge's namespace belongs to a holder
 * process (`unshare --net sh -c read`) and each host's to its worker (`unshare --net starling simulate
 * --worker`), so when the conductor ends — even by SIGKILL, which closes their stdin — they end, and the
 * kernel removes the namespaces, the veths and the bridge with them. Nothing touches this machine's own
 * interfaces. Needs root, iproute2 and util-linux; loss needs netem or iptables; delay needs netem, or iptables
 * and the nfq-delay helper (image/native/nfq-delay.c: a delay line on the kernel's NFQUEUE, for kernels without
 * netem, such as this machine's).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { besideBundle } from '../../runtime/native.ts';

export class LabError extends Error {
  override name = 'LabError';
}

/** The subnet every simulated host is on (a /16 of its own namespace; never routed anywhere). */
const SUBNET = '10.77';

/** The address of simulated node `n` (0 is the hub): 10.77.x.y with y in 1..250. */
export function simAddress(n: number): string {
  return `${SUBNET}.${Math.floor(n / 250)}.${(n % 250) + 1}`;
}

/** Runs `cmd` in the network namespace of process `pid`; `input` on its stdin (for `ip -batch -`). */
export function inNetns(pid: number, cmd: string[], input?: string): string {
  try {
    return execFileSync('nsenter', ['-t', String(pid), '-n', ...cmd], { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new LabError(`${cmd.join(' ')} (in the namespace of ${pid}): ${(err.stderr || err.message).trim().split('\n')[0]}`);
  }
}

/** Resolves once process `pid` is in a network namespace other than ours (unshare has run). */
async function ownNetns(pid: number, ms = 5000): Promise<void> {
  const mine = readlinkSync('/proc/self/ns/net');
  const t0 = Date.now();
  for (;;) {
    try {
      if (readlinkSync(`/proc/${pid}/ns/net`) !== mine) return;
    } catch {
      throw new LabError(`process ${pid} ended before it had its namespace`);
    }
    if (Date.now() - t0 > ms) throw new LabError(`process ${pid} did not enter a namespace of its own within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface Impairment {
  /** Probability (0..1) that a packet leaving a host is dropped. */
  loss: number;
  /** Milliseconds each packet leaving a host is held (netem, else the nfq-delay helper). */
  delayMs: number;
}

/**
 * The nfq-delay helper: $STARLING_NFQ_DELAY, else native/nfq-delay beside the bundle (image/build.mjs puts it in
 * dist/native/ where libnetfilter_queue is installed); undefined when there is none.
 */
const delayHelper = (): string | undefined => process.env.STARLING_NFQ_DELAY || besideBundle('nfq-delay');

/** Host `id`'s eth0 MAC: locally administered (02:…), from its id. */
const hostMac = (id: number): string => `02:77:00:00:${((id >> 8) & 0xff).toString(16).padStart(2, '0')}:${(id & 0xff).toString(16).padStart(2, '0')}`;

/** The segment: its holder process (the bridge's namespace) and how packets are impaired on it. */
export class Lab {
  private holder: ChildProcess | undefined;
  private netem = false;
  /** How loss is applied: 'netem', 'iptables' or 'none'. */
  lossBy: 'netem' | 'iptables' | 'none' = 'none';
  /** How delay is applied: 'netem', 'nfqueue' (the nfq-delay helper) or 'none'. */
  delayBy: 'netem' | 'nfqueue' | 'none' = 'none';
  private helper: string | undefined;
  /** The nfq-delay helpers, one per host, and what each said on stderr. */
  private readonly delayers: { proc: ChildProcess; said: string }[] = [];

  /** Wired hosts: their worker's pid, eth0's MAC and addresses. */
  private readonly hosts: { pid: number; mac: string; addresses: string[] }[] = [];

  constructor(readonly impairment: Impairment) {}

  get holderPid(): number {
    return this.holder!.pid!;
  }

  /** Makes the bridge's namespace and checks the kernel can impair as asked; throws {@link LabError} if not. */
  async open(): Promise<void> {
    if (process.getuid?.() !== 0) throw new LabError('starling simulate needs root (it makes network namespaces)');
    for (const tool of ['ip', 'unshare', 'nsenter']) {
      try {
        execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
      } catch {
        throw new LabError(`'${tool}' is not installed (iproute2, util-linux)`);
      }
    }
    this.holder = spawn('unshare', ['--net', '--', 'sh', '-c', 'read _'], { stdio: ['pipe', 'ignore', 'inherit'] });
    await ownNetns(this.holder.pid!);
    inNetns(this.holderPid, ['ip', '-batch', '-'], 'link set lo up\nlink add br0 type bridge\nlink set br0 up\n');
    // netem, where the kernel has it (sch_netem); else loss alone through iptables' statistic match.
    try {
      inNetns(this.holderPid, ['tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms']);
      inNetns(this.holderPid, ['tc', 'qdisc', 'del', 'dev', 'lo', 'root']);
      this.netem = true;
    } catch {
      this.netem = false;
    }
    const { loss, delayMs } = this.impairment;
    let iptables = false;
    if ((loss > 0 || delayMs > 0) && !this.netem) {
      try {
        inNetns(this.holderPid, ['iptables', '-L', 'OUTPUT', '-n']);
        iptables = true;
      } catch {
        // said below, for what needs it
      }
    }
    if (loss > 0 && !this.netem && !iptables) throw new LabError('--loss needs netem or iptables (Debian: apt install iptables), and neither works here');
    if (delayMs > 0 && !this.netem) {
      this.helper = delayHelper();
      if (!this.helper || !iptables) {
        throw new LabError(`--delay needs netem, or iptables and the nfq-delay helper (image/build-nfq-delay.sh; $STARLING_NFQ_DELAY names it); this kernel has no sch_netem ('tc qdisc add … netem' fails)${iptables ? '' : ', iptables does not work here'}${this.helper ? '' : ', and there is no helper'}; run without --delay (--loss works through iptables)`);
      }
    }
    this.lossBy = loss > 0 ? (this.netem ? 'netem' : 'iptables') : 'none';
    this.delayBy = delayMs > 0 ? (this.netem ? 'netem' : 'nfqueue') : 'none';
  }

  /**
   * Puts host `pid` (a worker in its own namespace) on the segment as `eth0` with `addresses` (/16), through
   * veth `w<id>` on the bridge, and impairs what it sends.
   */
  wire(id: number, pid: number, addresses: string[]): void {
    const mac = hostMac(id);
    this.hosts.push({ pid, mac, addresses });
    inNetns(this.holderPid, ['ip', '-batch', '-'], `link add w${id} type veth peer name eth0 address ${mac} netns ${pid}\nlink set w${id} master br0 up\n`);
    inNetns(pid, ['ip', '-batch', '-'], ['link set lo up', ...addresses.map((a) => `addr add ${a}/16 brd + dev eth0`), 'link set eth0 up', ''].join('\n'));
    const { loss, delayMs } = this.impairment;
    if (this.netem && (loss > 0 || delayMs > 0)) {
      inNetns(pid, ['tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'netem', ...(delayMs > 0 ? ['delay', `${delayMs}ms`] : []), ...(loss > 0 ? ['loss', `${loss * 100}%`] : [])]);
      return;
    }
    // Loss first: a dropped packet is not delayed. What is left goes to queue 0, which the helper holds for
    // delayMs; --queue-bypass lets packets through undelayed while no helper is bound (never dropped for it).
    if (loss > 0) inNetns(pid, ['iptables', '-A', 'OUTPUT', '-o', 'eth0', '-m', 'statistic', '--mode', 'random', '--probability', String(loss), '-j', 'DROP']);
    if (delayMs > 0) {
      // It ends with the host (given its pid), so the host's namespace still ends with it; or with us (stdin).
      const proc = spawn('nsenter', ['-t', String(pid), '-n', this.helper!, '0', String(delayMs), String(pid)], { stdio: ['pipe', 'ignore', 'pipe'] });
      const d = { proc, said: '' };
      proc.stderr!.on('data', (c) => d.said.length < 4096 && (d.said += String(c))); // a line when it works
      this.delayers.push(d);
      inNetns(pid, ['iptables', '-A', 'OUTPUT', '-o', 'eth0', '-j', 'NFQUEUE', '--queue-num', '0', '--queue-bypass']);
    }
  }

  /** Resolves when every host's delay helper holds its queue; throws {@link LabError} with the reason if one cannot. */
  async delaysReady(ms = 5000): Promise<void> {
    await Promise.all(this.delayers.map((d) => new Promise<void>((resolve, reject) => {
      const check = () => {
        if (d.said.includes('nfq-delay: queue')) return resolve();
        if (d.proc.exitCode !== null || d.proc.signalCode !== null) return reject(new LabError(`the delay helper ended: ${d.said.trim() || d.proc.exitCode}`));
        if (Date.now() - t0 > ms) return reject(new LabError(`the delay helper did not bind its queue within ${ms} ms`));
        setTimeout(check, 10);
      };
      const t0 = Date.now();
      check();
    })));
  }

  /**
   * Gives every wired host a permanent neighbour entry for every other host's addresses. The kernel's ARP
   * table is one for all namespaces, and its garbage collector's hard limit (`gc_thresh3`, 1024 by default)
   * counts every namespace's entries: at 200 nodes in 20 namespaces, 4,000 learned entries overflowed it
   * ("neighbor table overflow"), new peers could not be reached and the mesh stopped growing. Permanent
   * entries are exempt from that limit; a real LAN's hosts each hold only their own.
   */
  pinNeighbours(): void {
    for (const h of this.hosts) {
      const lines = this.hosts.filter((o) => o !== h).flatMap((o) => o.addresses.map((a) => `neigh replace ${a} lladdr ${o.mac} dev eth0 nud permanent`));
      inNetns(h.pid, ['ip', '-batch', '-'], lines.join('\n') + '\n');
    }
  }

  /** Takes host `id`'s link down (as out of Wi-Fi range: its eth0 loses carrier, keeps its addresses) or up. */
  link(id: number, up: boolean): void {
    inNetns(this.holderPid, ['ip', 'link', 'set', `w${id}`, up ? 'up' : 'down']);
  }

  /** Bytes each host has sent, by host id: what the bridge side of its veth received. */
  bytesSent(): Map<number, number> {
    const links = JSON.parse(inNetns(this.holderPid, ['ip', '-s', '-j', 'link', 'show'])) as { ifname: string; stats64?: { rx: { bytes: number } } }[];
    const m = new Map<number, number>();
    for (const l of links) {
      const id = /^w(\d+)$/.exec(l.ifname)?.[1];
      if (id && l.stats64) m.set(Number(id), l.stats64.rx.bytes);
    }
    return m;
  }

  /** Ends the holder: the bridge's namespace goes, and with it every veth still on the bridge. Ends the delay helpers. */
  close(): void {
    for (const d of this.delayers) {
      d.proc.stdin?.end();
      if (d.proc.exitCode === null) d.proc.kill('SIGTERM');
    }
    if (this.holder && this.holder.exitCode === null) {
      this.holder.stdin?.end();
      this.holder.kill('SIGKILL');
    }
  }
}
