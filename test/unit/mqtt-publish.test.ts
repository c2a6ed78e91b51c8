// The bridge's own PUBLISH encoder against mqtt-packet's, byte for byte: both protocol levels, QoS 0 and 1,
// DUP and RETAIN, UTF-8 topics, and payloads across every length of the remaining-length integer.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import mqtt from 'mqtt-packet';
import { encodePublish } from '../../services/mqtt-bridge/client.ts';

describe('encodePublish', () => {
  it('is byte for byte what mqtt-packet generates', () => {
    fc.assert(fc.property(
      fc.constantFrom(4, 5), fc.constantFrom(0, 1), fc.boolean(), fc.boolean(), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
      fc.constantFrom(0, 1, 100, 121, 122, 127, 128, 16_370, 16_383, 16_384, 70_000), fc.integer({ min: 1, max: 0xffff }),
      (version, qos, dup, retain, topic, size, messageId) => {
        const packet = { cmd: 'publish' as const, topic, payload: Buffer.alloc(size, 0x61), qos: qos as 0 | 1, dup: qos > 0 && dup, retain, ...(qos > 0 ? { messageId } : {}) };
        expect(encodePublish(packet, version).equals(mqtt.generate(packet, { protocolVersion: version }))).toBe(true);
      },
    ), { numRuns: 300 });
  });
});
