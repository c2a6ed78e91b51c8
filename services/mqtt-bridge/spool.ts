/**
 * Store-and-forward on disk, bounded: messages that cannot go to the broker now wait here, oldest first, and
 * survive a restart. Segment files of length-prefixed, CRC-checked records (`<dir>/<n>.seg`, up to 1 MiB
 * each); a cursor file says how far the head segment was consumed. When the spool passes `maxBytes`, the
 * oldest segment is deleted and its unsent messages are counted as dropped — it never grows without bound.
 *
 * Writes are batched for SD cards: appends made in one turn of the event loop go to the file in one write,
 * at the end of that turn (so a kill -9 loses at most what was appended in the current turn; the kernel keeps
 * what was written). `fsync` says how often the file is forced to the card: 'always' (after each batch),
 * 'interval' (once a second, the default), or 'never' (left to the kernel; a power cut may lose the last
 * seconds).
 *
 * Delivery is at least once: the cursor is saved at most once a second (SD cards wear), so after a crash up to
 * a second's worth of already-sent messages is sent again (MQTT QoS 1 allows duplicates). A torn record at
 * the end of the last segment (power cut mid-write) is detected by its CRC, counted and skipped.
 *
 * Record: u32 length of the rest, u32 CRC-32 of the rest, u8 qos, u8 retain, u16 topic length, topic, payload.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
// zlib is loaded on first use: only a bridge with a spool needs it.
const crc32 = (b: Buffer): number => (process.getBuiltinModule('node:zlib') as typeof import('node:zlib')).crc32(b);

export interface SpooledMessage {
  topic: string;
  payload: Buffer;
  qos: 0 | 1;
  retain: boolean;
}

export interface SpoolStats {
  /** Messages waiting. */
  queued: number;
  /** Bytes on disk. */
  bytes: number;
  appended: number;
  /** Messages lost because the spool was full (the oldest segment went). */
  dropped: number;
  /** Records found damaged on start (a torn last write) and skipped. */
  corrupt: number;
}

const SEGMENT_BYTES = 1024 * 1024;

interface Segment {
  n: number;
  path: string;
  /** Byte offsets of each record's start, and the end offset after the last. */
  records: number[];
  end: number;
}

export class Spool {
  private segments: Segment[] = [];
  /** Records of the head segment already consumed. */
  private headIndex = 0;
  private fd: number | undefined;
  private cursorDirty = false;
  private cursorTimer: NodeJS.Timeout | undefined;
  private readonly counters = { appended: 0, dropped: 0, corrupt: 0 };

  private pending: Buffer[] = [];
  private readonly readers = new Map<string, number>();
  private waiting = 0;
  private flushScheduled = false;
  private fsyncTimer: NodeJS.Timeout | undefined;
  private unsynced = false;

  constructor(readonly dir: string, readonly maxBytes = 64 * 1024 * 1024, readonly fsync: 'always' | 'interval' | 'never' = 'interval') {}

  /** Reads what is on disk (creating the folder if needed). */
  open(): void {
    mkdirSync(this.dir, { recursive: true });
    const numbers = readdirSync(this.dir).filter((f) => /^\d+\.seg$/.test(f)).map((f) => Number(f.slice(0, -4))).sort((a, b) => a - b);
    this.segments = numbers.map((n) => this.scan(n));
    const tail = this.segments[this.segments.length - 1];
    if (tail) this.fd = openSync(tail.path, 'a');
    const cursor = this.readCursor();
    // The cursor may point past the last record (all delivered); never before the first.
    if (cursor && this.segments[0]?.n === cursor.segment) this.headIndex = Math.max(0, Math.min(cursor.index, this.segments[0].records.length));
    this.dropConsumedHead();
    this.waiting = this.segments.reduce((n, seg) => n + seg.records.length, 0) - this.headIndex;
  }

  /** Appends one message (a synchronous write: it is on disk when this returns, short of an fsync). */
  append(m: SpooledMessage): void {
    const topic = Buffer.from(m.topic);
    const body = Buffer.allocUnsafe(4 + topic.length + m.payload.length);
    body.writeUInt8(m.qos, 0);
    body.writeUInt8(m.retain ? 1 : 0, 1);
    body.writeUInt16BE(topic.length, 2);
    topic.copy(body, 4);
    m.payload.copy(body, 4 + topic.length);
    const head = Buffer.allocUnsafe(8);
    head.writeUInt32BE(body.length, 0);
    head.writeUInt32BE(crc32(body), 4);
    let tail = this.segments[this.segments.length - 1];
    if (!tail || tail.end + 8 + body.length > SEGMENT_BYTES) {
      this.flush(); // what is pending belongs to the old segment
      tail = this.newSegment();
    }
    this.pending.push(head, body);
    tail.records.push(tail.end);
    tail.end += 8 + body.length;
    this.counters.appended++;
    this.waiting++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    this.enforceBound();
  }

  /** Writes what was appended in this turn in one write, and applies the fsync policy. */
  flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0 || this.fd === undefined) return;
    writeSync(this.fd, Buffer.concat(this.pending));
    this.pending = [];
    if (this.fsync === 'always') fsyncSync(this.fd);
    else if (this.fsync === 'interval') {
      this.unsynced = true;
      this.fsyncTimer ??= setTimeout(() => {
        this.fsyncTimer = undefined;
        if (this.unsynced && this.fd !== undefined) fsyncSync(this.fd);
        this.unsynced = false;
      }, 1000);
    }
  }

  /** The waiting message `offset` places after the oldest (0: the oldest), or undefined. */
  peek(offset = 0): SpooledMessage | undefined {
    this.flush();
    let i = this.headIndex + offset;
    for (const seg of this.segments) {
      if (i < seg.records.length) {
        const at = seg.records[i]!;
        const length = (seg.records[i + 1] ?? seg.end) - at;
        const data = Buffer.allocUnsafe(length);
        readSync(this.reader(seg), data, 0, length, at);
        return decode(data.subarray(8));
      }
      i -= seg.records.length;
    }
    return undefined;
  }

  /** A read descriptor for a segment, kept open while the segment lives. */
  private reader(seg: Segment): number {
    let fd = this.readers.get(seg.path);
    if (fd === undefined) {
      fd = openSync(seg.path, 'r');
      this.readers.set(seg.path, fd);
    }
    return fd;
  }

  private unlink(seg: Segment): void {
    const fd = this.readers.get(seg.path);
    if (fd !== undefined) closeSync(fd);
    this.readers.delete(seg.path);
    unlinkSync(seg.path);
  }

  /** Marks the oldest message as delivered. */
  ack(): void {
    const seg = this.segments[0];
    if (!seg || this.headIndex >= seg.records.length) return;
    this.headIndex++;
    this.waiting--;
    this.dropConsumedHead();
    this.cursorDirty = true;
    this.cursorTimer ??= setTimeout(() => this.saveCursor(), 1000);
  }

  /** Messages waiting. O(1): the bridge asks on every sample. */
  get length(): number {
    return this.waiting;
  }

  stats(): SpoolStats {
    return { queued: this.length, bytes: this.segments.reduce((n, s) => n + s.end, 0), ...this.counters };
  }

  /** Saves the cursor and closes the file. */
  close(): void {
    this.flush();
    clearTimeout(this.fsyncTimer);
    this.fsyncTimer = undefined;
    this.saveCursor();
    for (const fd of this.readers.values()) closeSync(fd);
    this.readers.clear();
    if (this.fd !== undefined) {
      fsyncSync(this.fd);
      closeSync(this.fd);
    }
    this.fd = undefined;
  }

  private newSegment(): Segment {
    if (this.fd !== undefined) {
      if (this.fsync !== 'never') fsyncSync(this.fd);
      closeSync(this.fd);
    }
    const n = (this.segments[this.segments.length - 1]?.n ?? 0) + 1;
    const seg: Segment = { n, path: join(this.dir, `${String(n).padStart(10, '0')}.seg`), records: [], end: 0 };
    this.fd = openSync(seg.path, 'a');
    this.segments.push(seg);
    this.dropConsumedHead();
    return seg;
  }

  /** Indexes a segment's records, stopping at the first damaged one (a torn tail). */
  private scan(n: number): Segment {
    const path = join(this.dir, `${String(n).padStart(10, '0')}.seg`);
    const data = readFileSync(path);
    const seg: Segment = { n, path, records: [], end: 0 };
    let at = 0;
    while (at + 8 <= data.length) {
      const len = data.readUInt32BE(at);
      const body = data.subarray(at + 8, at + 8 + len);
      if (body.length !== len || crc32(body) !== data.readUInt32BE(at + 4)) break;
      seg.records.push(at);
      at += 8 + len;
    }
    seg.end = at;
    if (at !== data.length) {
      // A torn or damaged record: cut it (and anything after it) off.
      this.counters.corrupt++;
      writeFileSync(path, data.subarray(0, at));
    }
    return seg;
  }

  /** Deletes fully consumed head segments, except the tail, which appends go on filling. */
  private dropConsumedHead(): void {
    while (this.segments.length > 1 && this.headIndex >= this.segments[0]!.records.length) {
      this.unlink(this.segments.shift()!);
      this.headIndex = 0;
    }
  }

  /** Past maxBytes the oldest segment goes, with whatever it still held (counted as dropped). */
  private enforceBound(): void {
    let bytes = this.segments.reduce((n, s) => n + s.end, 0);
    while (bytes > this.maxBytes && this.segments.length > 1) {
      const seg = this.segments.shift()!;
      this.counters.dropped += seg.records.length - this.headIndex;
      this.waiting -= seg.records.length - this.headIndex;
      this.headIndex = 0;
      bytes -= seg.end;
      this.unlink(seg);
      this.cursorDirty = true;
    }
  }

  private readCursor(): { segment: number; index: number } | undefined {
    const file = join(this.dir, 'cursor');
    if (!existsSync(file)) return undefined;
    try {
      const c = JSON.parse(readFileSync(file, 'utf8')) as { segment: number; index: number };
      return Number.isInteger(c.segment) && Number.isInteger(c.index) ? c : undefined;
    } catch {
      return undefined;
    }
  }

  private saveCursor(): void {
    clearTimeout(this.cursorTimer);
    this.cursorTimer = undefined;
    if (!this.cursorDirty) return;
    this.cursorDirty = false;
    const file = join(this.dir, 'cursor');
    const seg = this.segments[0];
    writeFileSync(`${file}.tmp`, JSON.stringify({ segment: seg?.n ?? 0, index: seg ? this.headIndex : 0 }));
    renameSync(`${file}.tmp`, file);
  }
}

function decode(body: Buffer): SpooledMessage {
  const qos = body.readUInt8(0) as 0 | 1;
  const retain = body.readUInt8(1) === 1;
  const tlen = body.readUInt16BE(2);
  return { qos, retain, topic: body.toString('utf8', 4, 4 + tlen), payload: Buffer.from(body.subarray(4 + tlen)) };
}

