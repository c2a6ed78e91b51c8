// An emulated board for the boot test: the board image (dist/starling-arm64.img, a copy grown to 2 GiB) in
// qemu-system-aarch64 (TCG, -M virt, Debian's arm64 kernel and the image's own initramfs), its NIC on a tap in
// the hub namespace of a network-namespace segment, so that it shares a bridge with the segment's hosts.
// Files for the boot partition are written into the copy with mtools before the boot, as a user would on
// the FAT partition of a card. Commands go over SSH (the key the boot partition's authorized_keys gave root).
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT_DIR, type Segment } from '../net/netns.ts';

export const IMAGE = join(ROOT_DIR, 'dist/starling-arm64.img');
export const KERNEL = join(ROOT_DIR, 'dist/image/vmlinuz');
export const INITRD = join(ROOT_DIR, 'dist/image/initrd.img');
/** The boot partition starts at 4 MiB (image/build-image.sh). */
export const FAT_OFFSET = 4 * 1024 * 1024;
const MAC = '52:54:00:5a:17:01';

export class Guest {
  readonly console: string;
  readonly key: string;
  readonly disk: string;
  private qemu: ChildProcess | undefined;
  private dnsmasq: ChildProcess | undefined;
  /** The guest's address: dnsmasq on host 1 of the segment gives it .10 by its MAC. */
  readonly address: string;

  constructor(readonly seg: Segment, readonly dir: string) {
    this.console = join(dir, 'console.log');
    this.key = join(dir, 'id_ed25519');
    this.disk = join(dir, 'board.img');
    this.address = `${seg.subnet}.10`;
  }

  /** A sparse copy of the image, grown as a larger card would be; an SSH key for root. */
  prepare(sizeMiB = 2048): void {
    execFileSync('cp', ['--sparse=always', IMAGE, this.disk]);
    execFileSync('truncate', ['-s', `${sizeMiB}M`, this.disk]);
    if (!existsSync(this.key)) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'boot-test', '-f', this.key]);
  }

  /** Writes `text` as `name` (a path such as trusted/hub.key) on the boot partition of the copy. */
  putBootFile(name: string, text: string | Buffer): void {
    const tmp = join(this.dir, 'put.tmp');
    writeFileSync(tmp, text);
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) spawnSync('mmd', ['-i', `${this.disk}@@${FAT_OFFSET}`, `::/${parts.slice(0, i).join('/')}`]);
    execFileSync('mcopy', ['-o', '-i', `${this.disk}@@${FAT_OFFSET}`, tmp, `::/${name}`]);
  }

  readBootFile(name: string): string {
    return execFileSync('mtype', ['-i', `${this.disk}@@${FAT_OFFSET}`, `::/${name}`], { encoding: 'utf8' });
  }

  /** Starts dnsmasq on host 1 and qemu in the hub namespace; returns at once (see waitForSsh). */
  boot(): void {
    const hub = this.seg.hub;
    execFileSync('ip', ['-n', hub, 'tuntap', 'add', 'tap0', 'mode', 'tap']);
    execFileSync('ip', ['-n', hub, 'link', 'set', 'tap0', 'master', 'br0', 'up']);
    this.dnsmasq = spawn('ip', ['netns', 'exec', this.seg.hosts[0]!, 'dnsmasq', '--no-daemon', '--conf-file=/dev/null', '--port=0',
      '--interface=eth0', '--bind-interfaces', `--dhcp-range=${this.seg.subnet}.50,${this.seg.subnet}.99,12h`,
      `--dhcp-host=${MAC},${this.address}`, `--dhcp-leasefile=${join(this.dir, 'leases')}`, '--log-dhcp'], { stdio: ['ignore', 'ignore', 'pipe'] });
    // The kernel command line the Pi's firmware would use (cmdline.txt), with the emulated board's console.
    const cmdline = this.readBootFile('cmdline.txt').trim().split(/\s+/).filter((a) => !a.startsWith('console='));
    this.qemu = spawn('ip', ['netns', 'exec', hub, 'qemu-system-aarch64', '-M', 'virt', '-cpu', 'cortex-a72', '-smp', '2', '-m', '1024',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', `file:${this.console}`,
      '-kernel', KERNEL, '-initrd', INITRD, '-append', [...cmdline, 'console=ttyAMA0'].join(' '),
      '-drive', `if=none,id=disk,format=raw,file=${this.disk},cache=unsafe`, '-device', 'virtio-blk-pci,drive=disk',
      '-netdev', 'tap,id=net,ifname=tap0,script=no,downscript=no', '-device', `virtio-net-pci,netdev=net,mac=${MAC}`,
      '-device', 'virtio-rng-pci'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    this.qemu.stderr!.on('data', (d) => (err += String(d)));
    this.qemu.on('exit', (code) => { if (code) writeFileSync(join(this.dir, 'qemu.err'), `qemu exited ${code}: ${err}`); });
  }

  get running(): boolean {
    return this.qemu !== undefined && this.qemu.exitCode === null && this.qemu.signalCode === null;
  }

  private sshArgs(): string[] {
    return ['-i', this.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
      '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'ControlMaster=auto', '-o', `ControlPath=${join(this.dir, 'ssh-%C')}`,
      '-o', 'ControlPersist=900', '-o', 'ServerAliveInterval=5'];
  }

  /** Runs a shell command on the board as root; its status and output. */
  ssh(command: string, timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync('ip', ['netns', 'exec', this.seg.hosts[0]!, 'ssh', ...this.sshArgs(), `root@${this.address}`, command],
      { encoding: 'utf8', timeout: timeoutMs });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Like ssh(), but throws with the output when the command fails; its stdout. */
  run(command: string, timeoutMs = 60_000): string {
    const r = this.ssh(command, timeoutMs);
    if (r.status !== 0) throw new Error(`on the board: ${command}\nexit ${r.status}\n${r.stdout}${r.stderr}`);
    return r.stdout;
  }

  /** SSH from host 1 with other options (e.g. a password-only attempt). */
  sshWith(options: string[], command: string): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync('ip', ['netns', 'exec', this.seg.hosts[0]!, 'ssh', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', ...options, `root@${this.address}`, command], { encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Waits until SSH answers (the board booted, took the boot partition's key and started sshd). */
  async waitForSsh(ms: number): Promise<number> {
    const t0 = performance.now();
    while (performance.now() - t0 < ms) {
      if (!this.running) throw new Error(`qemu ended; ${this.tail()}`);
      if (this.ssh('true', 15_000).status === 0) return performance.now() - t0;
      await new Promise((r) => setTimeout(r, 2000));
    }
    throw new Error(`no SSH on ${this.address} within ${ms} ms; ${this.tail()}`);
  }

  /** The console's last lines, for error messages. */
  tail(lines = 40): string {
    try {
      return `console (last ${lines} lines):\n${readFileSync(this.console, 'utf8').split('\n').slice(-lines).join('\n')}`;
    } catch {
      return 'no console output';
    }
  }

  /** Keeps the console and the journal in `dest` (test artefacts). */
  keepLogs(dest: string): void {
    mkdirSync(dest, { recursive: true });
    if (existsSync(this.console)) copyFileSync(this.console, join(dest, 'console.log'));
    if (this.running) {
      const j = this.ssh('journalctl -b --no-pager -o short-monotonic', 60_000);
      if (j.status === 0) writeFileSync(join(dest, 'journal.log'), j.stdout);
    }
  }

  async stop(): Promise<void> {
    for (const p of [this.qemu, this.dnsmasq]) {
      if (p && p.exitCode === null && p.signalCode === null) {
        p.kill('SIGKILL');
        await new Promise((r) => p.once('exit', r));
      }
    }
    spawnSync('ip', ['netns', 'exec', this.seg.hosts[0]!, 'ssh', '-o', `ControlPath=${join(this.dir, 'ssh-%C')}`, '-O', 'exit', `root@${this.address}`], { stdio: 'ignore', timeout: 5000 });
  }
}
