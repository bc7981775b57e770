/**
 * @file Packing of integer codes: codes of ≤ 4 bits share bytes (two 4-bit, four 2-bit or eight
 * 1-bit fields, little end first), wider ones take the smallest integer dtype.
 */
import { fromTypedArray, type DType, type Tensor } from '@qgrad/core';

/** Smallest integer dtype holding [lo, hi] (wider than 4 bits: codes of ≤ 4 bits are packed). */
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

/** The int32 codes (n of them) back from `packCodes`' storage. */
export function unpackCodes(stored: Tensor, n: number, lo: number, bits: number): Int32Array {
  const src = stored.contiguous().dataSync();
  if (bits > 4) return Int32Array.from(src.subarray(0, n) as ArrayLike<number>);
  const per = 8 / bits;
  const mask = 2 ** bits - 1;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = ((src[(i / per) | 0]! >> ((i % per) * bits)) & mask) + lo;
  return out;
}
