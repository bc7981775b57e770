/**
 * @file js reference batched matmul over strided views (transposes are just strides).
 */
import type { Kernel } from '../backend.js';
import type { TypedArray } from '../names.js';
import { offsets } from '../layout.js';

export const matmul: Kernel<'matmul', TypedArray> = ([a, b], out) => {
  const r = out.shape.length;
  const M = out.shape[r - 2]!;
  const N = out.shape[r - 1]!;
  const K = a!.shape[r - 1]!;
  const batch = out.shape.slice(0, r - 2);
  const aBase = offsets({ shape: batch, strides: a!.strides.slice(0, r - 2), offset: a!.offset });
  const bBase = offsets({ shape: batch, strides: b!.strides.slice(0, r - 2), offset: b!.offset });
  const [sam, sak] = [a!.strides[r - 2]!, a!.strides[r - 1]!];
  const [sbk, sbn] = [b!.strides[r - 2]!, b!.strides[r - 1]!];
  const ad = a!.data;
  const bd = b!.data;
  const od = out.data;
  const row = new Float64Array(N);
  for (let t = 0; t < aBase.length; t++) {
    const a0 = aBase[t]!;
    const b0 = bBase[t]!;
    const o0 = out.offset + t * M * N;
    for (let i = 0; i < M; i++) {
      row.fill(0);
      for (let k = 0; k < K; k++) {
        const av = ad[a0 + i * sam + k * sak]!;
        const bk = b0 + k * sbk;
        for (let j = 0; j < N; j++) row[j] += av * bd[bk + j * sbn]!;
      }
      for (let j = 0; j < N; j++) od[o0 + i * N + j] = row[j]!;
    }
  }
};
