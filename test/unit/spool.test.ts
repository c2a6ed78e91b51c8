// The disk spool: order, persistence across a restart, the byte bound, and a torn last record.
import { afterEach, describe, expect, it } from 'vitest';
import { appendFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Spool } from '../../services/mqtt-bridge/spool.ts';

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
});
