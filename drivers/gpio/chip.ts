/**
 * Resolving a configured pin to its sysfs GPIO number through the gpiochips' base and label — never a
 * hard-coded offset. Raspberry Pi kernels 6.6+ moved the bases (512 on a Pi 4, 571 on a Pi 5's RP1, …),
 * which broke every program that added a fixed number.
 *
 *   GPIO17              line 17 of the SoC's header chip (label pinctrl-rp1, pinctrl-bcm2711 or pinctrl-bcm2835)
 *   pinctrl-rp1:17      line 17 of the chip with that label
 *   gpiochip512:17      line 17 of the chip whose sysfs directory is gpiochip512
 */
import { readdir, readFile } from 'node:fs/promises';

export interface Chip {
  dir: string;
  label: string;
  base: number;
  ngpio: number;
}

export class PinError extends Error {
  override name = 'PinError';
}

/** The header chips of Raspberry Pi boards, in order of preference (a Pi 5 also has bcm2712 chips). */
const HEADER_LABELS = ['pinctrl-rp1', 'pinctrl-bcm2711', 'pinctrl-bcm2835'];

export async function listChips(sysfs: string): Promise<Chip[]> {
  const dir = `${sysfs}/class/gpio`;
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (e) {
    throw new PinError(`cannot list ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (is the sysfs GPIO interface enabled?)`);
  }
  const chips: Chip[] = [];
  for (const e of entries.filter((n) => n.startsWith('gpiochip')).sort()) {
    const read = async (f: string) => (await readFile(`${dir}/${e}/${f}`, 'utf8')).trim();
    try {
      chips.push({ dir: e, label: await read('label'), base: Number(await read('base')), ngpio: Number(await read('ngpio')) });
    } catch {
      // not a readable chip: skip it
    }
  }
  return chips;
}

/** Returns the sysfs GPIO number of `pin`, or throws a {@link PinError} that lists the chips found. */
export async function resolvePin(pin: string, sysfs: string): Promise<{ number: number; chip: Chip; line: number }> {
  const chips = await listChips(sysfs);
  const known = chips.map((c) => `${c.dir} (${c.label}, base ${c.base}, ${c.ngpio} lines)`).join('; ') || 'none';
  let chip: Chip | undefined;
  let line: number;
  const header = /^GPIO(\d+)$/.exec(pin);
  if (header) {
    line = Number(header[1]);
    chip = HEADER_LABELS.map((l) => chips.find((c) => c.label === l)).find(Boolean) ?? (chips.length === 1 ? chips[0] : undefined);
    if (!chip) throw new PinError(`${pin}: no Raspberry Pi header chip (${HEADER_LABELS.join(', ')}) among the gpiochips: ${known}; name one as CHIP:LINE`);
  } else {
    const m = /^(.+):(\d+)$/.exec(pin);
    if (!m) throw new PinError(`${pin}: expected GPIO<n> or CHIP:LINE`);
    line = Number(m[2]);
    chip = chips.find((c) => c.dir === m[1] || c.label === m[1]);
    if (!chip) throw new PinError(`${pin}: no gpiochip named or labelled '${m[1]}'; found: ${known}`);
  }
  if (line >= chip.ngpio) throw new PinError(`${pin}: ${chip.label} has lines 0 to ${chip.ngpio - 1}`);
  return { number: chip.base + line, chip, line };
}
