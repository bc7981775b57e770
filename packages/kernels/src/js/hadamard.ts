/**
 * @file js reference kernel for the fast Walsh–Hadamard transform along the last dim, in
 * independent blocks of a power-of-two size (Sylvester ordering, optionally orthonormal).
 */
import type { Kernel } from '../backend.js';
import type { TypedArray } from '../names.js';
import { numel, offsets } from '../layout.js';

export const fwht: Kernel<'fwht', TypedArray> = ([x], out, { blockSize: b, normalize }) => {
  const n = numel(out.shape);
  const ix = offsets(x!);
  const od = out.data;
  const o0 = out.offset;
  const buf = new Float64Array(b);
  const norm = normalize ? 1 / Math.sqrt(b) : 1;
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
