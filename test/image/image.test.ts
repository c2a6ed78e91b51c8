// The shipped forms, built by image/ and exercised for real: the x64 single executable runs the demo; the arm64
// one, under qemu-aarch64-static, runs a simulated device on one host of a network-namespace segment and the x64
// executable on another host receives its samples through the mesh; the .deb installs into a Debian root made by
// debootstrap (image/debian-root.sh), with its files, user and unit, and systemd-analyze verify passes on the unit.
// Needs root (namespaces, chroot), qemu-user-static, g++-aarch64-linux-gnu and the arm64 libraries that
// image/setup.sh installs; in CI nothing may be missing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, ROOT_DIR, Segment, requireRootAndBuild, rootTests } from '../net/netns.ts';
import { checkDemo } from '../demo-check.ts';
import { beaconPort, freeTcpPort } from '../helpers.ts';

const runHere = rootTests('the packaging tests (single executables, qemu, .deb in a chroot)');
const X64 = join(ROOT_DIR, 'dist/starling-linux-x64');
const ARM64 = join(ROOT_DIR, 'dist/starling-linux-arm64');
const DEB = join(ROOT_DIR, `dist/starling_${JSON.parse(readFileSync(join(ROOT_DIR, 'package.json'), 'utf8')).version}_amd64.deb`);
/** The arm64 executable under user-mode emulation; its libraries (libc, libstdc++, libzmq5) from Debian's arm64 multiarch. */
const QEMU_ARM64 = ['qemu-aarch64-static', '-L', '/', ARM64];

const sh = (cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) =>
  execFileSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd ?? ROOT_DIR, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000 });

describe.runIf(runHere)('the single executables and the .deb', () => {
  const seg = new Segment();
  const agents: Agent[] = [];
  const scratch = mkdtempSync(join(tmpdir(), 'starling-image-'));

  // Rebuilt from the current bundle; build-exe.sh and build-deb.sh skip what setup already made from the same inputs.
  beforeAll(() => {
    requireRootAndBuild();
    for (const arch of ['x64', 'arm64']) sh('bash', ['image/build-exe.sh', arch]);
    sh('bash', ['image/build-deb.sh', 'x64']);
    sh('bash', ['image/build-deb.sh', 'arm64']);
  }, 600_000);

  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    await Promise.all(agents.map((a) => a.exited()));
    seg.destroy();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('the x64 executable is Node 24 with its addons inside, and runs the demo', async () => {
    const env = { ...process.env, STARLING_NATIVE_DIR: join(scratch, 'cache-x64') };
    const version = JSON.parse(sh(X64, ['version', '--json'], { cwd: scratch, env }));
    expect(version).toMatchObject({ arch: 'x64', executable: true, pgm: true });
    expect(version.node).toMatch(/^24\./);
    expect(version.execArgv).toEqual(JSON.parse(readFileSync(join(ROOT_DIR, 'image/sea-flags.json'), 'utf8')).execArgv);
    expect(version.native[0]).toMatch(new RegExp(`^zeromq: zeromq-system from ${scratch}/cache-x64/native/zeromq-system-[0-9a-f]{16}\\.node$`));
    // Run from a directory without node_modules: everything comes from the executable.
    const out = sh(X64, ['demo', '--seconds', '8', '--web', '127.0.0.1:0', '--port', String(beaconPort()), '--mqtt', `127.0.0.1:${await freeTcpPort()}`, '--json'], { cwd: scratch, env });
    checkDemo(out);
  }, 120_000);

  it('the x64 executable caches each command\'s compiled code after its first start, uses it on the next, and writes a refused one again', () => {
    const cache = join(scratch, 'cache-code');
    const env = { ...process.env, STARLING_NATIVE_DIR: cache };
    const run = () => JSON.parse(sh(X64, ['version', '--json'], { cwd: scratch, env })) as { codeCache: string };
    const cached = () => readdirSync(join(cache, 'native')).filter((f) => /^code-[0-9a-f]{16}-version\.bin$/.test(f));
    // First start: the build's code (top level only); on its way out it writes its own.
    expect(run().codeCache).toBe('base');
    expect(cached()).toHaveLength(1);
    const file = join(cache, 'native', cached()[0]!);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(file).size).toBeGreaterThan(10_000);
    expect(run().codeCache).toBe('own');
    // A cache V8 will not take (another Node's, or damaged): compiled as usual, and replaced.
    writeFileSync(file, Buffer.alloc(statSync(file).size, 7));
    expect(run().codeCache).toBe('own, refused');
    expect(run().codeCache).toBe('own');
    // `run` keeps its own (after 10 s up; not checked here), and a command's never serves another's.
    expect(readdirSync(join(cache, 'native')).filter((f) => f.startsWith('code-'))).toEqual([cached()[0]]);
  }, 60_000);

  it('the arm64 executable, under qemu, joins a mesh with an x64 node and publishes samples the x64 node receives', async () => {
    const version = JSON.parse(sh(QEMU_ARM64[0]!, [...QEMU_ARM64.slice(1), 'version', '--json'], { cwd: scratch }));
    expect(version).toMatchObject({ arch: 'arm64', executable: true, pgm: true });

    seg.create(2);
    const config = join(scratch, 'arm.yaml');
    writeFileSync(config, `simulate: true
node: { name: pi-arm64, iface: eth0 }
security: { mode: none }
telemetry: { prefix: arm/ }
sensors:
  - { platform: sim, name: air, waveform: ramp, min: 0, max: 100, period: 20s, unit: "°C", interval: 250ms }
gpio:
  - { name: relay, pin: GPIO17, mode: output, initial: 1 }
`);
    const tail = new Agent('x64 tail', seg.hosts[1]!, [X64], ['arm/', '--transport', 'tcp', '--json'], ['tail']);
    const device = new Agent('arm64 device', seg.hosts[0]!, QEMU_ARM64, ['--config', config], ['run']);
    agents.push(tail, device);
    // Emulated, the arm64 node starts in seconds rather than milliseconds.
    await tail.waitFor((e) => e.topic === 'arm/air' && Number(e.seq) >= 10, 60_000, 'ten samples of arm/air from the arm64 device');
    const air = tail.events.filter((e) => e.topic === 'arm/air');
    const seqs = air.map((e) => Number(e.seq));
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(air[0]).toMatchObject({ unit: '°C', status: 0 });
    expect(tail.events.find((e) => e.topic === 'arm/relay')).toMatchObject({ values: [1] });
    expect(tail.events.filter((e) => e.event === 'GAP')).toEqual([]);
    expect(tail.stderr).toMatch(/pi-arm64 publishes at tcp:\/\/10\.231\.0\.1:\d+/);
  }, 120_000);

  it('the .deb installs into a Debian root with its files, user and unit; systemd-analyze verify passes', () => {
    const base = sh('bash', ['image/debian-root.sh']).trim();
    const root = join(scratch, 'debian');
    sh('cp', ['-a', base, root]);   // device nodes and ownership as they are
    cpSync(DEB, join(root, 'tmp/starling.deb'));
    sh('chroot', [root, 'dpkg', '-i', '/tmp/starling.deb']);

    expect(sh('chroot', [root, 'dpkg-query', '-W', '-f', '${Status}', 'starling'])).toBe('install ok installed');
    const files = sh('chroot', [root, 'dpkg', '-L', 'starling']).split('\n');
    for (const f of ['/usr/bin/starling', '/lib/systemd/system/starling.service', '/etc/starling/starling.yaml', '/usr/share/starling/starling.yaml',
      '/usr/share/dbus-1/system.d/org.starling.Supervisor1.conf', '/usr/lib/sysusers.d/starling.conf']) {
      expect(files).toContain(f);
      expect(existsSync(join(root, f))).toBe(true);
    }
    expect(statSync(join(root, 'usr/bin/starling')).mode & 0o777).toBe(0o755);
    expect(sh('chroot', [root, 'dpkg-query', '-W', '-f', '${Conffiles}', 'starling'])).toMatch(/\/etc\/starling\/starling\.yaml [0-9a-f]{32}/);
    // The system user, with no login, and the unit enabled at boot.
    expect(sh('chroot', [root, 'getent', 'passwd', 'starling'])).toMatch(/^starling:x:\d+:\d+:[^:]*:\/var\/lib\/starling:\/usr\/sbin\/nologin$/m);
    expect(readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants/starling.service'))).toBe('/lib/systemd/system/starling.service');
    // The executable runs in the Debian root (no libzmq5 there: it falls back to its built-in libzmq, and says so)
    // and the default configuration is valid.
    const version = JSON.parse(sh('chroot', [root, '/usr/bin/starling', 'version', '--json'], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root' } }));
    expect(version).toMatchObject({ executable: true, pgm: false });
    expect(version.native.join('\n')).toMatch(/skipped zeromq-system: libzmq\.so\.5: cannot open shared object file/);
    expect(sh('chroot', [root, '/usr/bin/starling', 'check', '/etc/starling/starling.yaml'], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root' } })).toMatch(/ok \(3 sensor/);

    const unit = readFileSync(join(root, 'lib/systemd/system/starling.service'), 'utf8');
    for (const line of ['Type=notify', 'NotifyAccess=main', 'WatchdogSec=30s', 'Restart=on-failure', 'User=starling', 'ProtectSystem=strict', 'NoNewPrivileges=yes']) {
      expect(unit).toContain(line);
    }
    // Verify against the installed root: the unit's dependencies, its ExecStart binary, its directives.
    // The arm64 package (for the Pi) holds the arm64 executable under the same names.
    const arm = DEB.replace('_amd64.deb', '_arm64.deb');
    expect(sh('dpkg-deb', ['-f', arm, 'Architecture', 'Depends']).trim()).toBe('Architecture: arm64\nDepends: libc6 (>= 2.28), libstdc++6, passwd');
    const armRoot = join(scratch, 'arm64-deb');
    sh('dpkg-deb', ['-x', arm, armRoot]);
    expect(readFileSync(join(armRoot, 'usr/bin/starling')).readUInt16LE(18)).toBe(183); // ELF e_machine: EM_AARCH64
    expect(readFileSync(join(armRoot, 'lib/systemd/system/starling.service'), 'utf8')).toBe(unit);

    const verify = spawnSync('systemd-analyze', ['verify', `--root=${root}`, '/lib/systemd/system/starling.service'], { encoding: 'utf8' });
    expect({ status: verify.status, stdout: verify.stdout, stderr: verify.stderr }).toEqual({ status: 0, stdout: '', stderr: '' });
  }, 300_000);
});
