// Line protocol as the Influx sink writes it (services/influx.ts): escaping, refusals, one line per sample with
// value fields only for a good read; and the configuration rules of influx: (db or bucket, bucket with org).
import { expect, it } from 'vitest';
import { lineOf, seriesOf, tag } from '../../services/influx.ts';
import { Batch, BatchWriter, encodeOne } from '../../runtime/telemetry/sample.ts';
import { ConfigError, parseConfig } from '../../runtime/config/load.ts';

const publisher = Buffer.alloc(16, 7);
const batch = (values: number[], status = 0, unit = '°C') => new Batch('porch/air', encodeOne(new BatchWriter(4096), publisher, { topic: 'porch/air', ts: 1_700_000_000_123.4, values, unit, status, seq: 41 }));

it('escapes commas, equals signs and spaces in tags, and refuses what no tag can hold', () => {
  expect(tag('a b,c=d')).toBe('a\\ b\\,c\\=d');
  expect(tag('')).toBeUndefined();
  expect(tag('back\\slash')).toBeUndefined();
  expect(tag('new\nline')).toBeUndefined();
  expect(seriesOf('starling', 'porch', 'porch/air', '°C')).toBe('starling,node=porch,topic=porch/air,unit=°C');
  expect(seriesOf('starling', 'my node', 'x', '')).toBe('starling,node=my\\ node,topic=x');
  expect(seriesOf('starling', 'n', 'bad\\topic', '')).toBeUndefined();
  expect(seriesOf('starling', 'bad\nname', 'x', '')).toBe('starling,node=unnamed,topic=x');
});

it('writes one line per sample: values, seq and status as fields, the time in ms', () => {
  const series = 'starling,node=porch,topic=porch/air';
  expect(lineOf(series, batch([21.5]), 0)).toBe(`${series} value=21.5,seq=41i,status=0i 1700000000123`);
  expect(lineOf(series, batch([1, 2, 3]), 0)).toBe(`${series} value=1,value_1=2,value_2=3,seq=41i,status=0i 1700000000123`);
  // A failed read: no value field (the database keeps a gap), its status says why.
  expect(lineOf(series, batch([NaN], 2), 0)).toBe(`${series} seq=41i,status=2i 1700000000123`);
  // A value no float field can hold is left out, never written as NaN.
  expect(lineOf(series, batch([Infinity]), 0)).toBe(`${series} seq=41i,status=0i 1700000000123`);
});

it('needs a db or a bucket, not both, and a bucket needs its org', () => {
  const problems = (influx: string): string[] => {
    try {
      parseConfig(`influx: { ${influx} }\n`);
      return [];
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      return e.problems.map((p) => p.message);
    }
  };
  expect(problems('url: "http://127.0.0.1:8086", db: starling')).toEqual([]);
  expect(problems('url: "http://127.0.0.1:8086", bucket: b, org: o')).toEqual([]);
  expect(problems('url: "http://127.0.0.1:8086"')).toEqual(['influx.url is set but neither influx.db (InfluxDB 1.x, VictoriaMetrics) nor influx.bucket (InfluxDB 2.x) is']);
  expect(problems('url: "http://127.0.0.1:8086", db: a, bucket: b, org: o')[0]).toMatch(/both set/);
  expect(problems('url: "http://127.0.0.1:8086", bucket: b')[0]).toMatch(/needs influx.org/);
  expect(problems('url: "http://user:pw@127.0.0.1:8086", db: a')[0]).toMatch(/no user or path/);
});
