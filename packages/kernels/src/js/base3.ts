/**
 * @file The base-3 ternary layout `packedMatmul` reads with `packing: 'base3'`: five trits per
 * byte as ggml's TQ1_0 stores them, so a row of whole 256-blocks is TQ1_0's qs/qh bytes without
 * the per-block f16 scale. Packing, unpacking and the byte/digit of a row position; the kernels
 * are js/packed.ts and wasm/packed-base3.ts.
 */

/**
 * One run of a row's bytes: `bytes` bytes from byte `at`, byte m holding the trits of row
 * positions `pos + m + bytes·k` (k = 0…4, digit k; only those below `pos + length`).
 */
export interface Base3Section {
  at: number;
  pos: number;
  bytes: number;
  length: number;
}

/**
 * The sections of a row of K trits. Every block of 256 is TQ1_0's: 32 bytes for 160 trits, 16
 * for 80, then 4 bytes of four trits (and a padding digit) for the last 16. A last block of r <
 * 256 trits keeps the same rule, 160 and 80 while they fit, then ⌈t/5⌉ bytes for the t left, so
 * the 256 case is not special and a row is ≈ K/5 bytes for any K.
 * @example base3Sections(256).map((s) => s.bytes); // [32, 16, 4]
 */
export function base3Sections(K: number): Base3Section[] {
  const out: Base3Section[] = [];
  let at = 0;
  for (let start = 0; start < K; start += 256) {
    let pos = start;
    const end = Math.min(K, start + 256);
    for (const [len, bytes] of [[160, 32], [80, 16]] as const) {
      if (end - pos >= len) {
        out.push({ at, pos, bytes, length: len });
        at += bytes;
        pos += len;
      }
    }
    if (end > pos) {
      const bytes = Math.ceil((end - pos) / 5);
      out.push({ at, pos, bytes, length: end - pos });
      at += bytes;
    }
  }
  return out;
}

/**
 * Bytes of one row of K trits (rows start on a byte): 52 per whole block of 256, as TQ1_0.
 * @example base3RowBytes(256); // 52
 */
export function base3RowBytes(K: number): number {
  const s = base3Sections(K);
  return s.length ? s[s.length - 1]!.at + s[s.length - 1]!.bytes : 0;
}

/**
 * Digit k (0 the most significant) of a byte written by `packBase3`: the byte scaled back by 3^k
 * mod 256 leaves that digit in the top of (·3) >> 8 (the ⌈n·256/243⌉ rescale keeps it exact).
 * @example base3Digit(packBase3([2, 0, 1], 1, 3)[0]!, 2); // 1
 */
export function base3Digit(byte: number, k: number): number {
  return (((byte * 3 ** k) & 0xff) * 3) >> 8;
}

/**
 * For each position of a row of K, the byte (within the row) and digit that hold its trit.
 * @example base3Positions(5).byte; // Int32Array [0, 0, 0, 0, 0]
 */
export function base3Positions(K: number): { byte: Int32Array; digit: Uint8Array } {
  const byte = new Int32Array(K);
  const digit = new Uint8Array(K);
  for (const s of base3Sections(K)) {
    for (let i = 0; i < s.length; i++) {
      byte[s.pos + i] = s.at + (i % s.bytes);
      digit[s.pos + i] = Math.floor(i / s.bytes);
    }
  }
  return { byte, digit };
}

/**
 * Packs trits (0, 1, 2; row-major [O, K]) five to a byte: digits base 3, the first the most
 * significant, unused digits 0, the 0…242 number rescaled to a byte as ⌈n·256/243⌉ (TQ1_0's).
 * @example Array.from(packBase3([0, 1, 2, 1, 0], 1, 5)); // [51]: n = 0·81 + 1·27 + 2·9 + 1·3 + 0 = 48, ⌈48·256/243⌉
 */
export function packBase3(trits: ArrayLike<number>, O: number, K: number): Uint8Array {
  if (trits.length !== O * K) throw new Error(`packBase3: got ${trits.length} trits for [${O}, ${K}]`);
  const rb = base3RowBytes(K);
  const out = new Uint8Array(O * rb);
  const sections = base3Sections(K);
  for (let o = 0; o < O; o++) {
    for (const s of sections) {
      for (let m = 0; m < s.bytes; m++) {
        let n = 0;
        for (let k = 0; k < 5; k++) {
          const i = m + s.bytes * k;
          const t = i < s.length ? trits[o * K + s.pos + i]! : 0;
          if (!(t === 0 || t === 1 || t === 2)) throw new Error(`packBase3: trit ${t} at [${o}, ${s.pos + i}] is not 0, 1 or 2`);
          n = n * 3 + t;
        }
        out[o * rb + s.at + m] = Math.floor((n * 256 + 242) / 243);
      }
    }
  }
  return out;
}

/**
 * The trits (0, 1, 2; row-major [O, K]) back from `packBase3`'s bytes.
 * @example Array.from(unpackBase3(packBase3([2, 0, 1], 1, 3), 1, 3)); // [2, 0, 1]
 */
export function unpackBase3(bytes: ArrayLike<number>, O: number, K: number): Uint8Array {
  const rb = base3RowBytes(K);
  if (bytes.length < O * rb) throw new Error(`unpackBase3: got ${bytes.length} bytes, [${O}, ${K}] needs ${O * rb}`);
  const { byte, digit } = base3Positions(K);
  const out = new Uint8Array(O * K);
  for (let o = 0; o < O; o++) for (let k = 0; k < K; k++) out[o * K + k] = base3Digit(bytes[o * rb + byte[k]!]! & 0xff, digit[k]!);
  return out;
}
