/**
 * The board image's figures, from one run: its size (compressed, raw, used), and from a boot in the emulated
 * board (qemu-system-aarch64 -M virt, TCG: a relative figure, several times slower than a Pi 4) the boot to
 * `starling.service` active, the start to READY=1, Starling's idle RSS under the guest's systemd, the
 * watchdog's restart, and the bytes written to the virtual disk per hour with the broker reachable and away.
 *
 *   node dist/bench/board.mjs [--window SEC] [--json]       (root; image/setup.sh --all first)
 *
 * The boot and the guest-side figures come from the boot test itself (test/board/boot.test.ts), run here with
 * a write window of --window seconds (600 by default, the test's own default is 120): it leaves them in
 * test-artifacts/board/figures.json, which this script reads and prints beside the aims.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values: opts } = parseArgs({ options: { window: { type: 'string' }, json: { type: 'boolean' } } });
const WINDOW_S = Number(opts.window ?? 600);
const img = join(root, 'dist/starling-arm64.img');
const mb = (bytes: number) => Math.round((bytes / 1e6) * 10) / 10;

execFileSync('bash', ['image/build-image.sh', 'arm64'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
const compressed = statSync(`${img}.xz`).size;
const raw = statSync(img).size;
// Used: the root file system's blocks in use (dumpe2fs of partition 2) plus the FAT partition's files.
const part = `${img}.root.tmp`;
execFileSync('dd', [`if=${img}`, `of=${part}`, 'bs=1M', 'skip=260', 'status=none', 'conv=sparse']);
const ext4 = spawnSync('dumpe2fs', ['-h', part], { encoding: 'utf8' }).stdout;
rmSync(part);
const blocks = Number(/Block count:\s+(\d+)/.exec(ext4)?.[1]);
const free = Number(/Free blocks:\s+(\d+)/.exec(ext4)?.[1]);
const bsize = Number(/Block size:\s+(\d+)/.exec(ext4)?.[1]);
const fatUsed = execFileSync('mdu', ['-s', '-i', `${img}@@${4 * 1024 * 1024}`, '::/'], { encoding: 'utf8' });
const fatBytes = Number(/(\d+)/.exec(fatUsed.trim().split(/\s+/).slice(-1)[0] ?? '0')?.[1] ?? 0) * 512;
const used = (blocks - free) * bsize + fatBytes;

const test = spawnSync('npx', ['vitest', 'run', 'test/board'], {
  cwd: root, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, STARLING_BOARD_WRITE_SECONDS: String(WINDOW_S) },
});
const f = JSON.parse(readFileSync(join(root, 'test-artifacts/board/figures.json'), 'utf8')) as Record<string, number | string>;
if (test.status !== 0) console.error(`the boot test failed (see test-artifacts/board/); its figures so far follow`);

const rows: [string, string, string][] = [
  ['image, xz-compressed', `${mb(compressed)} MB`, `aim < 200 MB (${(compressed / 200e6).toFixed(2)}×); Raspberry Pi OS Lite is about 500 MB`],
  ['image, raw (dd to a card of at least this)', `${mb(raw)} MB`, 'grows to fill the card on first boot'],
  ['image, used (root blocks + boot files)', `${mb(used)} MB`, `${((used / raw) * 100).toFixed(0)} % of raw`],
  ['boot to starling.service active (TCG)', `${f.bootToActiveS} s`, `kernel + userspace: ${String(f.systemdAnalyzeTime).replace('Startup finished in ', '')}`],
  ['starling start to READY=1 (TCG)', `${f.startToReadyS} s`, 'Type=notify'],
  ['Starling idle RSS under systemd', `${mb(Number(f.rssKiB) * 1024)} MB`, `unit memory (cgroup) ${mb(Number(f.unitMemoryKiB) * 1024)} MB`],
  ['SIGSTOP → restarted by the watchdog', `${f.watchdogRestartS} s`, 'WatchdogSec=30s + RestartSec 2 s + start'],
  [`disk writes per hour, broker reachable (${WINDOW_S} s)`, `${mb(Number(f.writesPerHourBrokerUp))} MB/h`, `aim < 1 MB/h (${(Number(f.writesPerHourBrokerUp) / 1e6).toFixed(2)}×)`],
  [`disk writes per hour, broker away (${WINDOW_S} s)`, `${mb(Number(f.writesPerHourBrokerAway))} MB/h`, `${Number(f.writesPerHourBrokerUp) > 0 ? `${(Number(f.writesPerHourBrokerAway) / Number(f.writesPerHourBrokerUp)).toFixed(1)}× reachable` : 'reachable wrote nothing'}; the MQTT spool`],
  ['systemd-analyze security', String(f.exposure), 'exposure, 0 (best) … 10'],
];
if (opts.json) console.log(JSON.stringify({ compressed, raw, used, ...f }));
else {
  const w = Math.max(...rows.map((r) => r[0].length));
  console.log(`| ${'figure'.padEnd(w)} | value | comparison |\n|${'-'.repeat(w + 2)}|---|---|`);
  for (const [a, b, c] of rows) console.log(`| ${a.padEnd(w)} | ${b} | ${c} |`);
}
process.exit(test.status === 0 ? 0 : 1);
