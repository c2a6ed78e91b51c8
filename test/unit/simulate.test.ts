// The simulation's count of samples at the broker (app/simulate/worker.ts): gaps, late fills and repeats.
import { describe, expect, it } from 'vitest';
import { arrivedBelow, noteArrival, type Arrivals } from '../../app/simulate/worker.ts';

describe('samples at the broker, by sequence', () => {
  it('counts what arrived below a mark, with gaps, a late fill and repeats', () => {
    const a: Arrivals = { first: 10, last: 10, gaps: [], foldedMissing: 0, dups: 0 };
    for (const seq of [11, 12, 15, 16, 20]) noteArrival(a, seq); // 13-14 and 17-19 missing
    expect(a.gaps).toEqual([[13, 14], [17, 19]]);
    expect(arrivedBelow(a, 21)).toBe(6);
    expect(arrivedBelow(a, 16)).toBe(4); // 10, 11, 12, 15
    noteArrival(a, 18); // a late one fills its gap (QoS 1 redelivery after a reconnect)
    expect(a.gaps).toEqual([[13, 14], [17, 17], [19, 19]]);
    expect(arrivedBelow(a, 21)).toBe(7);
    noteArrival(a, 12); // a repeat
    noteArrival(a, 3); // before the first counted: neither
    expect(a.dups).toBe(2);
    expect(arrivedBelow(a, 10)).toBe(0);
    // Published beyond what arrived: the tail is missing too.
    expect(arrivedBelow(a, 30)).toBe(7);
  });
});
