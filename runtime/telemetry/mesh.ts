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
/** Comma-separated names of the device's GPIO outputs, which peers may set by WHISPER. */
export const HEADER_OUTPUTS = 'X-GPIO-OUTPUTS';
/** Comma-separated names of the device's GPIO inputs. */
export const HEADER_INPUTS = 'X-GPIO-INPUTS';

/**
 * Sets the headers on a node that has not started yet. `epgm` is `group:port` when the stream is multicast;
 * `device` names the telemetry prefix and the GPIO outputs peers may command.
 */
export function advertise(node: ZreNode, pub: Publisher, epgm?: string, device?: { prefix: string; outputs: string[]; inputs: string[] }): void {
  if (device) {
    node.setHeader(HEADER_PREFIX, device.prefix);
    if (device.outputs.length) node.setHeader(HEADER_OUTPUTS, device.outputs.join(','));
    if (device.inputs.length) node.setHeader(HEADER_INPUTS, device.inputs.join(','));
  }
  const unicast = pub.endpoints.filter((e) => e.startsWith('tcp://'));
  if (unicast.length > 0) node.setHeader(HEADER_ENDPOINTS, unicast.join(' '));
  if (pub.snapshotEndpoint) node.setHeader(HEADER_SNAPSHOT, pub.snapshotEndpoint);
  if (epgm) node.setHeader(HEADER_EPGM, epgm);
}

export type Transport = 'auto' | 'tcp' | 'epgm';

/**
 * Connects `sub` to every publisher the node meets. `auto` takes a peer's epgm stream when it has one and this
 * zeromq.js can (one connection per group serves every publisher on it), else its tcp endpoint.
 * Each new publisher is asked for its snapshot unless `snapshot` is false. `onConnect` hears each endpoint
 * taken. Returns the function that stops following.
 */
export function follow(
  node: ZreNode, sub: Subscriber, opts: { transport?: Transport; pgm: boolean; snapshot?: boolean; onConnect?: (endpoint: string, peer: PeerInfo) => void; onError?: (e: Error) => void },
): () => void {
  const byPeer = new Map<string, string[]>();
  const transport = opts.transport ?? 'auto';
  const onEnter = (peer: PeerInfo) => {
    const tcp = peer.headers[HEADER_ENDPOINTS]?.split(' ').filter(Boolean) ?? [];
    const group = peer.headers[HEADER_EPGM];
    const useEpgm = group !== undefined && (transport === 'epgm' || (transport === 'auto' && opts.pgm));
    const chosen = useEpgm ? [`epgm://${node.iface!.address};${group}`] : transport === 'epgm' ? [] : tcp;
    if (chosen.length === 0) return;
    byPeer.set(peer.peer, chosen);
    const snapshot = opts.snapshot === false ? undefined : peer.headers[HEADER_SNAPSHOT];
    for (const endpoint of chosen) {
      opts.onConnect?.(endpoint, peer);
      sub.connect(endpoint, snapshot).catch((e: Error) => opts.onError?.(e));
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
  return () => {
    node.off('enter', onEnter);
    node.off('exit', onExit);
  };
}
