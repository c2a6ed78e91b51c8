// Nodes in a process that runs out of ZeroMQ sockets (libzmq's limit, set low here; vitest runs each test file
// in a process of its own, so the limit is this file's): a peer it cannot open a socket to is refused and
// counted, never half-known, and the mesh completes once sockets are free again. Real sockets on loopback.
import { context } from 'zeromq';
import { expect, it } from 'vitest';
import { meshed, nodeFixture, until } from '../helpers.ts';

// Before any socket opens: libzmq fixes the limit when its context starts.
context.maxSockets = 20;
const { nodes } = nodeFixture();

it('a peer with no socket to it is refused and counted; once sockets are free the mesh completes', async () => {
  // Five nodes need 5 inboxes and 20 DEALERs: 25 sockets, over the 20 allowed.
  // A HELLO that comes while no socket can be opened is lost; the side that sent it already had our HELLO and
  // waits for nothing, so ours must time out its half-open peer (2 s here, 15 s by default), dial again, and be
  // answered as a re-HELLO.
  const all = await nodes(5, { handshakeTimeout: 2000 });
  await until(() => all.reduce((n, x) => n + x.stats().peersRefused, 0) > 0, 10_000, 'a peer refused for want of a socket');
  const problems = all.map((x) => x.stats().lastError ?? '').filter((m) => m.includes('no socket'));
  expect(problems.length).toBeGreaterThan(0);
  for (const x of all) expect(x.stats().internalErrors).toBe(0);
  // Two leave: the three left need 3 inboxes and 6 DEALERs, and meet on their next beacons.
  await Promise.all(all.slice(3).map((x) => x.stop()));
  await meshed(all.slice(0, 3), 15_000);
  for (const x of all.slice(0, 3)) expect(x.stats().internalErrors).toBe(0);
}, 40_000);
