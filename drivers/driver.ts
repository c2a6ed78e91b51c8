/**
 * The contract every driver meets, sensors and GPIO lines alike. A driver's constructor only stores its
 * configuration; `open` acquires the device, `close` releases it. Nothing a device does throws out of `read`:
 * a failure comes back as a reading with a non-zero `status` and NaN values, and the sampler retries it.
 */

/** Why a reading has no value. 0 is a good reading. */
export const Status = {
  OK: 0,
  /** The device did not answer or the read failed (I/O error). */
  READ_ERROR: 1,
  /** The device is not there (missing at start, or vanished). */
  MISSING: 2,
  /** The device answered with a bad checksum (1-Wire CRC) every time it was retried. */
  CRC: 3,
  /** The device answered with something that is not a number we understand. */
  BAD_DATA: 4,
  /** A simulated twin injected this fault. */
  INJECTED: 5,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

export const STATUS_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k.toLowerCase()]));

export interface Reading {
  values: number[];
  status: StatusCode;
  /** What went wrong, for logs and `starling sensors`, when status is not OK. */
  error?: string;
}

export interface Driver {
  /** The configured name (becomes the topic). */
  readonly name: string;
  /** The platform: ds18b20, iio, hwmon, thermal, system, sim, gpio. */
  readonly kind: string;
  /** Unit of the values, e.g. °C, %, kPa; '' for none. */
  readonly unit: string;
  /** Acquires the device. Resolves with a reading-like status: a missing device is reported, not thrown. */
  open(): Promise<Reading>;
  /** One reading. Never rejects. */
  read(): Promise<Reading>;
  /** Sets an output (GPIO outputs only). */
  write?(value: number): Promise<void>;
  /** Calls `listener` on each change (GPIO inputs); returns the function that stops watching. */
  watch?(listener: (r: Reading) => void): () => void;
  close(): Promise<void>;
}

export const ok = (...values: number[]): Reading => ({ values, status: Status.OK });
export const fault = (status: StatusCode, error: string, arity = 1): Reading => ({ values: Array<number>(arity).fill(NaN), status, error });
