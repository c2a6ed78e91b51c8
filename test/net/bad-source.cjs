// A peer's file server that lies once (issue 15): serves FILE under its SHA-256 as Starling's does, but flips a
// byte of the first chunk it sends to each fetcher. Run inside a test's network namespace:
//   node bad-source.cjs ADDRESS FILE
// Prints {"event":"listening","endpoint":…,"sha256":…}, then {"event":"corrupted","index":N} per lie.
const { Router } = require('zeromq');
const { createHash } = require('node:crypto');
const { readFileSync } = require('node:fs');

const [address, file] = process.argv.slice(2);
const CHUNK = 256 * 1024;
const data = readFileSync(file);
const hashes = [];
for (let off = 0; off < data.length; off += CHUNK) hashes.push(createHash('sha256').update(data.subarray(off, off + CHUNK)).digest());
const sha256 = createHash('sha256').update(data).digest('hex');
const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

(async () => {
  const router = new Router({ linger: 0 });
  await router.bind(`tcp://${address}:0`);
  emit({ event: 'listening', endpoint: router.lastEndpoint, sha256 });
  const lied = new Set();
  for await (const [rid, proto, verb, id, index] of router) {
    const i = index.readUInt32BE(0);
    if (verb.toString() === 'META') {
      const head = Buffer.alloc(12);
      head.writeBigUInt64BE(BigInt(data.length), 0);
      head.writeUInt32BE(CHUNK, 8);
      await router.send([rid, proto, Buffer.from('META'), id, u32(0), Buffer.concat([head, ...hashes])]);
      continue;
    }
    const chunk = Buffer.from(data.subarray(i * CHUNK, (i + 1) * CHUNK));
    const who = rid.toString('hex');
    if (!lied.has(who)) {
      lied.add(who);
      chunk[100] ^= 0xff;
      emit({ event: 'corrupted', index: i });
    }
    await router.send([rid, proto, Buffer.from('CHUNK'), id, u32(i), chunk]);
  }
})();
