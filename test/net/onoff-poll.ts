// Run inside the mount namespace of test/net/onoff.test.ts (bundled there into dist/): an input line on
// onoff whose edges cannot be watched (tmpfs) still reports changes, by polling.
import { writeFileSync } from 'node:fs';
import { GpioDriver } from '../../drivers/gpio/gpio.ts';

const [valueFile] = process.argv.slice(2);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const d = new GpioDriver({ name: 'button', pin: 'GPIO27', mode: 'input', pull: 'none', inverted: false, debounce: 0, initial: 0 }, '/sys', undefined, true);
const opened = await d.open();
if (opened.status !== 0) throw new Error(opened.error);
const seen: number[] = [];
d.watch((r) => seen.push(r.values[0]!));
writeFileSync(valueFile!, '1\n');
await sleep(150);
writeFileSync(valueFile!, '0\n');
await sleep(150);
process.stdout.write(`poll_edges=${JSON.stringify(seen)}\n`);
await d.close();
