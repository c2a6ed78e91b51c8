/**
 * Store-and-forward on disk, bounded: messages that cannot go to the broker now wait here, oldest first, and
 * survive a restart. Segment files of length-prefixed, CRC-checked records (`<dir>/<n>.seg`, about 1 MiB
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
 * a second's worth of already-sent messages is sent again (MQTT QoS 1 allows duplicates).
 *
 * The disk may fail under it (a full card, a read-only remount, a directory it cannot create): no method
 * throws for that. The spool then keeps new messages in memory, bounded (`memoryMessages`, `memoryBytes`; past
 * them the oldest go, counted as dropped), says so once through `onProblem`, and tries the disk again with the
 * one backoff helper (1 s … 5 min); when a write succeeds again the messages held in memory are written to a
 * fresh segment, in order, behind what was already on disk.
 *
 * Damage costs only what is damaged: on open each segment is scanned record by record, and where a record's
 * length, flags or CRC do not hold, the scan moves forward byte by byte to the next record that does. The bytes
 * skipped are kept aside in `<dir>/damaged/` (up to 16 MiB in all) and counted; a torn tail (power cut
 * mid-write) is the same case at the end of a file, and is cut off.
 *
 * Record: u32 length of the rest, u32 CRC-32 of the rest, u8 qos, u8 retain, u16 topic length, topic, payload.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Backoff } from './backoff.ts';
import { BoundedQueue } from './queue.ts';
import type { ProblemSink } from './problems.ts';
// zlib is loaded on first use: only a bridge with a spool needs it.
const crc32 = (b: Buffer): number => (process.getBuiltinModule('node:zlib') as typeof import('node:zlib')).crc32(b);

export interface SpooledMessage {
  topic: string;
  payload: Buffer;
  qos: 0 | 1;
  retain: boolean;
}

export interface SpoolOptions {
  /** Hears when the disk fails and when it is back, and what damage was found on open. */
  onProblem?: ProblemSink;
  /** Messages held in memory while the disk is unavailable. Default 10000. */
  memoryMessages?: number;
  /** Bytes held in memory while the disk is unavailable. Default 8 MiB. */
  memoryBytes?: number;
  /** Retry delays for the disk, ms. Default 1 s … 5 min. */
  retry?: { min: number; max: number };
}

export interface SpoolStats {
  /** Messages waiting (on disk and in memory). */
  queued: number;
  /** Bytes on disk. */
  bytes: number;
  appended: number;
  /** Messages lost because the spool was full (the oldest segment went, or the memory bound was reached). */
  dropped: number;
  /** Damaged spans found on open (torn writes, flipped bits) and skipped; their bytes are in `damagedBytes`. */
  corrupt: number;
  damagedBytes: number;
  /** Messages skipped on purpose: the broker would not take them (see the bridge). */
  skipped: number;
  /** False while the disk is unavailable and messages wait in memory. */
  disk: boolean;
  /** Messages waiting in memory. */
  inMemory: number;
  /** Disk operations that failed. */
  diskErrors: number;
  lastDiskError: string | undefined;
}

const SEGMENT_BYTES = 1024 * 1024;
/** Damaged bytes kept aside in `damaged/`, at most, over the spool's life. */
const DAMAGED_KEEP_BYTES = 16 * 1024 * 1024;

interface Segment {
  n: number;
  path: string;
  /** Byte offset and total size (header included) of each record, in order. */
  records: number[];
  sizes: number[];
  /** Bytes of the file in use: where the next record goes. */
  end: number;
}

/** Bytes read at once when the spool is drained (records are read back in order). */
const READ_AHEAD = 64 * 1024;

const segmentPath = (dir: string, n: number) => join(dir, `${String(n).padStart(10, '0')}.seg`);

export class Spool {
  private segments: Segment[] = [];
  /** Records of the head segment already consumed. */
  private headIndex = 0;
  private fd: number | undefined;
  private cursorDirty = false;
  private cursorTimer: NodeJS.Timeout | undefined;
  private readonly counters = { appended: 0, dropped: 0, corrupt: 0, damagedBytes: 0, skipped: 0, diskErrors: 0 };
  private lastDiskError: string | undefined;

  /** Encoded records appended this turn, not yet written, and their messages (to move to memory if the write fails). */
  private pending: Buffer[] = [];
  private pendingMessages: SpooledMessage[] = [];
  private pendingFrom = 0;
  private readonly readers = new Map<string, number>();
  /** Messages waiting on disk. */
  private onDisk = 0;
  private flushScheduled = false;
  private fsyncTimer: NodeJS.Timeout | undefined;
  private unsynced = false;

  /** The disk works (as far as we know); false after a failure until a retry succeeds. */
  private diskOk = true;
  /** The directory was read at least once (segments and cursor known). */
  private loaded = false;
  private readonly memory: BoundedQueue<SpooledMessage>;
  private memoryUsed = 0;
  private readonly memoryBytes: number;
  private readonly backoff: Backoff;
  private retryTimer: NodeJS.Timeout | undefined;
  private damagedKept = 0;
  private closed = false;

  constructor(readonly dir: string, readonly maxBytes = 64 * 1024 * 1024, readonly fsync: 'always' | 'interval' | 'never' = 'interval', private readonly o: SpoolOptions = {}) {
    this.memory = new BoundedQueue(o.memoryMessages ?? 10_000);
    this.memoryBytes = o.memoryBytes ?? 8 * 1024 * 1024;
    this.backoff = new Backoff(o.retry ?? { min: 1000, max: 300_000 });
  }

  /** Reads what is on disk (creating the folder if needed). A disk that fails here leaves the spool in memory, retrying. */
  open(): void {
    this.closed = false;
    try {
      this.load();
    } catch (e) {
      this.diskFailed(e, 'opening');
    }
  }

  /** Appends one message: written at the end of this turn (or held in memory while the disk is away). */
  append(m: SpooledMessage): void {
    if (Buffer.byteLength(m.topic) > 0xffff) {
      // Cannot be a record (u16 topic length) nor an MQTT topic; the bridge never sends one. Counted, not thrown.
      this.counters.dropped++;
      return;
    }
    this.counters.appended++;
    if (!this.diskOk || this.memory.length > 0 || !this.appendToDisk(m)) this.toMemory(m);
  }

  /** Writes what was appended in this turn in one write, and applies the fsync policy. Never throws. */
  flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    const messages = this.pendingMessages;
    this.pending = [];
    this.pendingMessages = [];
    try {
      if (this.fd === undefined) throw new Error('no segment open');
      writeAll(this.fd, data);
      if (this.fsync === 'always') fsyncSync(this.fd);
      else if (this.fsync === 'interval') {
        this.unsynced = true;
        this.fsyncTimer ??= setTimeout(() => this.syncNow(), 1000);
      }
    } catch (e) {
      // Take the records back out of the index; they wait in memory instead (a partial write is cut on open).
      const tail = this.segments[this.segments.length - 1]!;
      tail.records.length -= messages.length;
      tail.sizes.length -= messages.length;
      tail.end = this.pendingFrom;
      this.onDisk -= messages.length;
      this.diskFailed(e, 'writing');
      for (const m of messages) this.toMemory(m);
    }
  }

  /** The waiting message `offset` places after the oldest (0: the oldest), or undefined. */
  peek(offset = 0): SpooledMessage | undefined {
    this.flush();
    if (offset >= this.onDisk) return this.memory.at(offset - this.onDisk);
    let i = this.headIndex + offset;
    for (const seg of this.segments) {
      if (i < seg.records.length) {
        const length = seg.sizes[i]!;
        const at = seg.records[i]!;
        const c = this.readAhead;
        if (!c || c.seg !== seg || at < c.start || at + length > c.start + c.data.length) {
          // Read ahead: the records behind this one are what the drain asks for next (one read, not one each).
          const data = Buffer.allocUnsafe(Math.max(length, Math.min(READ_AHEAD, seg.end - at)));
          try {
            const got = readSync(this.reader(seg), data, 0, data.length, at);
            if (got < length) throw new Error(`short read: ${got} of ${length} bytes at ${at} of ${seg.path}`);
            this.readAhead = { seg, start: at, data: data.subarray(0, got) };
          } catch (e) {
            this.readAhead = undefined;
            this.noteDiskError(e, 'reading');
            return undefined;
          }
        }
        const r = this.readAhead!;
        return decode(r.data.subarray(at - r.start + 8, at - r.start + length)); // decode copies the payload out
      }
      i -= seg.records.length;
    }
    return undefined;
  }

  /** Marks the oldest message as delivered (`skipped`: given up on, counted apart). */
  ack(skipped = false): void {
    if (skipped) this.counters.skipped++;
    if (this.onDisk === 0) {
      const m = this.memory.shift();
      if (m) this.memoryUsed -= messageBytes(m);
      return;
    }
    const seg = this.segments[0];
    if (!seg || this.headIndex >= seg.records.length) return;
    this.headIndex++;
    this.onDisk--;
    this.dropConsumedHead();
    this.cursorDirty = true;
    this.cursorTimer ??= setTimeout(() => this.saveCursor(), 1000);
  }

  /** Messages waiting. O(1): the bridge asks on every sample. */
  get length(): number {
    return this.onDisk + this.memory.length;
  }

  stats(): SpoolStats {
    return {
      queued: this.length, bytes: this.segments.reduce((n, s) => n + s.end, 0), ...this.counters, dropped: this.counters.dropped + this.memory.dropped,
      disk: this.diskOk, inMemory: this.memory.length, lastDiskError: this.lastDiskError,
    };
  }

  /** Writes what it can (memory included, one last try), saves the cursor and closes the files. Never throws. */
  close(): void {
    this.flush();
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (!this.diskOk) this.retryDisk();
    if (!this.diskOk && this.memory.length > 0) this.o.onProblem?.(`spool: ${this.memory.length} message(s) held in memory are lost at close: the disk is still unavailable (${this.lastDiskError})`);
    clearTimeout(this.fsyncTimer);
    this.fsyncTimer = undefined;
    this.saveCursor();
    for (const fd of this.readers.values()) quietly(() => closeSync(fd));
    this.readers.clear();
    if (this.fd !== undefined) {
      const fd = this.fd;
      quietly(() => fsyncSync(fd));
      quietly(() => closeSync(fd));
    }
    this.fd = undefined;
    this.closed = true;
  }

  // --- the disk ------------------------------------------------------------------------------------------

  /** Scans the folder (segments, then the cursor); throws if the disk fails. */
  private load(): void {
    mkdirSync(this.dir, { recursive: true });
    const numbers = readdirSync(this.dir).filter((f) => /^\d+\.seg$/.test(f)).map((f) => Number(f.slice(0, -4))).sort((a, b) => a - b);
    this.segments = numbers.map((n) => this.scan(n));
    const tail = this.segments[this.segments.length - 1];
    if (tail) this.fd = openSync(tail.path, 'a');
    const cursor = this.readCursor();
    // The cursor may point past the last record (all delivered); never before the first.
    this.headIndex = 0;
    if (cursor && this.segments[0]?.n === cursor.segment) this.headIndex = Math.max(0, Math.min(cursor.index, this.segments[0].records.length));
    this.dropConsumedHead();
    this.onDisk = this.segments.reduce((n, seg) => n + seg.records.length, 0) - this.headIndex;
    this.loaded = true;
  }

  /** Encodes one record into this turn's write; false (nothing changed) if a new segment cannot be opened. */
  private appendToDisk(m: SpooledMessage): boolean {
    const record = encode(m);
    let tail = this.segments[this.segments.length - 1];
    if (!tail || this.fd === undefined || tail.end + record.length > SEGMENT_BYTES) {
      this.flush(); // what is pending belongs to the old segment
      if (!this.diskOk) return false;
      try {
        tail = this.newSegment();
      } catch (e) {
        this.diskFailed(e, 'creating a segment');
        return false;
      }
    }
    if (this.pending.length === 0) this.pendingFrom = tail.end;
    this.pending.push(record);
    this.pendingMessages.push(m);
    tail.records.push(tail.end);
    tail.sizes.push(record.length);
    tail.end += record.length;
    this.onDisk++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    this.enforceBound();
    return true;
  }

  /** Opens the next segment file (throws if it cannot) and makes it the tail. */
  private newSegment(): Segment {
    const n = (this.segments[this.segments.length - 1]?.n ?? 0) + 1;
    const seg: Segment = { n, path: segmentPath(this.dir, n), records: [], sizes: [], end: 0 };
    const fd = openSync(seg.path, 'a');
    const old = this.fd;
    if (old !== undefined) {
      if (this.fsync !== 'never') quietly(() => fsyncSync(old));
      quietly(() => closeSync(old));
    }
    this.fd = fd;
    this.segments.push(seg);
    this.dropConsumedHead();
    return seg;
  }

  private syncNow(): void {
    this.fsyncTimer = undefined;
    if (!this.unsynced || this.fd === undefined) return;
    this.unsynced = false;
    try {
      fsyncSync(this.fd);
    } catch (e) {
      this.noteDiskError(e, 'syncing');
    }
  }

  private noteDiskError(e: unknown, doing: string): void {
    this.counters.diskErrors++;
    const code = (e as NodeJS.ErrnoException).code;
    const message = (e as Error).message;
    this.lastDiskError = `${doing} ${this.dir}: ${code && !message.startsWith(code) ? `${code} ` : ''}${message}`;
  }

  /** The disk failed: hold messages in memory from now on and try the disk again later. Logged once per outage. */
  private diskFailed(e: unknown, doing: string): void {
    this.noteDiskError(e, doing);
    if (this.fd !== undefined) {
      const fd = this.fd;
      quietly(() => closeSync(fd));
      this.fd = undefined;
    }
    if (!this.diskOk) return;
    this.diskOk = false;
    this.o.onProblem?.(`spool: the disk failed (${this.lastDiskError}); holding up to ${this.memory.capacity} messages in memory and trying the disk again with backoff`);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.retryDisk(), this.backoff.next());
    this.retryTimer.unref?.();
  }

  /** Tries the disk again: reads the folder if it never could, then writes what memory holds to a fresh segment. */
  private retryDisk(): void {
    this.retryTimer = undefined;
    const messages = [...this.memory];
    let seg: Segment | undefined;
    try {
      if (!this.loaded) this.load();
      if (messages.length === 0 && this.fd !== undefined) {
        // Nothing to move: the disk answered the load; appends go on from here.
      } else {
        seg = this.newSegment();
        const records = messages.map(encode);
        writeAll(this.fd!, Buffer.concat(records));
        if (this.fsync !== 'never') fsyncSync(this.fd!);
        // One segment however much memory held (it may pass SEGMENT_BYTES); the next append opens another.
        for (const r of records) {
          seg.records.push(seg.end);
          seg.sizes.push(r.length);
          seg.end += r.length;
        }
      }
    } catch (e) {
      if (seg) {
        this.segments.splice(this.segments.indexOf(seg), 1);
        const path = seg.path;
        if (this.fd !== undefined) quietly(() => closeSync(this.fd!));
        this.fd = undefined;
        quietly(() => unlinkSync(path));
      }
      this.noteDiskError(e, 'retrying');
      this.scheduleRetry();
      return;
    }
    this.onDisk += messages.length;
    this.memory.clear();
    this.memoryUsed = 0;
    this.diskOk = true;
    this.backoff.reset();
    this.o.onProblem?.(`spool: the disk works again; ${messages.length} message(s) moved from memory to ${this.dir}`);
    this.enforceBound();
  }

  /** Holds one message in memory, pushing out the oldest held past the bounds (counted as dropped). */
  private toMemory(m: SpooledMessage): void {
    const bytes = messageBytes(m);
    while (this.memory.length > 0 && (this.memory.length === this.memory.capacity || this.memoryUsed + bytes > this.memoryBytes)) {
      const old = this.memory.shift()!;
      this.memoryUsed -= messageBytes(old);
      this.counters.dropped++;
    }
    this.memory.push(m);
    this.memoryUsed += bytes;
  }

  /** The last read-ahead: bytes of `seg` from `start` (written records are never changed in place). */
  private readAhead: { seg: Segment; start: number; data: Buffer } | undefined;

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
    if (this.readAhead?.seg === seg) this.readAhead = undefined;
    const fd = this.readers.get(seg.path);
    if (fd !== undefined) quietly(() => closeSync(fd));
    this.readers.delete(seg.path);
    try {
      unlinkSync(seg.path);
    } catch (e) {
      this.noteDiskError(e, 'deleting a segment');
    }
  }

  /**
   * Indexes a segment's records. Where one does not check out, scans forward to the next that does; the bytes
   * between are kept aside and counted. A damaged tail is cut off, so appends go on after the last good record.
   */
  private scan(n: number): Segment {
    const path = segmentPath(this.dir, n);
    const data = readFileSync(path);
    const seg: Segment = { n, path, records: [], sizes: [], end: 0 };
    let at = 0;
    let lastGood = 0;
    while (at < data.length) {
      const size = recordAt(data, at);
      if (size > 0) {
        seg.records.push(at);
        seg.sizes.push(size);
        at += size;
        lastGood = at;
        continue;
      }
      let next = at + 1;
      while (next < data.length && recordAt(data, next) === 0) next++;
      this.setAside(n, data, at, next);
      at = next;
    }
    seg.end = data.length;
    if (lastGood < data.length) {
      // The tail is damaged (a torn write): cut it, so the next record follows the last good one.
      try {
        truncateSync(path, lastGood);
        seg.end = lastGood;
      } catch (e) {
        this.noteDiskError(e, 'cutting a torn tail');
      }
    }
    return seg;
  }

  /** Keeps damaged bytes in `damaged/<segment>-<offset>.bin` (bounded) and reports them. */
  private setAside(n: number, data: Buffer, from: number, to: number): void {
    this.counters.corrupt++;
    this.counters.damagedBytes += to - from;
    let kept = '';
    if (this.damagedKept + (to - from) <= DAMAGED_KEEP_BYTES) {
      try {
        const dir = join(this.dir, 'damaged');
        mkdirSync(dir, { recursive: true });
        const file = join(dir, `${String(n).padStart(10, '0')}-${from}.bin`);
        writeFileSync(file, data.subarray(from, to));
        this.damagedKept += to - from;
        kept = `; kept in ${file}`;
      } catch (e) {
        this.noteDiskError(e, 'keeping damaged bytes');
      }
    }
    this.o.onProblem?.(`spool: segment ${n} has ${to - from} damaged byte(s) at offset ${from} (at least one record lost; the records around it are kept)${kept}`);
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
      this.onDisk -= seg.records.length - this.headIndex;
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
    if (!this.cursorDirty || !this.loaded) return;
    const file = join(this.dir, 'cursor');
    const seg = this.segments[0];
    try {
      writeFileSync(`${file}.tmp`, JSON.stringify({ segment: seg?.n ?? 0, index: seg ? this.headIndex : 0 }));
      renameSync(`${file}.tmp`, file);
      this.cursorDirty = false;
    } catch (e) {
      // Kept dirty: the next ack tries again. Until then a restart may send some messages twice (at least once).
      this.noteDiskError(e, 'saving the cursor');
    }
  }
}

/** Size of a valid record at `at` (header included), or 0 if its length, flags or CRC do not hold. */
function recordAt(data: Buffer, at: number): number {
  if (at + 12 > data.length) return 0;
  const len = data.readUInt32BE(at);
  if (len < 4 || at + 8 + len > data.length) return 0;
  const qos = data[at + 8]!;
  const retain = data[at + 9]!;
  if (qos > 1 || retain > 1 || data.readUInt16BE(at + 10) > len - 4) return 0;
  return crc32(data.subarray(at + 8, at + 8 + len)) === data.readUInt32BE(at + 4) ? 8 + len : 0;
}

function encode(m: SpooledMessage): Buffer {
  const tlen = Buffer.byteLength(m.topic);
  const record = Buffer.allocUnsafe(12 + tlen + m.payload.length);
  record.writeUInt32BE(4 + tlen + m.payload.length, 0);
  record.writeUInt8(m.qos, 8);
  record.writeUInt8(m.retain ? 1 : 0, 9);
  record.writeUInt16BE(tlen, 10);
  record.write(m.topic, 12, 'utf8');
  m.payload.copy(record, 12 + tlen);
  record.writeUInt32BE(crc32(record.subarray(8)), 4);
  return record;
}

function decode(body: Buffer): SpooledMessage {
  const qos = body.readUInt8(0) as 0 | 1;
  const retain = body.readUInt8(1) === 1;
  const tlen = body.readUInt16BE(2);
  return { qos, retain, topic: body.toString('utf8', 4, 4 + tlen), payload: Buffer.from(body.subarray(4 + tlen)) };
}

const messageBytes = (m: SpooledMessage): number => 12 + m.topic.length * 3 + m.payload.length;

/** writeSync until all is written (it may write less than asked, e.g. just before ENOSPC). */
function writeAll(fd: number, data: Buffer): void {
  for (let at = 0; at < data.length;) at += writeSync(fd, data, at, data.length - at);
}

function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // best effort: the error was counted where it matters, or the file is gone anyway
  }
}

