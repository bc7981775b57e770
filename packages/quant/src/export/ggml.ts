/**
 * @file ggml's tensor encodings as qgrad writes and reads them: F32, F16, Q8_0, Q4_0, TQ1_0 and
 * TQ2_0 blocks (layouts in shared/notes/interop.md 1.6), from stored codes and scales where a QAT
 * grid agrees with the block format, else by ggml's reference rounding; and back to codes,
 * scales and values. Nothing here knows the GGUF container.
 */
import { floatToHalf, halfToFloat } from './bytes.js';

/** The ggml types qgrad exports. */
export type GgmlTypeName = 'F32' | 'F16' | 'Q8_0' | 'Q4_0' | 'TQ1_0' | 'TQ2_0';

/** id in the file, weights per block, bytes per block, code range of a block's integers. */
export const GGML_TYPES: Record<GgmlTypeName, { id: number; block: number; bytes: number; codes: [number, number] | null }> = {
  F32: { id: 0, block: 1, bytes: 4, codes: null },
  F16: { id: 1, block: 1, bytes: 2, codes: null },
  Q4_0: { id: 2, block: 32, bytes: 18, codes: [-8, 7] },
  Q8_0: { id: 8, block: 32, bytes: 34, codes: [-128, 127] },
  TQ1_0: { id: 34, block: 256, bytes: 54, codes: [-1, 1] },
  TQ2_0: { id: 35, block: 256, bytes: 66, codes: [-1, 1] },
};

/**
 * The type named by a file's type id (undefined for types qgrad does not read).
 * @example ggmlTypeOfId(8); // 'Q8_0'
 */
export function ggmlTypeOfId(id: number): GgmlTypeName | undefined {
  return (Object.keys(GGML_TYPES) as GgmlTypeName[]).find((k) => GGML_TYPES[k].id === id);
}

/**
 * Bytes of `n` weights of a type (n a multiple of its block).
 * @example ggmlBytes('Q8_0', 64); // 68: two blocks of 32 int8 codes + an f16 scale
 */
export function ggmlBytes(type: GgmlTypeName, n: number): number {
  const t = GGML_TYPES[type];
  return (n / t.block) * t.bytes;
}

/** Weights as blocks: integer codes and one scale per block (both in block order). */
export interface Blocks {
  codes: Int32Array;
  scales: Float32Array;
}

const f = Math.fround;
/** C's roundf / lroundf: half away from zero. */
const roundAway = (v: number) => Math.sign(v) * Math.floor(Math.abs(v) + 0.5);

/**
 * ggml's reference quantiser of a block type (quantize_row_*_ref), as codes and float32 scales.
 * @example const blocks = ggmlQuantize('Q4_0', new Float32Array(weights));
 */
export function ggmlQuantize(type: Exclude<GgmlTypeName, 'F32' | 'F16'>, x: Float32Array): Blocks {
  const B = GGML_TYPES[type].block;
  const codes = new Int32Array(x.length);
  const scales = new Float32Array(x.length / B);
  for (let b = 0; b < scales.length; b++) {
    const o = b * B;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < B; j++) {
      const v = x[o + j]!;
      if (Math.abs(v) > amax) {
        amax = Math.abs(v);
        max = v;
      }
    }
    // Q8_0: d = amax/127; Q4_0: d = (signed max)/−8 so that element lands on −8; TQ: d = amax
    const d = type === 'Q8_0' ? f(amax / 127) : type === 'Q4_0' ? f(max / -8) : amax;
    const id = d ? f(1 / d) : 0;
    scales[b] = halfToFloat(floatToHalf(d));
    for (let j = 0; j < B; j++) {
      const u = f(x[o + j]! * id);
      // Q4_0 truncates u + 8.5 toward zero (an int8 cast) and keeps ≤ 15
      codes[o + j] = type === 'Q4_0' ? Math.min(15, Math.trunc(f(u + 8.5))) - 8 : roundAway(u);
    }
  }
  return { codes, scales };
}

/**
 * The bytes of blocks (codes must lie in the type's range; scales are rounded to half).
 * @example const bytes = encodeBlocks('Q4_0', ggmlQuantize('Q4_0', values));
 */
export function encodeBlocks(type: Exclude<GgmlTypeName, 'F32' | 'F16'>, blk: Blocks): Uint8Array {
  const { block: B, bytes, codes: range } = GGML_TYPES[type];
  const nb = blk.scales.length;
  const out = new Uint8Array(nb * bytes);
  const dv = new DataView(out.buffer);
  const c = blk.codes;
  for (let i = 0; i < c.length; i++) if (!(c[i]! >= range![0] && c[i]! <= range![1])) throw new Error(`encodeBlocks: code ${c[i]} at ${i} is outside ${type}'s ${range![0]}…${range![1]}`);
  for (let b = 0; b < nb; b++) {
    const o = b * bytes;
    const x = b * B;
    const d = floatToHalf(blk.scales[b]!);
    if (type === 'Q8_0') {
      dv.setUint16(o, d, true);
      for (let j = 0; j < 32; j++) dv.setInt8(o + 2 + j, c[x + j]!);
    } else if (type === 'Q4_0') {
      dv.setUint16(o, d, true);
      // byte j: element j in the low nibble, element j + 16 in the high one, each stored + 8
      for (let j = 0; j < 16; j++) out[o + 2 + j] = (c[x + j]! + 8) | ((c[x + j + 16]! + 8) << 4);
    } else if (type === 'TQ2_0') {
      // two groups of 128 weights; byte m of group g holds g·128 + m + 32k at bits 2k
      for (let g = 0; g < 2; g++) {
        for (let m = 0; m < 32; m++) {
          let q = 0;
          for (let k = 0; k < 4; k++) q |= (c[x + g * 128 + m + 32 * k]! + 1) << (2 * k);
          out[o + g * 32 + m] = q;
        }
      }
      dv.setUint16(o + 64, d, true);
    } else {
      // five trits per byte, first weight most significant, rescaled to a byte as ⌈n·256/243⌉
      const pack = (idx: number[]) => {
        let q = 0;
        for (const i of idx) q = q * 3 + (c[x + i]! + 1);
        for (let k = idx.length; k < 5; k++) q *= 3; // qh bytes hold four trits and a zero
        return Math.floor((q * 256 + 242) / 243);
      };
      for (let m = 0; m < 32; m++) out[o + m] = pack([0, 1, 2, 3, 4].map((k) => m + 32 * k));
      for (let m = 0; m < 16; m++) out[o + 32 + m] = pack([0, 1, 2, 3, 4].map((k) => 160 + m + 16 * k));
      for (let j = 0; j < 4; j++) out[o + 48 + j] = pack([0, 1, 2, 3].map((k) => 240 + j + 4 * k));
      dv.setUint16(o + 52, d, true);
    }
  }
  return out;
}

/**
 * Codes and scales back from block bytes (`n` weights; bytes already checked to be the right length).
 * @example const { codes, scales } = decodeBlocks('Q8_0', bytes, 64);
 */
export function decodeBlocks(type: Exclude<GgmlTypeName, 'F32' | 'F16'>, bytes: Uint8Array, n: number): Blocks {
  const { block: B, bytes: size } = GGML_TYPES[type];
  const nb = n / B;
  const codes = new Int32Array(n);
  const scales = new Float32Array(nb);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const trit = (byte: number, k: number) => (((byte * 3 ** k) & 0xff) * 3) >> 8;
  for (let b = 0; b < nb; b++) {
    const o = b * size;
    const x = b * B;
    if (type === 'Q8_0') {
      scales[b] = halfToFloat(dv.getUint16(o, true));
      for (let j = 0; j < 32; j++) codes[x + j] = dv.getInt8(o + 2 + j);
    } else if (type === 'Q4_0') {
      scales[b] = halfToFloat(dv.getUint16(o, true));
      for (let j = 0; j < 16; j++) {
        codes[x + j] = (bytes[o + 2 + j]! & 15) - 8;
        codes[x + j + 16] = (bytes[o + 2 + j]! >> 4) - 8;
      }
    } else if (type === 'TQ2_0') {
      for (let g = 0; g < 2; g++) for (let m = 0; m < 32; m++) for (let k = 0; k < 4; k++) codes[x + g * 128 + m + 32 * k] = ((bytes[o + g * 32 + m]! >> (2 * k)) & 3) - 1;
      scales[b] = halfToFloat(dv.getUint16(o + 64, true));
    } else {
      for (let m = 0; m < 32; m++) for (let k = 0; k < 5; k++) codes[x + m + 32 * k] = trit(bytes[o + m]!, k) - 1;
      for (let m = 0; m < 16; m++) for (let k = 0; k < 5; k++) codes[x + 160 + m + 16 * k] = trit(bytes[o + 32 + m]!, k) - 1;
      for (let j = 0; j < 4; j++) for (let k = 0; k < 4; k++) codes[x + 240 + j + 4 * k] = trit(bytes[o + 48 + j]!, k) - 1;
      scales[b] = halfToFloat(dv.getUint16(o + 52, true));
    }
  }
  return { codes, scales };
}

/**
 * Values as ggml's to_float computes them: float32 code·d (TQ2_0's code 3 decodes to 2·d, as ggml's does).
 * @example const values = dequantizeGgml('Q4_0', bytes, 4096);
 */
export function dequantizeGgml(type: GgmlTypeName, bytes: Uint8Array, n: number): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  if (type === 'F32') for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
  else if (type === 'F16') for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
  else {
    const { codes, scales } = decodeBlocks(type, bytes, n);
    const B = GGML_TYPES[type].block;
    for (let i = 0; i < n; i++) out[i] = codes[i]! * scales[(i / B) | 0]!;
  }
  return out;
}

/**
 * F32 / F16 bytes of values.
 * @example encodePlain('F16', new Float32Array([1, 2])).length; // 4
 */
export function encodePlain(type: 'F32' | 'F16', x: Float32Array): Uint8Array {
  const out = new Uint8Array(x.length * (type === 'F32' ? 4 : 2));
  const dv = new DataView(out.buffer);
  for (let i = 0; i < x.length; i++) {
    if (type === 'F32') dv.setFloat32(4 * i, x[i]!, true);
    else dv.setUint16(2 * i, floatToHalf(x[i]!), true);
  }
  return out;
}
