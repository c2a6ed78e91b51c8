/**
 * The sample model and the batch encoding of FORMAT.md (version 1): samples of one topic packed into one
 * ZeroMQ frame, 5 + 8 × arity bytes each after a 35-byte header and the unit.
 */

/** One reading of one topic. */
export interface Sample {
  topic: string;
  /** Milliseconds since the Unix epoch (fractions allowed; µs precision on the wire). */
  ts: number;
  /** One or more values; NaN where `status` is not 0. */
  values: number[];
  unit: string;
  /** 0 for a good reading; otherwise a device status code (see drivers). */
  status: number;
  /** Sequence number per (publisher, topic), modulo 2^32. */
  seq: number;
  /** The publisher's id, 32 hex digits. */
  publisher: string;
}

export class TelemetryFormatError extends Error {
  override name = 'TelemetryFormatError';
}

export const FORMAT_VERSION = 1;
export const HEADER_BYTES = 35;
export const MAX_ARITY = 32;
/** A subscriber's sync token is subscribed as this prefix + the token (FORMAT.md, "Snapshot"); no topic starts with NUL. */
export const SYNC_PREFIX = '\u0000sync/';
const MAGIC = 0x5354; // "ST"

export const sampleBytes = (arity: number): number => 5 + 8 * arity;

/**
 * Builds batches into one preallocated buffer: {@link begin}, {@link add} until it returns false or the caller
 * decides to flush, then {@link finish}, which returns a copy of exactly the bytes used (the buffer is reused).
 * Cost: no allocation per sample; one copy per batch.
 */
export class BatchWriter {
  private readonly buf: Buffer;
  private at = 0;
  private countAt = 0;
  private _count = 0;
  private _arity = 0;
  private _base = 0;
  private _unit = '';
  private _topic = '';

  /** `capacity` bytes, at least enough for a header, a 255-byte unit and one sample of the largest arity. */
  private readonly view: DataView;

  constructor(readonly capacity: number) {
    const least = HEADER_BYTES + 255 + sampleBytes(MAX_ARITY);
    if (capacity < least) throw new RangeError(`batch capacity ${capacity} is below the minimum of ${least} bytes`);
    this.buf = Buffer.alloc(capacity);
    // Sample writes go through a DataView: the JIT inlines its setters (Buffer's write* check their arguments).
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, capacity);
  }

  get count(): number { return this._count; }
  get arity(): number { return this._arity; }
  get unit(): string { return this._unit; }
  get topic(): string { return this._topic; }
  get base(): number { return this._base; }
  get bytes(): number { return this.at; }

  /** Starts a batch. `publisher` is 16 bytes; `first` the sequence of its first sample. */
  begin(topic: string, publisher: Buffer, first: number, base: number, unit: string, arity: number): void {
    if (arity < 1 || arity > MAX_ARITY) throw new TelemetryFormatError(`arity ${arity} is outside 1..${MAX_ARITY}`);
    const b = this.buf;
    b.writeUInt16BE(MAGIC, 0);
    b.writeUInt8(FORMAT_VERSION, 2);
    b.writeUInt8(arity, 3);
    publisher.copy(b, 4, 0, 16);
    b.writeUInt32BE(first >>> 0, 20);
    this.countAt = 24;
    b.writeDoubleBE(base, 26);
    if (Buffer.byteLength(unit) > 255) throw new TelemetryFormatError(`unit '${unit.slice(0, 20)}…' is over 255 bytes`);
    const n = b.write(unit, 35, 'utf8');
    b.writeUInt8(n, 34);
    this.at = HEADER_BYTES + n;
    this._count = 0;
    this._arity = arity;
    this._base = base;
    this._unit = unit;
    this._topic = topic;
  }

  /** True if one more sample fits (by bytes and by the 65535 count limit). */
  fits(): boolean {
    return this._count < 0xffff && this.at + sampleBytes(this._arity) <= this.capacity;
  }

  /**
   * Appends one sample; false (nothing written) if it does not fit or its time is not within
   * [base, base + 71 min] (the u32 µs offset) — then flush and begin again.
   */
  add(ts: number, status: number, values: ArrayLike<number>): boolean {
    const at = this.reserve(ts, status);
    if (at < 0) return false;
    for (let k = 0; k < this._arity; k++) this.view.setFloat64(at + 8 * k, values[k] ?? NaN);
    return true;
  }

  /** {@link add} for a one-value sample, without an array. */
  add1(ts: number, status: number, value: number): boolean {
    const at = this.reserve(ts, status);
    if (at < 0) return false;
    this.view.setFloat64(at, value);
    for (let k = 1; k < this._arity; k++) this.view.setFloat64(at + 8 * k, NaN);
    return true;
  }

  /** Writes a sample's time and status; returns where its values go, or -1 if it does not fit. */
  private reserve(ts: number, status: number): number {
    const dt = Math.round((ts - this._base) * 1000);
    const at = this.at;
    const end = at + 5 + 8 * this._arity;
    if (end > this.capacity || this._count === 0xffff || !(dt >= 0 && dt <= 0xffffffff)) return -1;
    this.view.setUint32(at, dt);
    this.view.setUint8(at + 4, status & 0xff);
    this.at = end;
    this._count++;
    return at + 5;
  }

  /**
   * The finished batch frame (a copy in memory of its own, not a slice of Node's shared pool: the publisher
   * keeps each topic's last frame for late joiners, and a kept slice would keep its whole pool); the writer is
   * empty afterwards.
   */
  finish(): Buffer {
    this.buf.writeUInt16BE(this._count, this.countAt);
    const out = Buffer.allocUnsafeSlow(this.at);
    this.buf.copy(out, 0, 0, this.at);
    this._count = 0;
    this.at = 0;
    return out;
  }
}

/**
 * A received batch, read in place: accessors decode one field each, nothing is copied or allocated per sample.
 * {@link samples} builds Sample objects when convenience matters more than speed.
 */
export class Batch {
  readonly arity: number;
  readonly publisher: string;
  readonly first: number;
  readonly count: number;
  readonly base: number;
  readonly unit: string;
  private readonly start: number;
  private readonly stride: number;

  /** Validates the whole frame up front; throws {@link TelemetryFormatError} saying what is wrong. */
  constructor(readonly topic: string, readonly frame: Buffer) {
    if (frame.length < HEADER_BYTES) throw new TelemetryFormatError(`batch of ${frame.length} bytes is shorter than the ${HEADER_BYTES}-byte header`);
    if (frame.readUInt16BE(0) !== MAGIC) throw new TelemetryFormatError('batch does not start with "ST"');
    const version = frame.readUInt8(2);
    if (version !== FORMAT_VERSION) throw new TelemetryFormatError(`batch version ${version} (this reader knows ${FORMAT_VERSION})`);
    this.arity = frame.readUInt8(3);
    if (this.arity < 1 || this.arity > MAX_ARITY) throw new TelemetryFormatError(`batch arity ${this.arity} is outside 1..${MAX_ARITY}`);
    this.publisher = frame.toString('hex', 4, 20).toUpperCase();
    this.first = frame.readUInt32BE(20);
    this.count = frame.readUInt16BE(24);
    this.base = frame.readDoubleBE(26);
    const unitLength = frame.readUInt8(34);
    this.start = HEADER_BYTES + unitLength;
    this.stride = sampleBytes(this.arity);
    const want = this.start + this.count * this.stride;
    if (frame.length !== want) throw new TelemetryFormatError(`batch is ${frame.length} bytes; its header says ${want}`);
    if (this.count === 0) throw new TelemetryFormatError('batch holds no samples');
    this.unit = frame.toString('utf8', HEADER_BYTES, this.start);
  }

  /** Sequence number of sample i. */
  seq(i: number): number { return (this.first + i) >>> 0; }
  /** Time of sample i, ms since the epoch. */
  ts(i: number): number { return this.base + this.frame.readUInt32BE(this.start + i * this.stride) / 1000; }
  status(i: number): number { return this.frame.readUInt8(this.start + i * this.stride + 4); }
  /** Value k (default 0) of sample i. */
  value(i: number, k = 0): number { return this.frame.readDoubleBE(this.start + i * this.stride + 5 + 8 * k); }

  /** Sample i as an object. */
  sample(i: number): Sample {
    const values: number[] = [];
    for (let k = 0; k < this.arity; k++) values.push(this.value(i, k));
    return { topic: this.topic, ts: this.ts(i), values, unit: this.unit, status: this.status(i), seq: this.seq(i), publisher: this.publisher };
  }

  /** Every sample as an object (allocates; for tools and tests). */
  samples(): Sample[] {
    const out: Sample[] = [];
    for (let i = 0; i < this.count; i++) out.push(this.sample(i));
    return out;
  }
}

/** Encodes a single sample as a one-sample batch (snapshots, `starling publish`). */
export function encodeOne(writer: BatchWriter, publisher: Buffer, s: Omit<Sample, 'publisher'>): Buffer {
  writer.begin(s.topic, publisher, s.seq, s.ts, s.unit, s.values.length);
  writer.add(s.ts, s.status, s.values);
  return writer.finish();
}
