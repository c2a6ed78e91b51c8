/**
 * The GPIO command, defined once: a mesh WHISPER whose first frame is JSON. The device answers each command
 * with a reply on the same path; the MQTT bridge forwards Home Assistant's commands in this form and waits
 * for the reply; `starling whisper` sends it by hand.
 *
 *   command  {"gpio": NAME, "set": 0|1}     sets an output, then reads it
 *            {"gpio": NAME}                 reads a line
 *   reply    {"ok": true, "gpio": NAME, "value": V}   or   {"ok": false, "gpio": NAME?, "error": "…"}
 *   query    {"peers": 1}                   which peers the device sees (the web view's picture of the mesh)
 *   reply    {"ok": true, "peers": [UUID, …]}   (at most MAX_PEERS_LISTED)
 *
 * A message that carries "ok" is a reply and is never answered (two nodes would ping-pong).
 */

export interface GpioCommand {
  gpio: string;
  /** Exactly 0 or 1; absent to read. */
  set?: 0 | 1;
}

export interface GpioReply {
  ok: boolean;
  gpio?: string;
  value?: number;
  error?: string;
  /** The answer to a peers query. */
  peers?: string[];
}

/** UUIDs a peers reply lists at most (and a reader keeps). */
export const MAX_PEERS_LISTED = 1024;
const UUID = /^[0-9A-F]{32}$/;

export class CommandError extends Error {
  override name = 'CommandError';
}

/** The frame of a command. */
export function encodeCommand(c: GpioCommand): string {
  return JSON.stringify(c.set === undefined ? { gpio: c.gpio } : { gpio: c.gpio, set: c.set });
}

/** The frame of a reply. */
export function encodeReply(r: GpioReply): string {
  return JSON.stringify(r);
}

/**
 * Reads a received frame: a command, or a reply (to a command we sent). Throws {@link CommandError} saying
 * what is wrong: not JSON, no line name, or a `set` that is not exactly 0 or 1 ("1", true and [1] are not).
 */
export function parseCommand(frame: Buffer | undefined): { command: GpioCommand } | { reply: GpioReply } | { query: 'peers' } {
  let msg: unknown;
  try {
    msg = JSON.parse(frame?.toString('utf8') ?? '');
  } catch {
    throw new CommandError('expected a JSON command such as {"gpio":"relay","set":1}');
  }
  if (!msg || typeof msg !== 'object' || Array.isArray(msg)) throw new CommandError('expected a JSON object such as {"gpio":"relay","set":1}');
  const o = msg as Record<string, unknown>;
  if ('ok' in o) {
    const peers = Array.isArray(o.peers) ? o.peers.slice(0, MAX_PEERS_LISTED).filter((p): p is string => typeof p === 'string' && UUID.test(p)) : undefined;
    return { reply: { ok: o.ok === true, gpio: typeof o.gpio === 'string' ? o.gpio : undefined, value: typeof o.value === 'number' ? o.value : undefined, error: typeof o.error === 'string' ? o.error : undefined, ...(peers ? { peers } : {}) } };
  }
  if ('peers' in o && o.gpio === undefined) return { query: 'peers' };
  if (typeof o.gpio !== 'string' || o.gpio === '') throw new CommandError('command needs "gpio": the line name');
  if (o.set === undefined) return { command: { gpio: o.gpio } };
  if (o.set !== 0 && o.set !== 1) throw new CommandError(`"set" must be 0 or 1, got ${JSON.stringify(o.set)?.slice(0, 40)}`);
  return { command: { gpio: o.gpio, set: o.set } };
}

/** What {@link sendCommand} needs of a mesh node (a ZreNode). */
export interface CommandNode {
  whisper(peer: string, ...content: string[]): boolean;
  findPeer(nameOrId: string): { name: string } | undefined;
  on(event: 'whisper', l: (m: { peer: string; content: Buffer[] }) => void): unknown;
  on(event: 'exit', l: (e: { peer: string }) => void): unknown;
  off(event: 'whisper', l: (m: { peer: string; content: Buffer[] }) => void): unknown;
  off(event: 'exit', l: (e: { peer: string }) => void): unknown;
}

/**
 * Sends a GPIO command to a peer and waits up to `timeoutMs` for its reply. Resolves with the value the device
 * read back after acting (its confirmed state); rejects with a {@link CommandError} when it refused (the reason
 * it gave: "not authorised" when our key lacks the command role), left, or did not answer in time.
 */
export function sendCommand(node: CommandNode, peer: string, command: GpioCommand, timeoutMs = 5000): Promise<number | undefined> {
  const { gpio } = command;
  const who = () => node.findPeer(peer)?.name ?? peer;
  const what = command.set === undefined ? gpio : `${gpio}=${command.set}`;
  return new Promise((resolve, reject) => {
    const done = (e: Error | undefined, value?: number) => {
      clearTimeout(timer);
      node.off('whisper', onWhisper);
      node.off('exit', onExit);
      if (e) reject(e);
      else resolve(value);
    };
    const onWhisper = (m: { peer: string; content: Buffer[] }) => {
      if (m.peer !== peer) return;
      let msg;
      try {
        msg = parseCommand(m.content[0]);
      } catch {
        return;
      }
      if (!('reply' in msg) || msg.reply.peers !== undefined || (msg.reply.gpio !== undefined && msg.reply.gpio !== gpio)) return;
      done(msg.reply.ok ? undefined : new CommandError(`${who()} refused ${what}: ${msg.reply.error ?? 'no reason given'}`), msg.reply.value);
    };
    const onExit = (e: { peer: string }) => e.peer === peer && done(new CommandError(`${gpio}: the peer left before it answered`));
    const timer = setTimeout(() => done(new CommandError(`${gpio}: no answer from ${who()} within ${timeoutMs / 1000} s`)), timeoutMs);
    node.on('whisper', onWhisper);
    node.on('exit', onExit);
    if (!node.whisper(peer, encodeCommand(command))) done(new CommandError(`${gpio}: the peer is gone or its send queue is full`));
  });
}
