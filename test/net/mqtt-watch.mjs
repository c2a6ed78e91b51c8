// A bare MQTT 3.1.1 watcher for tests inside a network namespace (where the test process cannot reach):
// connects to HOST:PORT, subscribes to '#', and prints each message as a JSON line {event, topic, payload}.
//   node mqtt-watch.mjs HOST PORT
import { connect } from 'node:net';
import mqtt from 'mqtt-packet';

const [host, port] = process.argv.slice(2);
const parser = mqtt.parser({ protocolVersion: 4 });
const send = (sock, packet) => sock.write(mqtt.generate(packet, { protocolVersion: 4 }));
function start() {
  const sock = connect(Number(port), host, () => {
    send(sock, { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: `watch-${process.pid}`, keepalive: 30 });
  });
  sock.on('data', (d) => parser.parse(d));
  sock.on('error', () => {});
  sock.on('close', () => setTimeout(start, 200));
  parser.removeAllListeners('packet');
  parser.on('packet', (p) => {
    if (p.cmd === 'connack') {
      send(sock, { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }] });
      process.stdout.write(JSON.stringify({ event: 'CONNECTED' }) + '\n');
    } else if (p.cmd === 'publish') process.stdout.write(JSON.stringify({ event: 'MESSAGE', topic: p.topic, payload: p.payload.toString() }) + '\n');
  });
}
start();
