/**
 * Telemetry over the ZRE mesh: a publisher advertises its endpoints in the node's HELLO headers
 * (FORMAT.md, "Finding publishers"); a subscriber follows every peer that advertises one, connecting on ENTER
 * and disconnecting on EXIT. No configuration on either side.
 */
import type { ZreNode, PeerInfo } from '../zre/node.ts';
import type { Publisher } from './publisher.ts';
import type { Subscriber } from './subscriber.ts';

export const HEADER_ENDPOINTS = 'X-TELEMETRY';
export const HEADER_SNAPSHOT = 'X-TELEMETRY-SNAPSHOT';
export const HEADER_EPGM = 'X-TELEMETRY-EPGM';
/** The device's telemetry prefix, so a bridge can tell its topics. */
export const HEADER_PREFIX = 'X-TELEMETRY-PREFIX';
/**
 * What follows a device's prefix in its status topics (`<prefix>@node/rss`, …: services/fleet.ts). Sensor and
 * line names cannot hold `@` or `/`, so no sensor topic can be one.
 */
export const STATUS_SEGMENT = '@node/';
/** The publisher's id (32 upper-case hex digits, as in every batch), so a reader can name a batch's node. */
export const HEADER_PUBLISHER = 'X-TELEMETRY-ID';
/** Comma-separated names of the device's GPIO outputs, which peers may set by WHISPER. */
export const HEADER_OUTPUTS = 'X-GPIO-OUTPUTS';
/** Comma-separated names of the device's GPIO inputs. */
export const HEADER_INPUTS = 'X-GPIO-INPUTS';

/**
 * The HELLO headers that advertise a publisher (FORMAT.md, "Finding publishers"): its tcp endpoints, its
 * snapshot endpoint, `epgm` (`group:port`) when the stream is multicast, and with `device` the telemetry
 * prefix and the GPIO lines peers may command or read.
 */
export function telemetryHeaders(pub: Publisher, epgm?: string, device?: { prefix: string; outputs: string[]; inputs: string[] }): Record<string, string> {
  const h: Record<string, string> = {};
  if (device) {
    h[HEADER_PREFIX] = device.prefix;
    if (device.outputs.length) h[HEADER_OUTPUTS] = device.outputs.join(',');
    if (device.inputs.length) h[HEADER_INPUTS] = device.inputs.join(',');
  }
  const unicast = pub.endpoints.filter((e) => e.startsWith('tcp://'));
  if (unicast.length > 0) h[HEADER_ENDPOINTS] = unicast.join(' ');
  h[HEADER_PUBLISHER] = pub.id.toString('hex').toUpperCase();
  if (pub.snapshotEndpoint) h[HEADER_SNAPSHOT] = pub.snapshotEndpoint;
  if (epgm) h[HEADER_EPGM] = epgm;
  return h;
}

/** Sets {@link telemetryHeaders} on a node that has not started yet. */
export function advertise(node: ZreNode, pub: Publisher, epgm?: string, device?: { prefix: string; outputs: string[]; inputs: string[] }): void {
  for (const [k, v] of Object.entries(telemetryHeaders(pub, epgm, device))) node.setHeader(k, v);
}

export type Transport = 'auto' | 'tcp' | 'epgm';

/** tcp endpoints one peer may advertise in X-TELEMETRY; a header listing more is refused. */
export const MAX_ADVERTISED_ENDPOINTS = 4;

/** The host part of `tcp://IPv4:port`, or undefined. */
const tcpHost = (endpoint: string): string | undefined => /^tcp:\/\/(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(endpoint)?.[1];

/**
 * What a peer advertises, checked: at most {@link MAX_ADVERTISED_ENDPOINTS} tcp endpoints and a snapshot
 * endpoint, each on the host of the peer's own ZRE inbox (so a peer cannot make us dial a third host), and an
 * epgm `group:port` in 224.0.0.0/4. Throws an Error saying what is wrong.
 */
export function advertised(peer: PeerInfo): { tcp: string[]; snapshot?: string; epgm?: string } {
  const host = tcpHost(peer.endpoint);
  const onPeer = (e: string, what: string): string => {
    const h = tcpHost(e);
    if (!h) throw new Error(`${what} ${JSON.stringify(e.slice(0, 60))} is not tcp://IPv4:port`);
    if (h !== host) throw new Error(`${what} ${e} is not on the peer's own address ${host}`);
    return e;
  };
  const tcp = peer.headers[HEADER_ENDPOINTS]?.split(' ').filter(Boolean) ?? [];
  if (tcp.length > MAX_ADVERTISED_ENDPOINTS) throw new Error(`${HEADER_ENDPOINTS} lists ${tcp.length} endpoints (at most ${MAX_ADVERTISED_ENDPOINTS})`);
  for (const e of tcp) onPeer(e, HEADER_ENDPOINTS);
  const snapshot = peer.headers[HEADER_SNAPSHOT];
  if (snapshot !== undefined) onPeer(snapshot, HEADER_SNAPSHOT);
  const epgm = peer.headers[HEADER_EPGM];
  if (epgm !== undefined) {
    const m = /^(\d{1,3})\.\d{1,3}\.\d{1,3}\.\d{1,3}:(\d{1,5})$/.exec(epgm);
    if (!m || Number(m[1]) < 224 || Number(m[1]) > 239 || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new Error(`${HEADER_EPGM} ${JSON.stringify(epgm.slice(0, 60))} is not a multicast GROUP:PORT`);
  }
  return { tcp, snapshot, epgm };
}

/** Following publishers: `stop()` ends it; `refused` counts peers whose advertisement failed {@link advertised}. */
export interface Following {
  stop(): void;
  readonly refused: number;
}

/**
 * Connects `sub` to every publisher the node meets. `auto` takes a peer's epgm stream when it has one and this
 * zeromq.js can (one connection per group serves every publisher on it), else its tcp endpoint.
 * Each new publisher is asked for its snapshot unless `snapshot` is false. `onConnect` hears each endpoint
 * taken; `onError` each endpoint that could not be followed and each advertisement refused.
 */
export function follow(
  node: ZreNode, sub: Subscriber,
  opts: {
    transport?: Transport; pgm: boolean; snapshot?: boolean; accept?: (peer: PeerInfo) => boolean; onConnect?: (endpoint: string, peer: PeerInfo) => void; onError?: (e: Error) => void;
    /** Take only the topics under each peer's prefix followed by this (e.g. its status topics), in either mode. */
    under?: string;
  },
): Following {
  const byPeer = new Map<string, string[]>();
  const transport = opts.transport ?? 'auto';
  let refused = 0;
  const onEnter = (peer: PeerInfo) => {
    if (opts.accept && !opts.accept(peer)) return;
    let ad: ReturnType<typeof advertised>;
    try {
      ad = advertised(peer);
    } catch (e) {
      refused++;
      opts.onError?.(new Error(`not following ${peer.name || peer.peer}: ${(e as Error).message}`));
      return;
    }
    const useEpgm = ad.epgm !== undefined && (transport === 'epgm' || (transport === 'auto' && opts.pgm));
    const chosen = useEpgm ? [`epgm://${node.iface!.address};${ad.epgm}`] : transport === 'epgm' ? [] : ad.tcp;
    if (chosen.length === 0) return;
    byPeer.set(peer.peer, chosen);
    const snapshot = opts.snapshot === false ? undefined : ad.snapshot;
    // Secure mode: the publisher's key is the one its node was proven with (X-PUBLICKEY).
    // Its topics are then taken only under its own prefix, which the bridge pins to that key.
    const key = node.peerKey(peer.peer);
    const only = key === undefined && opts.under === undefined ? undefined : (peer.headers[HEADER_PREFIX] ?? '') + (opts.under ?? '');
    for (const endpoint of chosen) {
      opts.onConnect?.(endpoint, peer);
      sub.connect(endpoint, snapshot, key, only).catch((e: Error) => opts.onError?.(e));
    }
  };
  const onExit = ({ peer }: { peer: string }) => {
    for (const endpoint of byPeer.get(peer) ?? []) {
      // An epgm group may carry other publishers still here: keep it while any peer uses it.
      const stillUsed = [...byPeer.entries()].some(([p, eps]) => p !== peer && eps.includes(endpoint));
      if (!stillUsed) sub.disconnect(endpoint);
    }
    byPeer.delete(peer);
  };
  node.on('enter', onEnter);
  node.on('exit', onExit);
  for (const p of node.peerList()) onEnter(p);
  return {
    stop: () => {
      node.off('enter', onEnter);
      node.off('exit', onExit);
    },
    get refused() {
      return refused;
    },
  };
}

/**
 * Which node each publisher belongs to, by the id every batch carries: this node's own publisher (`own`) and
 * each peer's advertised X-TELEMETRY-ID → the node's name (its UUID when it has none). A label, not a proof:
 * in secure mode what a publisher may send is bounded by its prefix ({@link follow}), not by this.
 */
export function publisherNames(node: ZreNode, own: Buffer | undefined): Map<string, string> {
  const names = new Map<string, string>();
  for (const p of node.peerList()) {
    const id = p.headers[HEADER_PUBLISHER];
    if (id) names.set(id, p.name || p.peer);
  }
  if (own) names.set(own.toString('hex').toUpperCase(), node.name);
  return names;
}

/** GPIO lines one peer may advertise (outputs and inputs each); a HELLO listing more is not bridged. */
export const MAX_PEER_LINES = 64;
const LINE_NAME = /^[a-z0-9_]{1,64}$/;
const PREFIX = /^(?!\$)[^+#\u0000-\u001f\u007f-\u009f]{0,128}$/;

/**
 * A peer's advertised telemetry prefix and GPIO lines, checked as the schema checks our own: names of
 * lower-case letters, digits and _ (at most 64 bytes), at most {@link MAX_PEER_LINES} of each kind, and a
 * prefix that can be part of an MQTT topic. Throws an Error saying what is wrong.
 */
export function peerLines(p: PeerInfo): { prefix: string; outputs: string[]; inputs: string[] } {
  const prefix = p.headers[HEADER_PREFIX] ?? '';
  if (!PREFIX.test(prefix)) throw new Error(`${HEADER_PREFIX} ${JSON.stringify(prefix.slice(0, 60))} cannot be part of an MQTT topic`);
  const list = (header: string): string[] => {
    const names = (p.headers[header] ?? '').split(',').filter(Boolean);
    if (names.length > MAX_PEER_LINES) throw new Error(`${header} lists ${names.length} lines (at most ${MAX_PEER_LINES})`);
    const bad = names.find((n) => !LINE_NAME.test(n));
    if (bad !== undefined) throw new Error(`${header} holds ${JSON.stringify(bad.slice(0, 60))}; expected lower-case letters, digits and _`);
    return names;
  };
  return { prefix, outputs: list(HEADER_OUTPUTS), inputs: list(HEADER_INPUTS) };
}
