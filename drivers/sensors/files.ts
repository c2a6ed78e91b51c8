// Reading the small text files the kernel exposes, with errors turned into readings.
import { readFile, readdir } from 'node:fs/promises';
import { fault, Status, type Reading } from '../driver.ts';

/** Reads a sysfs/procfs file as trimmed text; rejects with the errno error. */
export async function readText(path: string): Promise<string> {
  return (await readFile(path, 'utf8')).trim();
}

/** A failed read as a reading: ENOENT/ENODEV mean the device is gone, anything else an I/O error. */
export function readFailure(e: unknown, what: string): Reading {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENXIO') return fault(Status.MISSING, `${what} is missing (${code})`);
  return fault(Status.READ_ERROR, `${what}: ${code ?? (e as Error).message}`);
}

/** Parses a number the kernel wrote; NaN if it is not one. */
export function parseNumber(text: string): number {
  return /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
}

/**
 * Finds a device directory under `dir` either by its entry name (`iio:device0`, `hwmon1`) or by the content of
 * its `name`-like file (`bme280`, `cpu_thermal`). Undefined when none matches.
 */
export async function findByName(dir: string, wanted: string, nameFile: string): Promise<string | undefined> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return undefined;
  }
  if (entries.includes(wanted)) return `${dir}/${wanted}`;
  for (const e of entries.sort()) {
    try {
      if ((await readText(`${dir}/${e}/${nameFile}`)) === wanted) return `${dir}/${e}`;
    } catch {
      // not a device with that file
    }
  }
  return undefined;
}
