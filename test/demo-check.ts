// What `starling demo --json` must show, whichever form runs it (the bundle, the x64 executable): the hub meets
// the three devices, every entity is announced to Home Assistant, every topic's state reaches the broker, and
// the MQTT command switches the greenhouse fan on (its state goes 0 → 1), and the web view says where it is.
import { expect } from 'vitest';

type Line = Record<string, unknown> & { source: string };

const SENSORS = ['greenhouse/air', 'greenhouse/humidity', 'kitchen/fridge', 'kitchen/power', 'garage/battery', 'garage/cpu'];
const SWITCHES = ['greenhouse/fan', 'kitchen/light', 'garage/door'];

export function checkDemo(stdout: string): Line[] {
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as Line);
  const entered = lines.filter((l) => l.source === 'mesh' && l.event === 'ENTER').map((l) => l.name);
  expect(new Set(entered)).toEqual(new Set(['greenhouse', 'kitchen', 'garage']));

  const discovered = lines.filter((l) => l.discovery).map((l) => l.discovery as { kind: string; device: string; name: string; diagnostic?: boolean });
  const announced = discovered.filter((d) => !d.diagnostic).map((d) => `${d.kind} ${d.device}/${d.name}`);
  expect(new Set(announced)).toEqual(new Set([...SENSORS.map((s) => `sensor ${s}`), ...SWITCHES.map((s) => `switch ${s}`)]));
  // Each node's status (services/fleet.ts) comes as diagnostic entities, e.g. its RSS.
  const diagnostics = new Set(discovered.filter((d) => d.diagnostic).map((d) => `${d.device}/${d.name}`));
  for (const device of ['greenhouse', 'kitchen', 'garage']) expect(diagnostics, `${device}'s status`).toContain(`${device}/rss`);

  const states = (topic: string) => lines.filter((l) => l.topic === `starling/${topic}` && l.state).map((l) => l.state as { value: number; unit: string; seq: number });
  // On a failure, say what did arrive: the states per topic and the demo's own notes.
  const perTopic = () => [...lines.filter((l) => l.state).reduce((m, l) => m.set(String(l.topic), (m.get(String(l.topic)) ?? 0) + 1), new Map<string, number>())].map(([t, n]) => `${t} ${n}`).join(', ');
  const said = () => lines.filter((l) => l.source === 'demo').map((l) => String(l.note)).join(' | ');
  for (const t of [...SENSORS, ...SWITCHES]) {
    if (states(t).length === 0) expect.fail(`no states of ${t} reached the broker; states per topic: ${perTopic() || 'none'}; the demo said: ${said()}`);
  }
  expect(states('greenhouse/air')[0]).toMatchObject({ unit: '°C' });
  const air = states('greenhouse/air').map((s) => s.value);
  expect(Math.min(...air)).toBeGreaterThanOrEqual(13.9);
  expect(Math.max(...air)).toBeLessThanOrEqual(28.1);

  const command = lines.findIndex((l) => l.source === 'demo' && String(l.note).startsWith('MQTT command'));
  expect(command, 'the demo sent its MQTT command').toBeGreaterThan(0);
  const fan = lines.filter((l) => l.topic === 'starling/greenhouse/fan' && l.state);
  expect((fan[0]!.state as { value: number }).value).toBe(0);
  const after = lines.slice(command).filter((l) => l.topic === 'starling/greenhouse/fan' && l.state);
  expect(after.map((l) => (l.state as { value: number }).value)).toContain(1);

  // The hub's web view started (its page and assets are inside whichever form runs) and said where.
  expect(lines.find((l) => l.source === 'demo' && typeof l.web === 'string')?.web).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);

  expect(String(lines[lines.length - 1]!.note)).toMatch(/^stopped; \d+ states from \d+ topics reached the broker$/);
  return lines;
}
