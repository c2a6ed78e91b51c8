// What an attacker on the same network tries with a few lines of script and no trusted key (issue 13), run
// inside a test's network namespace:
//   node attacker.cjs TELEMETRY_ENDPOINT INBOX_ENDPOINT SERVER_KEY OUR_PUBLIC OUR_SECRET
// - a plain SUB and a CURVE SUB (its own key, the device's server key) on the device's telemetry;
// - a plain DEALER and a CURVE DEALER into the device's inbox, each sending a HELLO and a GPIO command.
// Prints one JSON line: {received, sent} after 3 s (received: telemetry messages that got through).
const { Dealer, Subscriber } = require('zeromq');
const { randomBytes } = require('node:crypto');

const [telemetry, inbox, serverKey, publicKey, secretKey] = process.argv.slice(2);
const curve = { curveServerKey: serverKey, curvePublicKey: publicKey, curveSecretKey: secretKey };
let received = 0;
let sent = 0;

/** ZRE frames by hand: HELLO (sequence 1) and a WHISPER (sequence 2) with the command. */
function helloAndCommand(endpoint) {
  const str = (s) => Buffer.concat([Buffer.from([Buffer.byteLength(s)]), Buffer.from(s)]);
  const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
  const hello = Buffer.concat([Buffer.from([0xaa, 0xa1, 1, 2, 0, 1]), str(endpoint), u32(0), Buffer.from([0]), str('greenhouse'), u32(0)]);
  const whisper = Buffer.from([0xaa, 0xa1, 2, 2, 0, 2]);
  return [[hello], [whisper, Buffer.from('{"gpio":"pump","set":1}')]];
}

async function sub(opts) {
  const s = new Subscriber({ linger: 0, receiveTimeout: 3000, ...opts });
  s.subscribe('');
  s.connect(telemetry);
  try {
    for (;;) {
      await s.receive();
      received++;
    }
  } catch {
    // timed out: nothing more came
  } finally {
    s.close();
  }
}

async function dealer(opts) {
  const d = new Dealer({ linger: 0, sendTimeout: 3000, ...opts });
  d.routingId = Buffer.concat([Buffer.from([1]), randomBytes(16)]);
  d.connect(inbox);
  try {
    for (const frames of helloAndCommand('tcp://10.231.0.3:9')) {
      await d.send(frames);
      sent++;
    }
  } catch {
    // never got through
  }
  await new Promise((r) => setTimeout(r, 3000));
  d.close();
}

Promise.all([sub({}), sub(curve), dealer({}), dealer(curve)]).then(() => {
  process.stdout.write(JSON.stringify({ event: 'DONE', received, sent }) + '\n');
});
