/**
 * The control messages of file transfer and updates, whispered over ZRE: two frames, `FILES` and a JSON
 * object with exactly one of these keys (the chunks themselves go over the file channel, chunks.ts).
 *
 *   offer        {"offer": {"id": SHA256, "name": NAME, "size": N}}     sender → receiver: fetch this from me
 *   received     {"received": {"id", "ok": bool, "path"?, "error"?}}    receiver → sender, when done or refused
 *   update       {"update": SIGNED_MANIFEST}                            pusher → device: install this release
 *   update-query {"update-query": {}}                                   anyone → device: how is the update?
 *   update-cancel {"update-cancel": {}}                                 pusher → device: stop the transfer
 *   status       {"status": UpdateStatus}                               device → asker (answer to the last three)
 *
 * A node that runs no files service ignores the `FILES` frame; the GPIO command handler never sees it.
 */
export const FILES_FRAME = 'FILES';

/** Where an update is on one device, as `starling update status` shows it. */
export interface UpdateStatus {
  node: string;
  /** The version running now. */
  version: string;
  state: 'idle' | 'refused' | 'fetching' | 'installing' | 'restarting' | 'trying' | 'committed' | 'rolled-back' | 'failed' | 'cancelled';
  /** The version being installed (or rolled back). */
  target?: string;
  /** 0..1 while fetching. */
  progress?: number;
  bytesReceived?: number;
  chunksReused?: number;
  error?: string;
}

export type FilesMessage =
  | { offer: { id: string; name: string; size: number } }
  | { received: { id: string; ok: boolean; path?: string; error?: string } }
  | { update: unknown }
  | { 'update-query': Record<string, never> }
  | { 'update-cancel': Record<string, never> }
  | { status: UpdateStatus };

export const encodeFiles = (m: FilesMessage): [string, string] => [FILES_FRAME, JSON.stringify(m)];

/** The message in a WHISPER's frames, undefined when they are not FILES; throws (an Error saying why) when malformed. */
export function decodeFiles(content: Buffer[]): FilesMessage | undefined {
  if (content.length !== 2 || content[0]?.toString() !== FILES_FRAME) return undefined;
  if (content[1]!.length > 512 * 1024) throw new Error(`a FILES message of ${content[1]!.length} bytes (at most 512 KiB)`);
  let o: unknown;
  try {
    o = JSON.parse(content[1]!.toString('utf8'));
  } catch {
    throw new Error('a FILES message that is not JSON');
  }
  if (!o || typeof o !== 'object' || Array.isArray(o) || Object.keys(o).length !== 1) throw new Error('a FILES message must be an object with one key');
  const [key] = Object.keys(o);
  const v = (o as Record<string, unknown>)[key!];
  switch (key) {
    case 'offer': {
      const f = v as { id?: unknown; name?: unknown; size?: unknown };
      if (typeof f?.id !== 'string' || !/^[0-9a-f]{64}$/.test(f.id) || typeof f.name !== 'string' || typeof f.size !== 'number' || !Number.isSafeInteger(f.size) || f.size < 0) {
        throw new Error('offer needs id (SHA-256 hex), name and size');
      }
      return { offer: { id: f.id, name: f.name, size: f.size } };
    }
    case 'received':
    case 'update':
    case 'update-query':
    case 'update-cancel':
    case 'status':
      if (!v || typeof v !== 'object') throw new Error(`${key} needs an object`);
      return o as FilesMessage;
    default:
      throw new Error(`unknown FILES message ${JSON.stringify(key).slice(0, 40)}`);
  }
}
