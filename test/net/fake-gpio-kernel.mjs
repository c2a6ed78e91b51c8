// Plays the kernel's sysfs GPIO driver on a tmpfs: a number written to export creates gpioN with direction,
// value (0), edge and active_low files; one written to unexport removes it. The kernel also drives a line low
// when "out" is written to its direction; a process beside the client cannot do that atomically (its write of 0
// could land after the client's own value, which is what made the onoff test flaky), so it does not try: every
// line here starts at 0 and keeps what the client writes. Used inside a private mount namespace only
// (test/net/onoff.test.ts, shutdown.test.ts).
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';

const root = process.argv[2];
const take = (file) => {
  const n = readFileSync(`${root}/${file}`, 'utf8').trim();
  // Truncate only what was taken: emptying the file every poll could wipe a number written between the read
  // and the truncate (a busy machine widens that window until an export is lost).
  if (n) writeFileSync(`${root}/${file}`, '');
  return n;
};
function exported(n) {
  const dir = `${root}/gpio${n}`;
  if (existsSync(dir)) return;
  // Made whole, then renamed into place, as the kernel's gpioN appears at once: a client that sees the folder
  // must not find a file still missing, nor have its first write overwritten by our initial values.
  const tmp = `${root}/.gpio${n}.new`;
  mkdirSync(tmp);
  for (const [f, v] of [['direction', 'in'], ['value', '0'], ['edge', 'none'], ['active_low', '0']]) writeFileSync(`${tmp}/${f}`, v + '\n');
  renameSync(tmp, dir);
}
// Polled, not watched: inotify merges the truncate and the write of one `echo N > export` into one event that
// can arrive before the number is there.
setInterval(() => {
  const n = take('export');
  if (n) exported(n);
  const u = take('unexport');
  if (u) {
    // What the line was left at, for tests that look after the driver let go of it.
    try {
      writeFileSync(`${root}/.last-gpio${u}`, readFileSync(`${root}/gpio${u}/value`));
    } catch { /* never exported */ }
    rmSync(`${root}/gpio${u}`, { recursive: true, force: true });
  }
}, 5);
// Go when the shell that started us goes (a failed test must not leave us behind).
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 200);
process.stdout.write('ready\n');
