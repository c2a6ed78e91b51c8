/**
 * Several hosts on one machine: network namespaces on one bridged Ethernet segment, made by the test and torn
 * down by it. Each host sees one interface, `eth0`, with 10.231.0.N/24. The bridge lives in a namespace of its
 * own, so nothing touches the machine's own network; multicast (224.0.0.0/4) is routed out of eth0 as well.
 * Needs root and iproute2.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const isRoot = process.getuid?.() === 0;

/** The checkout, and its built CLI. */
export const ROOT_DIR = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = `${ROOT_DIR}/dist/starling.cjs`;

/**
 * Whether a root-only test file runs here: as root, or in CI (where not being root is then a failure, never
 * a silent skip). Outside CI without root it says what it skips.
 */
export function rootTests(what: string): boolean {
  const run = isRoot || process.env.CI === 'true';
  if (!run) console.warn(`test/net: not root, skipping ${what} (CI runs it as root)`);
  return run;
}

/** In beforeAll of a root-only file: fails clearly when not root (that is, in CI). The CLI is built once per run (test/global-setup.ts). */
export function requireRootAndBuild(): void {
  if (!isRoot) throw new Error('these tests need root (CI=true was set, so they may not be skipped)');
}

/**
 * Shell lines, for a script run under `unshare -m`, that mount a tmpfs over /sys/class with one gpiochip
 * (`pinctrl-bcm2711`, base 512, 58 lines) and start the stand-in kernel (test/net/fake-gpio-kernel.mjs) as
 * `$kernel`; `$G` is /sys/class/gpio. They return once the kernel is watching.
 */
export function fakeGpioSysfs(node = process.execPath): string {
  return `
      mount -t tmpfs starling-gpio /sys/class
      G=/sys/class/gpio
      mkdir -p $G/gpiochip512
      echo pinctrl-bcm2711 > $G/gpiochip512/label; echo 512 > $G/gpiochip512/base; echo 58 > $G/gpiochip512/ngpio
      : > $G/export; : > $G/unexport
      ${node} ${ROOT_DIR}/test/net/fake-gpio-kernel.mjs $G > $G/.kernel.log &
      kernel=$!
      while [ ! -s $G/.kernel.log ]; do sleep 0.01; done`;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export class Segment {
  readonly prefix = `stl${randomBytes(2).toString('hex')}`;
  readonly hub = `${this.prefix}-hub`;
  readonly hosts: string[] = [];

  /** `subnet` is the first three octets of the segment's /24 (hosts are .1, .2, …). */
  constructor(readonly subnet = '10.231.0') {}

  /** Creates the hub namespace with bridge `br0` and `count` host namespaces wired to it. */
  create(count: number, unwired = 0): this {
    ip('netns', 'add', this.hub);
    ip('-n', this.hub, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', this.hub, 'link', 'set', 'br0', 'up');
    for (let i = 1; i <= count + unwired; i++) {
      const ns = `${this.prefix}-h${i}`;
      ip('netns', 'add', ns);
      this.hosts.push(ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      if (i <= count) this.wire(i);
    }
    return this;
  }

  /**
   * Gives host i its eth0 on the bridge, addressed and up (create() does this for all but its `unwired`
   * hosts, which start with loopback only, as a board whose Wi-Fi has not come up yet).
   */
  wire(i: number): void {
    const ns = this.hosts[i - 1]!;
    ip('-n', this.hub, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('-n', this.hub, 'link', 'set', `p${i}`, 'master', 'br0', 'up');
    ip('-n', ns, 'addr', 'add', this.address(i) + '/24', 'brd', '+', 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    // Multicast (epgm) leaves through eth0 too.
    ip('-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0');
  }

  /** The IPv4 address of host i (1-based). */
  address(i: number): string {
    return `${this.subnet}.${i}`;
  }

  /** Namespaces made by {@link routeTo}, destroyed with this segment. */
  private readonly extra: string[] = [];

  /**
   * Joins this segment and `other` with a router namespace (`.254` on each side, forwarding on) and gives
   * every host a default route through it: unicast crosses, broadcast does not (two subnets, as a routed
   * network or a VPN is). The router goes with this segment's destroy().
   */
  routeTo(other: Segment): string {
    const rt = `${this.prefix}-rt`;
    ip('netns', 'add', rt);
    this.extra.push(rt);
    for (const [i, seg] of [this, other].entries()) {
      ip('-n', seg.hub, 'link', 'add', `rt${i}`, 'type', 'veth', 'peer', 'name', `side${i}`, 'netns', rt);
      ip('-n', seg.hub, 'link', 'set', `rt${i}`, 'master', 'br0', 'up');
      ip('-n', rt, 'addr', 'add', `${seg.subnet}.254/24`, 'dev', `side${i}`);
      ip('-n', rt, 'link', 'set', `side${i}`, 'up');
      for (const host of seg.hosts) ip('-n', host, 'route', 'add', 'default', 'via', `${seg.subnet}.254`);
    }
    ip('-n', rt, 'link', 'set', 'lo', 'up');
    execFileSync('ip', ['netns', 'exec', rt, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    return rt;
  }

  /** Takes host i's link down or up (as a Wi-Fi drop would). */
  link(i: number, state: 'up' | 'down'): void {
    ip('-n', this.hosts[i - 1]!, 'link', 'set', 'eth0', state);
  }

  destroy(): void {
    for (const ns of [...this.hosts, this.hub, ...this.extra]) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // already gone
      }
    }
  }
}

export type Event = Record<string, unknown> & { event: string };

/**
 * A `starling` process inside a namespace, by default `listen --json --stdin`: its JSON output lines are
 * collected as events as they arrive; commands go to its stdin.
 */
export class Agent {
  readonly events: Event[] = [];
  readonly proc: ChildProcess;
  private waiters: { pred: (e: Event) => boolean; resolve: (e: Event) => void }[] = [];
  stderr = '';

  /** `cli`: the bundle (run with this Node), or the full command line of another form, e.g. an executable. */
  constructor(readonly label: string, ns: string, cli: string | string[], args: string[], command = ['listen', '--json', '--stdin']) {
    const program = typeof cli === 'string' ? [process.execPath, cli] : cli;
    this.proc = spawn('ip', ['netns', 'exec', ns, ...program, ...command, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.proc.stderr!.on('data', (d) => (this.stderr += String(d)));
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      const e = JSON.parse(line) as Event;
      e.at = performance.now();
      this.events.push(e);
      this.waiters = this.waiters.filter((w) => (w.pred(e) ? (w.resolve(e), false) : true));
    });
  }

  /** The first event (already seen or still to come) that matches; fails after `ms`. */
  waitFor(pred: (e: Event) => boolean, ms = 15_000, what = 'a matching event'): Promise<Event> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = { pred, resolve: (e: Event) => (clearTimeout(timer), resolve(e)) };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`${this.label}: no ${what} within ${ms} ms; stderr: ${this.stderr.trim() || '(none)'}`));
      }, ms);
      this.waiters.push(waiter);
    });
  }

  /** Waits only for events that arrive from now on. */
  next(pred: (e: Event) => boolean, ms = 15_000, what?: string): Promise<Event> {
    const from = this.events.length;
    return this.waitFor((e) => this.events.indexOf(e) >= from && pred(e), ms, what);
  }

  command(line: string): void {
    this.proc.stdin!.write(line + '\n');
  }

  get started(): Promise<Event> {
    return this.waitFor((e) => e.event === 'STARTED', 15_000, 'STARTED');
  }

  get id(): string {
    return String(this.events.find((e) => e.event === 'STARTED')?.peer);
  }

  exited(): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.resolve(this.proc.exitCode);
    return new Promise((r) => this.proc.once('exit', (code) => r(code)));
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    this.proc.kill(signal);
  }
}

/**
 * A private system bus like Debian's (deny by default) with the policy file Starling ships, listening at
 * `address` (a unix: address in `dir`); returns the dbus-daemon's pid (SIGTERM it to stop).
 */
export function startSystemBus(dir: string, address: string): number {
  writeFileSync(join(dir, 'system.conf'), `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>${address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>${ROOT_DIR}/image/dbus/org.starling.Supervisor1.conf</include>
</busconfig>`);
  return Number(execFileSync('dbus-daemon', [`--config-file=${dir}/system.conf`, '--fork', '--print-pid'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
}
