/**
 * Z85 (ZeroMQ RFC 32): 4 bytes as 5 printable characters. CURVE keys travel as 40-character Z85 text in
 * certificates, `X-PUBLICKEY` headers and gossip values, and as 32 raw bytes in v3 beacons.
 */
const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

export class Z85Error extends Error {
  override name = 'Z85Error';
}

/** Encodes bytes (a multiple of 4 long) as Z85. */
export function z85Encode(bytes: Uint8Array): string {
  if (bytes.length % 4 !== 0) throw new Z85Error(`Z85 encodes a multiple of 4 bytes, got ${bytes.length}`);
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    let v = ((bytes[i]! << 24) >>> 0) + (bytes[i + 1]! << 16) + (bytes[i + 2]! << 8) + bytes[i + 3]!;
    const chunk: string[] = [];
    for (let k = 0; k < 5; k++) {
      chunk.unshift(ALPHABET[v % 85]!);
      v = Math.floor(v / 85);
    }
    out += chunk.join('');
  }
  return out;
}

/** Decodes Z85 text (a multiple of 5 characters long); throws a Z85Error naming the first bad character. */
export function z85Decode(text: string): Buffer {
  if (text.length % 5 !== 0) throw new Z85Error(`Z85 text must be a multiple of 5 characters long, got ${text.length}`);
  const out = Buffer.alloc((text.length / 5) * 4);
  for (let i = 0; i < text.length; i += 5) {
    let v = 0;
    for (let k = 0; k < 5; k++) {
      const c = text.charCodeAt(i + k);
      const d = c < 128 ? DECODE[c]! : -1;
      if (d < 0) throw new Z85Error(`character ${i + k + 1} of the Z85 text is not Z85`);
      v = v * 85 + d;
    }
    if (v > 0xffffffff) throw new Z85Error(`characters ${i + 1}–${i + 5} of the Z85 text are out of range`);
    out.writeUInt32BE(v, (i / 5) * 4);
  }
  return out;
}

/** True when `text` is a 40-character Z85 CURVE key. */
export function isZ85Key(text: string): boolean {
  if (text.length !== 40) return false;
  try {
    z85Decode(text);
    return true;
  } catch {
    return false;
  }
}
