/**
 * `/metrics`: the Prometheus text exposition (format 0.0.4, which every Prometheus and VictoriaMetrics scrapes)
 * of what the web view already keeps — the last sample of every topic on the mesh, and this node's services
 * and counters. Built on request from the histories (no state of its own); its cost is one line per topic and
 * one per counter, about 150 bytes each.
 *
 *   starling_sample_value{node,topic,unit}              the topic's last value (its first, for several values);
 *                                                       absent while the last read failed
 *   starling_sample_status{node,topic}                  0 for a good read, else the status code (FORMAT.md)
 *   starling_sample_timestamp_seconds{node,topic}       when it was sampled (the device's clock)
 *   starling_service_healthy{service}                   1 healthy, 0 not
 *   starling_service_restarts_total{service}            restarts by the supervisor
 *   starling_service_stat{service,name}                 every counter `starling status` shows
 *
 * No sample carries a timestamp of its own: Prometheus stamps a scrape, and a device clock that is off would
 * otherwise make its samples "out of bounds".
 */
import type { Counters } from '../../runtime/supervisor/service.ts';
import type { ServiceStatus } from '../../runtime/supervisor/supervisor.ts';

export interface MetricTopic {
  topic: string;
  unit: string;
  value: number | undefined;
  status: number;
  /** ms since the epoch */
  updated: number;
  /** The node that published it (its name, or its publisher id when unknown). */
  node: string;
}

/** The exposition's content type. */
export const METRICS_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** A label value as the text format writes it: `\`, `"` and newlines escaped. */
const label = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/** A sample value: Go's float syntax for the special values. */
const num = (v: number): string => (Number.isNaN(v) ? 'NaN' : v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : String(v));

export function exposition(topics: Iterable<MetricTopic>, services: ServiceStatus[], stats: Record<string, Counters>): string {
  const value: string[] = [];
  const status: string[] = [];
  const when: string[] = [];
  for (const t of topics) {
    const id = `node="${label(t.node)}",topic="${label(t.topic)}"`;
    if (t.value !== undefined) value.push(`starling_sample_value{${id},unit="${label(t.unit)}"} ${num(t.value)}`);
    status.push(`starling_sample_status{${id}} ${t.status}`);
    when.push(`starling_sample_timestamp_seconds{${id}} ${t.updated / 1000}`);
  }
  const out = [
    '# HELP starling_sample_value The last value of each telemetry topic on the mesh.',
    '# TYPE starling_sample_value gauge', ...value,
    '# HELP starling_sample_status The last read of each topic: 0 good, else its status code.',
    '# TYPE starling_sample_status gauge', ...status,
    '# HELP starling_sample_timestamp_seconds When each topic was last sampled, by its device\'s clock.',
    '# TYPE starling_sample_timestamp_seconds gauge', ...when,
    '# HELP starling_service_healthy Whether each supervised service is healthy.',
    '# TYPE starling_service_healthy gauge',
    ...services.map((s) => `starling_service_healthy{service="${label(s.name)}"} ${s.healthy ? 1 : 0}`),
    '# HELP starling_service_restarts_total Restarts of each supervised service.',
    '# TYPE starling_service_restarts_total counter',
    ...services.map((s) => `starling_service_restarts_total{service="${label(s.name)}"} ${s.restarts}`),
    '# HELP starling_service_stat Each service\'s counters, as starling status shows them.',
    '# TYPE starling_service_stat gauge',
  ];
  for (const [service, counters] of Object.entries(stats)) {
    for (const [name, v] of Object.entries(counters)) {
      if (typeof v === 'number') out.push(`starling_service_stat{service="${label(service)}",name="${label(name)}"} ${num(v)}`);
    }
  }
  return `${out.join('\n')}\n`;
}
