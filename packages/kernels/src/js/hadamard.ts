/**
 * @file js reference kernel for the fast Walsh–Hadamard transform along the last dim, in
 * independent blocks of a power-of-two size (Sylvester ordering, optionally orthonormal).
 * It computes in out's dtype: a float32 transform rounds every butterfly to float32 (a
 * Float32Array buffer) and multiplies by the float32 1/√b, as a float32 kernel does, so the wasm
 * f32x4 kernel is bit-identical to it and costs no float64 conversions; float64 stays in double.
 * (It used to transform float32 in double and round once; float32 results now carry up to log₂ b
 * more roundings. The Hadamard-dependent tests pass unchanged except the PTQ migration bound,
 * restated in ulp of the output; no golden fixture covers the transform.)
 */
import type { Kernel } from '../backend.js';
import type { TypedArray } from '../names.js';
import { numel, offsets } from '../layout.js';

export const fwht: Kernel<'fwht', TypedArray> = ([x], out, { blockSize: b, normalize }) => {
  const n = numel(out.shape);
  const ix = offsets(x!);
  const od = out.data;
  const o0 = out.offset;
  // stores into buf round each butterfly to out's precision (a + c of two float32s, rounded once, is
  // the float32 sum); the last product is exact in double and rounded once by the store into od
  const f32 = out.dtype === 'float32';
  const buf = f32 ? new Float32Array(b) : new Float64Array(b);
  const norm = normalize ? (f32 ? Math.fround(1 / Math.sqrt(b)) : 1 / Math.sqrt(b)) : 1;
  for (let start = 0; start < n; start += b) {
    for (let j = 0; j < b; j++) buf[j] = x!.data[ix[start + j]!]!;
    // butterflies: (a, c) → (a + c, a − c) at strides h = 1, 2, 4, … (H_2b = [[H, H], [H, −H]])
    for (let h = 1; h < b; h *= 2) {
      for (let i = 0; i < b; i += 2 * h) {
        for (let j = i; j < i + h; j++) {
          const a = buf[j]!;
          const c = buf[j + h]!;
          buf[j] = a + c;
          buf[j + h] = a - c;
        }
      }
    }
    for (let j = 0; j < b; j++) od[o0 + start + j] = buf[j]! * norm;
  }
};
