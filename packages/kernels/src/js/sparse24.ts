/**
 * @file 2:4 semi-structured sparse weights: `pack24` / `unpack24` between a dense [O, K] matrix
 * with at most two non-zeros per group of four and NVIDIA's compressed form (the kept values
 * [O, K/2] plus a 2-bit position each), and the js reference `sparse24Matmul`.
 */
import type { Kernel, KernelArg } from '../backend.js';
import { isContiguous, numel } from '../layout.js';
import type { Sparse24MatmulParams, TypedArray } from '../names.js';

type Arg = KernelArg<TypedArray>;
const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** A 2:4 weight in compressed form: two kept values per group of four and their 2-bit positions. */
export interface Packed24 {
  /** The kept values, row-major [O, K/2]: group g of row o holds entries 2g and 2g + 1. */
  values: Float32Array | Float64Array;
  /** Position (0–3) within its group of each kept value, 2 bits each, four per byte, low bits first. */
  indices: Uint8Array;
}

/**
 * Compresses a dense row-major [O, K] weight whose every group of four consecutive entries in a
 * row holds at most two non-zeros. A group with fewer keeps zeros at the next free positions, so
 * each group always stores two (position-ordered) entries. Errors name the first group with more.
 * @example pack24(Float32Array.from([0, 3, 0, -1]), 1, 4); // values [3, -1], indices [0b1101] (positions 1 and 3)
 */
export function pack24(dense: Float32Array | Float64Array, O: number, K: number): Packed24 {
  if (K % 4 !== 0) throw new Error(`pack24: the row length ${K} is not a multiple of 4`);
  if (dense.length !== O * K) throw new Error(`pack24: got ${dense.length} values for a [${O}, ${K}] weight`);
  const values = new (dense.constructor as Float32ArrayConstructor)((O * K) / 2);
  const indices = new Uint8Array(Math.ceil((O * K) / 2 / 4));
  let e = 0;
  for (let g = 0; g < dense.length; g += 4) {
    const nz = [0, 1, 2, 3].filter((j) => dense[g + j] !== 0);
    if (nz.length > 2) {
      const o = Math.floor(g / K);
      throw new Error(`pack24: row ${o}, inputs ${g - o * K}…${g - o * K + 3} hold ${nz.length} non-zeros (${Array.from(dense.subarray(g, g + 4)).join(', ')}); 2:4 allows two`);
    }
    for (let j = 0; nz.length < 2; j++) if (!nz.includes(j)) nz.push(j);
    nz.sort((a, b) => a - b);
    for (const j of nz) {
      values[e] = dense[g + j]!;
      indices[e >> 2] |= j << (2 * (e & 3));
      e++;
    }
  }
  return { values, indices };
}

/**
 * The dense [O, K] matrix of a compressed 2:4 weight (the inverse of `pack24`).
 * @example unpack24(pack24(w, 2, 8), 2, 8); // equals w
 */
export function unpack24(p: Packed24, O: number, K: number): Float32Array | Float64Array {
  const out = new (p.values.constructor as Float32ArrayConstructor)(O * K);
  for (let e = 0; e < (O * K) / 2; e++) out[(e >> 1) * 4 + ((p.indices[e >> 2]! >> (2 * (e & 3))) & 3)] = p.values[e]!;
  return out;
}

function flat(name: string, a: Arg | undefined, need: number, dtypes: readonly string[]): Arg {
  if (!a) throw new Error(`sparse24Matmul: the ${name} input is missing`);
  if (!dtypes.includes(a.dtype)) throw new Error(`sparse24Matmul: ${name} must be ${dtypes.join(' or ')}, got ${a.dtype}`);
  if (!isContiguous(a.shape, a.strides)) throw new Error(`sparse24Matmul: ${name} must be contiguous, got shape ${fmt(a.shape)} with strides ${fmt(a.strides)}`);
  if (numel(a.shape) < need) throw new Error(`sparse24Matmul: got ${numel(a.shape)} ${name}, need ${need}`);
  return a;
}

/** The checked operands of a `sparse24Matmul` call (shared by the js oracle and the wasm kernel). */
export interface Sparse24Operands {
  x: Arg;
  values: Arg;
  indices: Arg;
  bias: Arg | null;
  N: number;
  K: number;
  O: number;
}

/**
 * Checks a `sparse24Matmul` call; errors name the kernel and the value (K not a multiple of 4,
 * short values or indices, wrong dtypes or out shape).
 * @example const { N, K, O } = sparse24Operands(inputs, out, { outFeatures: 8, bias: false });
 */
export function sparse24Operands(inputs: readonly Arg[], out: Arg, p: Sparse24MatmulParams): Sparse24Operands {
  const O = p.outFeatures;
  const want = 3 + (p.bias ? 1 : 0);
  if (inputs.length !== want) throw new Error(`sparse24Matmul: expected ${want} inputs (x, values, indices${p.bias ? ', bias' : ''}), got ${inputs.length}`);
  const x = inputs[0] as Arg;
  if (x.shape.length !== 2 || (x.dtype !== 'float32' && x.dtype !== 'float64')) throw new Error(`sparse24Matmul: x must be a 2-D float32 or float64 [N, K] tensor, got ${x.dtype} ${fmt(x.shape)}`);
  const [N, K] = x.shape as [number, number];
  if (K % 4 !== 0) throw new Error(`sparse24Matmul: K = ${K} is not a multiple of 4`);
  const half = K / 2;
  const values = flat('values', inputs[1] as Arg, O * half, [x.dtype]);
  const indices = flat('indices', inputs[2] as Arg, Math.ceil((O * half) / 4), ['uint8']);
  const bias = p.bias ? flat('bias', inputs[3] as Arg, O, [x.dtype]) : null;
  if (out.dtype !== x.dtype || out.shape.length !== 2 || out.shape[0] !== N || out.shape[1] !== O) throw new Error(`sparse24Matmul: out must be ${x.dtype} [${N}, ${O}], got ${out.dtype} ${fmt(out.shape)}`);
  return { x, values, indices, bias, N, K, O };
}

/** The oracle: each output's sum over the kept entries in float64, rounded to out's dtype once. */
export const sparse24Matmul: Kernel<'sparse24Matmul', TypedArray> = (inputs, out, p) => {
  const { x, values, indices, bias, N, K, O } = sparse24Operands(inputs, out, p);
  const half = K / 2;
  const [sxn, sxk] = [x.strides[0]!, x.strides[1]!];
  const xd = x.data;
  const vd = values.data;
  const id = indices.data;
  for (let n = 0; n < N; n++) {
    const xr = x.offset + n * sxn;
    for (let o = 0; o < O; o++) {
      let y = 0;
      for (let j = 0; j < half; j++) {
        const e = o * half + j;
        const pos = (id[indices.offset + (e >> 2)]! >> (2 * (e & 3))) & 3;
        y += vd[values.offset + e]! * xd[xr + ((j >> 1) * 4 + pos) * sxk]!;
      }
      out.data[out.offset + n * O + o] = bias ? y + bias.data[bias.offset + o]! : y;
    }
  }
};
