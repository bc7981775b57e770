/**
 * @file Packing of integer codes: codes of ≤ 4 bits share bytes (two 4-bit, four 2-bit or eight
 * 1-bit fields, little end first), wider ones take the smallest integer dtype, three-code
 * (ternary) matrices may go five to a byte in base 3 (TQ1_0's order); and the layout the packed
 * kernel reads them in (`rowGroups`, `levelTable`).
 */
import { fromTypedArray, packBase3, unpackBase3, type DType, type Tensor } from '@qgrad/core';
import type { Grid } from '../grids/grid.js';
import type { Granularity } from '../grids/granularity.js';

/**
 * Smallest integer dtype holding [lo, hi] (wider than 4 bits: codes of ≤ 4 bits are packed).
 * @example [codeDType(-128, 127), codeDType(0, 255), codeDType(-512, 511)]; // ['int8', 'uint8', 'int32']
 */
export function codeDType(lo: number, hi: number): DType {
  if (lo >= -128 && hi <= 127) return 'int8';
  if (lo >= 0 && hi <= 255) return 'uint8';
  return 'int32';
}

/**
 * Stores int32 codes in [lo, hi] with `bits` per field: 1, 2 or 4 → a packed uint8 tensor of
 * ⌈n·bits/8⌉ bytes holding code − lo; otherwise the codes in `codeDType(lo, hi)`.
 * @example packCodes(tensor([1, 2, 3], { dtype: 'int32' }), 0, 4).dataSync(); // [0x21, 0x03]
 */
export function packCodes(codes: Tensor, lo: number, bits: number, hi = lo + 2 ** bits - 1): Tensor {
  const src = codes.contiguous().dataSync();
  if (bits > 4) {
    const dt = codeDType(lo, hi);
    const out = dt === 'int8' ? Int8Array.from(src) : dt === 'uint8' ? Uint8Array.from(src) : Int32Array.from(src);
    return fromTypedArray(out, [src.length], dt);
  }
  if (bits !== 1 && bits !== 2 && bits !== 4) throw new Error(`packCodes: packed fields are 1, 2 or 4 bits, got ${bits}`);
  const per = 8 / bits;
  const out = new Uint8Array(Math.ceil(src.length / per));
  for (let i = 0; i < src.length; i++) {
    const v = src[i]! - lo;
    if (!(v >= 0 && v < 2 ** bits)) throw new Error(`packCodes: code ${src[i]} at ${i} is outside ${lo}…${lo + 2 ** bits - 1}`);
    out[(i / per) | 0]! |= v << ((i % per) * bits);
  }
  return fromTypedArray(out, [out.length], 'uint8');
}

/**
 * The int32 codes (n of them) back from `packCodes`' storage.
 * @example unpackCodes(packCodes(tensor([1, 2, 3], { dtype: 'int32' }), 0, 4), 3, 0, 4); // Int32Array [1, 2, 3]
 */
export function unpackCodes(stored: Tensor, n: number, lo: number, bits: number): Int32Array {
  const src = stored.contiguous().dataSync();
  if (bits > 4) return Int32Array.from(src.subarray(0, n) as ArrayLike<number>);
  const mask = (1 << bits) - 1;
  const out = new Int32Array(n);
  for (let i = 0, bit = 0; i < n; i++, bit += bits) out[i] = (((src[bit >>> 3]! & 0xff) >> (bit & 7)) & mask) + lo;
  return out;
}

/**
 * Stores an [O, K] matrix of int32 codes in lo…lo + 2 (ternary) five per byte: digits code − lo,
 * base 3, in TQ1_0's order (core's `packBase3`; rows start on a byte, 52 bytes per 256 codes).
 * @example packTernaryBase3(tensor([[-1, 0, 1, 0, -1]], { dtype: 'int32' }), -1).dataSync(); // [51]
 */
export function packTernaryBase3(codes: Tensor, lo: number): Tensor {
  if (codes.ndim !== 2) throw new Error(`packTernaryBase3: codes must be a matrix [O, K], got shape [${codes.shape.join(', ')}]`);
  const [O, K] = codes.shape as [number, number];
  const src = codes.contiguous().dataSync();
  const digits = new Uint8Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const d = src[i]! - lo;
    if (!(d === 0 || d === 1 || d === 2)) throw new Error(`packTernaryBase3: code ${src[i]} at ${i} is outside ${lo}…${lo + 2}`);
    digits[i] = d;
  }
  const out = packBase3(digits, O, K);
  return fromTypedArray(out, [out.length], 'uint8');
}

/**
 * The int32 codes of an [O, K] matrix back from `packTernaryBase3`'s bytes.
 * @example unpackTernaryBase3(packTernaryBase3(tensor([[-1, 0, 1, 0, -1]], { dtype: 'int32' }), -1), 1, 5, -1); // Int32Array [-1, 0, 1, 0, -1]
 */
export function unpackTernaryBase3(stored: Tensor, O: number, K: number, lo: number): Int32Array {
  return Int32Array.from(unpackBase3(stored.contiguous().dataSync(), O, K), (d) => d + lo);
}

/**
 * How the scales of a weight matrix [O, K] split it along its rows: `groupSize` inputs of one row
 * per scale, and each scale shared by `rowsPerScale` consecutive rows (1, or O per tensor, or
 * b / K for blocks longer than a row). Null when groups run across rows in another way (per input
 * column, groups along the outputs, blocks that straddle rows): the packed kernel cannot read them.
 * @example rowGroups({ group: 32 }, 64, 128); // { groupSize: 32, rowsPerScale: 1 }
 */
export function rowGroups(g: Granularity, O: number, K: number): { groupSize: number; rowsPerScale: number } | null {
  if (g === 'tensor') return { groupSize: K, rowsPerScale: O };
  if (g === 'channel' || g === 'token') return { groupSize: K, rowsPerScale: 1 };
  if ('block' in g) return K % g.block === 0 ? { groupSize: g.block, rowsPerScale: 1 } : g.block % K === 0 ? { groupSize: K, rowsPerScale: g.block / K } : null;
  const axis = 'channel' in g ? g.channel : (g.axis ?? -1);
  const a = axis < 0 ? axis + 2 : axis;
  if ('channel' in g) return a === 0 ? { groupSize: K, rowsPerScale: 1 } : null;
  return a === 1 ? { groupSize: g.group, rowsPerScale: 1 } : null;
}

/**
 * The level of every field value the packed kernel can read, for codes stored by `packCodes`
 * (fields of ≤ 4 bits hold code − codeMin; 8-bit ones the int8/uint8 code itself): integer grids
 * their code (field values past codeMax continue the line, so the table stays affine), other
 * grids their decoded level, and NaN for field values no code produces.
 * @example Array.from(levelTable(makeGrid({ grid: 'ternary' }), 2, 'uint8')); // [-1, 0, 1, 2]
 */
export function levelTable(grid: Pick<Grid, 'integer' | 'codeMin' | 'codeMax' | 'decode'>, bits: number, stored: DType): Float32Array {
  const n = 2 ** bits;
  const codes = Int32Array.from({ length: n }, (_, f) => (bits <= 4 ? f + grid.codeMin : stored === 'int8' && f >= 128 ? f - 256 : f));
  if (grid.integer) return Float32Array.from(codes);
  const valid = codes.filter((q) => q >= grid.codeMin && q <= grid.codeMax);
  const levels = grid.decode(fromTypedArray(valid, [valid.length], 'int32'), 'float32').dataSync();
  const table = new Float32Array(n).fill(NaN);
  let i = 0;
  codes.forEach((q, f) => {
    if (q >= grid.codeMin && q <= grid.codeMax) table[f] = levels[i++]!;
  });
  return table;
}
