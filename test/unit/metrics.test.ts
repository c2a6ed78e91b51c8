// The Prometheus text exposition (services/web/metrics.ts): label escaping, a failed read without a value,
// the special float values, and every numeric counter as a stat.
import { expect, it } from 'vitest';
import { exposition } from '../../services/web/metrics.ts';

it('escapes label values and leaves a failed read without a value', () => {
  const text = exposition([
    { topic: 'a"b\\c', unit: '°C', value: 21.5, status: 0, updated: 1_700_000_000_000, node: 'n\nx' },
    { topic: 'dead', unit: '', value: undefined, status: 2, updated: 1_700_000_001_000, node: 'n' },
    { topic: 'inf', unit: '', value: Infinity, status: 0, updated: 0, node: 'n' },
  ], [{ name: 'device', state: 'running', healthy: true, restarts: 3 }], { device: { 'sampler.reads': 7 }, web: { requests: 2 } });
  const lines = text.split('\n');
  expect(lines).toContain('starling_sample_value{node="n\\nx",topic="a\\"b\\\\c",unit="°C"} 21.5');
  expect(lines.filter((l) => l.startsWith('starling_sample_value{') && l.includes('topic="dead"'))).toEqual([]);
  expect(lines).toContain('starling_sample_status{node="n",topic="dead"} 2');
  expect(lines).toContain('starling_sample_value{node="n",topic="inf",unit=""} +Inf');
  expect(lines).toContain('starling_sample_timestamp_seconds{node="n",topic="dead"} 1700000001');
  expect(lines).toContain('starling_service_healthy{service="device"} 1');
  expect(lines).toContain('starling_service_restarts_total{service="device"} 3');
  expect(lines).toContain('starling_service_stat{service="device",name="sampler.reads"} 7');
  expect(lines).toContain('starling_service_stat{service="web",name="requests"} 2');
  // Every sample line has a TYPE above it, and the text ends with a newline (the format requires it).
  expect(text.endsWith('\n')).toBe(true);
  for (const family of ['starling_sample_value', 'starling_sample_status', 'starling_service_stat']) expect(lines).toContain(`# TYPE ${family} gauge`);
});
