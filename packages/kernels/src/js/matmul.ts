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

/**
 * A LoRA adapter's weight gradients (see names.ts): hs = x·Aᵀ and gb = g·B [n, r], then
 * dA = s·gbᵀ·x and dB = s·gᵀ·hs, each product summed in float64 and rounded to out's dtype as
 * `matmul` rounds it, then multiplied by s (itself rounded to out's dtype, as a 0-d tensor is).
 */
export const loraBackward: Kernel<'loraBackward', TypedArray> = ([x, g, a, b, gradB], out, { scale }) => {
  const [n, inF] = x!.shape as [number, number];
  const outF = g!.shape[1]!;
  const r = a!.shape[0]!;
  const Arr = out.data.constructor as Float32ArrayConstructor | Float64ArrayConstructor;
  const at = (v: typeof x, i: number, j: number) => v!.data[v!.offset + i * v!.strides[0]! + j * v!.strides[1]!]!;
  // hs[t, j] = Σ_i x[t, i]·a[j, i];  gb[t, j] = Σ_o g[t, o]·b[o, j]
  const hs = new Arr(n * r);
  const gb = new Arr(n * r);
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < r; j++) {
      let u = 0;
      for (let i = 0; i < inF; i++) u += at(x, t, i) * at(a, j, i);
      hs[t * r + j] = u;
      let v = 0;
      for (let o = 0; o < outF; o++) v += at(g, t, o) * at(b, o, j);
      gb[t * r + j] = v;
    }
  }
  const od = out.data;
  const round = new Arr(1);
  const s = Arr.of(scale)[0]!;
  // dA[j, i] = s·Σ_t gb[t, j]·x[t, i];  dB[o, j] = s·Σ_t g[t, o]·hs[t, j]
  for (let j = 0; j < r; j++) {
    for (let i = 0; i < inF; i++) {
      let u = 0;
      for (let t = 0; t < n; t++) u += gb[t * r + j]! * at(x, t, i);
      round[0] = u;
      od[out.offset + j * inF + i] = s * round[0]!;
    }
  }
  for (let o = 0; o < outF; o++) {
    for (let j = 0; j < r; j++) {
      let u = 0;
      for (let t = 0; t < n; t++) u += at(g, t, o) * hs[t * r + j]!;
      round[0] = u;
      gradB!.data[gradB!.offset + o * r + j] = s * round[0]!;
    }
  }
};

/** w0 + b·(s·a) (see names.ts): s and s·a rounded to out's dtype, the product as `matmul` sums it, then the add. */
export const loraMerge: Kernel<'loraMerge', TypedArray> = ([w0, a, b], out, { scale }) => {
  const [outF, inF] = w0!.shape as [number, number];
  const r = a!.shape[0]!;
  const Arr = out.data.constructor as Float32ArrayConstructor | Float64ArrayConstructor;
  const at = (v: typeof w0, i: number, j: number) => v!.data[v!.offset + i * v!.strides[0]! + j * v!.strides[1]!]!;
  const s = Arr.of(scale)[0]!;
  const as = new Arr(r * inF);
  for (let j = 0; j < r; j++) for (let i = 0; i < inF; i++) as[j * inF + i] = s * at(a, j, i);
  const round = new Arr(1);
  const od = out.data;
  for (let o = 0; o < outF; o++) {
    for (let i = 0; i < inF; i++) {
      let u = 0;
      for (let j = 0; j < r; j++) u += at(b, o, j) * as[j * inF + i]!;
      round[0] = u;
      od[out.offset + o * inF + i] = at(w0, o, i) + round[0]!;
    }
  }
};
