// The disk spool: order, persistence across a restart, the byte bound, and a torn last record.
import { afterEach, describe, expect, it } from 'vitest';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Spool } from '../../runtime/spool.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const dir = () => {
  const d = mkdtempSync(join(tmpdir(), 'starling-spool-'));
  dirs.push(d);
  return d;
};
const msg = (i: number, size = 10) => ({ topic: `t/${i}`, payload: Buffer.alloc(size, i % 256), qos: 1 as const, retain: i % 2 === 0 });

function drain(s: Spool): number[] {
  const out: number[] = [];
  for (let m = s.peek(); m; m = s.peek()) {
    out.push(Number(m.topic.slice(2)));
    s.ack();
  }
  return out;
}

describe('spool', () => {
  it('gives messages back in order, with topic, payload, qos and retain', () => {
    const s = new Spool(dir());
    s.open();
    for (let i = 0; i < 5; i++) s.append(msg(i));
    expect(s.peek()).toEqual(msg(0));
    expect(drain(s)).toEqual([0, 1, 2, 3, 4]);
    expect(s.length).toBe(0);
    s.close();
  });

  it('keeps what was not acknowledged across a restart (at least once)', () => {
    const d = dir();
    const s = new Spool(d);
    s.open();
    for (let i = 0; i < 10; i++) s.append(msg(i));
    for (let i = 0; i < 4; i++) s.ack();
    s.close();
    const again = new Spool(d);
    again.open();
    expect(drain(again)).toEqual([4, 5, 6, 7, 8, 9]);
    again.append(msg(10));
    again.close();
    const third = new Spool(d);
    third.open();
    expect(drain(third)).toEqual([10]);
    third.close();
    // Everything delivered: a restart replays nothing.
    const fourth = new Spool(d);
    fourth.open();
    expect(fourth.length).toBe(0);
    expect(drain(fourth)).toEqual([]);
    fourth.close();
  });

  it('spans segments and deletes them once consumed', () => {
    const d = dir();
    const s = new Spool(d);
    s.open();
    for (let i = 0; i < 300; i++) s.append(msg(i, 10_000)); // about 3 MB: three or four 1 MiB segments
    expect(readdirSync(d).filter((f) => f.endsWith('.seg')).length).toBeGreaterThanOrEqual(3);
    expect(drain(s)).toEqual([...Array(300).keys()]);
    expect(readdirSync(d).filter((f) => f.endsWith('.seg'))).toHaveLength(1);
    s.close();
  });

  it('stays under its byte bound by dropping the oldest segment, and counts what it dropped', () => {
    const s = new Spool(dir(), 2 * 1024 * 1024);
    s.open();
    for (let i = 0; i < 500; i++) s.append(msg(i, 10_000));
    const st = s.stats();
    expect(st.bytes).toBeLessThanOrEqual(2 * 1024 * 1024);
    expect(st.dropped).toBeGreaterThan(0);
    const left = drain(s);
    expect(left.length + st.dropped).toBe(500);
    expect(left[left.length - 1]).toBe(499); // the newest are kept
    expect(left).toEqual([...left].sort((a, b) => a - b));
    s.close();
  });

  it('a torn last record (power cut mid-write) is counted and skipped; the rest is kept', () => {
    const d = dir();
    const s = new Spool(d);
    s.open();
    for (let i = 0; i < 3; i++) s.append(msg(i));
    s.close();
    const seg = readdirSync(d).find((f) => f.endsWith('.seg'))!;
    appendFileSync(join(d, seg), Buffer.from([0, 0, 0, 50, 1, 2, 3])); // a header promising 50 bytes, then nothing
    const again = new Spool(d);
    again.open();
    expect(again.stats().corrupt).toBe(1);
    again.append(msg(3));
    expect(drain(again)).toEqual([0, 1, 2, 3]);
    again.close();
  });

  it('a flipped bit in the middle costs only that record: the scan moves on, the damaged bytes are kept aside', () => {
    const d = dir();
    const s = new Spool(d);
    s.open();
    for (let i = 0; i < 100; i++) s.append(msg(i, 30));
    s.close();
    const seg = join(d, readdirSync(d).find((f) => f.endsWith('.seg'))!);
    const data = readFileSync(seg);
    let at = 0;
    for (let i = 0; i < 40; i++) at += 8 + data.readUInt32BE(at);
    const recordBytes = 8 + data.readUInt32BE(at);
    data[at + 20]! ^= 0x10; // inside record 40's body: its CRC no longer holds
    writeFileSync(seg, data);
    const problems: string[] = [];
    const again = new Spool(d, undefined, undefined, { onProblem: (m) => problems.push(m) });
    again.open();
    expect(again.stats()).toMatchObject({ corrupt: 1, damagedBytes: recordBytes, queued: 99 });
    expect(drain(again)).toEqual([...Array(100).keys()].filter((i) => i !== 40));
    const kept = readdirSync(join(d, 'damaged'));
    expect(kept).toHaveLength(1);
    expect(readFileSync(join(d, 'damaged', kept[0]!)).length).toBe(recordBytes);
    expect(problems.join('\n')).toMatch(/segment 1 has \d+ damaged byte\(s\) at offset \d+/);
    again.close();
  });

  it('a disk that fails (here: the folder cannot be made) never throws: messages wait in memory, bounded, and move to disk when it works again', async () => {
    const parent = dir();
    const blocker = join(parent, 'spool');
    writeFileSync(blocker, 'a file where the folder should be'); // mkdir fails with EEXIST/ENOTDIR, as a read-only card does with EROFS
    const problems: string[] = [];
    const s = new Spool(join(blocker, 'inner'), undefined, 'always', { onProblem: (m) => problems.push(m), memoryMessages: 50, retry: { min: 50, max: 100 } });
    s.open();
    for (let i = 0; i < 80; i++) s.append(msg(i));
    expect(s.stats()).toMatchObject({ disk: false, inMemory: 50, queued: 50, dropped: 30 });
    expect(s.peek()!.topic).toBe('t/30'); // the oldest went first
    s.ack(); // delivered from memory
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/spool: the disk failed .*holding up to 50 messages in memory/);
    rmSync(blocker);
    await new Promise((r) => setTimeout(r, 400));
    expect(s.stats()).toMatchObject({ disk: true, inMemory: 0, queued: 49 });
    expect(problems[1]).toMatch(/disk works again; 49 message\(s\) moved from memory/);
    s.append(msg(80));
    s.close();
    const again = new Spool(join(blocker, 'inner'));
    again.open();
    expect(drain(again)).toEqual([...Array(50).keys()].map((i) => i + 31));
    again.close();
  });
});
