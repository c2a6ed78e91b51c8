/**
 * Writing a file so that a crash or a power cut leaves either the old one or the whole new one under its name:
 * a temporary name of this process's, the data synced to disk, then a rename over the old.
 */
import { closeSync, fsyncSync, openSync, renameSync, writeFileSync } from 'node:fs';

/** Writes `data` to `path` durably (see above) with `mode`; throws what the disk said, the temporary file then left behind. */
export function writeDurable(path: string, data: string | Uint8Array, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
