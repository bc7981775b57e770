/**
 * @file js `loraMergePacked`: a LoRA layer's merged weight from a packed base, as the two kernels
 * it stands for compute it: every row of the table decoded (`packedGather`), then `loraMerge`.
 */
import type { Kernel } from '../backend.js';
import { contiguousStrides } from '../layout.js';
import { ARRAY_TYPES, type TypedArray } from '../names.js';
import { loraMerge } from './matmul.js';
import { packedGather } from './packed.js';

/** out = packedGather(0 … rows − 1) + b·(s·a), rounded as the two kernels round it. */
export const loraMergePacked: Kernel<'loraMergePacked', TypedArray> = (inputs, out, p) => {
  const [a, b] = [inputs[0]!, inputs[1]!];
  const [rows, D] = out.shape as [number, number];
  if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[1] !== D || b.shape[0] !== rows || b.shape[1] !== a.shape[0]) {
    throw new Error(`loraMergePacked: a [${a.shape.join(', ')}] and b [${b.shape.join(', ')}] do not fit the table [${rows}, ${D}] ([r, D], [rows, r])`);
  }
  const idx = { data: Int32Array.from({ length: rows }, (_, i) => i), dtype: 'int32' as const, shape: [rows], strides: [1], offset: 0 };
  const w0 = { data: new ARRAY_TYPES[out.dtype](rows * D), dtype: out.dtype, shape: [rows, D], strides: contiguousStrides([rows, D]), offset: 0 };
  packedGather([idx, ...inputs.slice(2)], w0, p);
  loraMerge([w0, a, b], out, { scale: p.scale });
};
