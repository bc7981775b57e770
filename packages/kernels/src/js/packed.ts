/**
 * @file js reference for `packedMatmul` (matmul against a packed low-bit weight: 1/2/4/8-bit code
 * fields or base-3 trits, a level table, per-(row, group) scales and zero points), and the operand
 * checks every backend's version shares; `packedGather` (rows of such a table, decoded). The SIMD versions are wasm/packed.ts and packed-base3.ts.
 */
import type { Kernel, KernelArg } from '../backend.js';
import { isContiguous, numel } from '../layout.js';
import type { PackedGatherParams, PackedMatmulParams, TypedArray } from '../names.js';
import { base3Digit, base3Positions, base3RowBytes } from './base3.js';

type Arg = KernelArg<TypedArray>;

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** The operands of one `packedMatmul` call, checked, with its sizes. */
export interface PackedOperands {
  x: Arg;
  codes: Arg;
  table: Arg;
  scale: Arg;
  zero: Arg | null;
  bias: Arg | null;
  /** Rows of x, inputs per row, output features, groups per weight row. */
  N: number;
  K: number;
  O: number;
  G: number;
}

/** `what` (the shape the count is for) is built only for the error: a tiny-Llama matvec is a few µs. */
function flat(kernel: string, name: string, a: Arg | undefined, need: number, what: () => string, dtypes: readonly string[]): Arg {
  if (!a) throw new Error(`${kernel}: the ${name} input is missing`);
  if (!dtypes.includes(a.dtype)) throw new Error(`${kernel}: ${name} must be ${dtypes.join(' or ')}, got ${a.dtype}`);
  if (!isContiguous(a.shape, a.strides)) throw new Error(`${kernel}: ${name} must be contiguous, got shape ${fmt(a.shape)} with strides ${fmt(a.strides)}`);
  const n = numel(a.shape);
  if (n < need) throw new Error(`${kernel}: got ${n} ${name === 'codes' ? 'bytes' : 'values'} of ${name}, but ${what()} needs ${need}`);
  return a;
}

const FLOATS = ['float32', 'float64'] as const;

/**
 * Checks the inputs, output and parameters of a `packedMatmul` call; every error names the kernel
 * and the offending value (group size not dividing K, a codes buffer too short for [O, K] at the
 * bit width, a level table shorter than 2^bits …).
 */
export function packedOperands(inputs: readonly Arg[], out: Arg, p: PackedMatmulParams): PackedOperands {
  const { bits, outFeatures: O, groupSize: gs } = p;
  const base3 = p.packing === 'base3';
  if (p.packing !== undefined && p.packing !== 'fields' && !base3) throw new Error(`packedMatmul: packing must be 'fields' or 'base3', got ${JSON.stringify(p.packing)}`);
  if (base3 && bits !== 2) throw new Error(`packedMatmul: base-3 packing holds ternary digits, read as 2-bit fields; bits must be 2, got ${bits}`);
  if (bits !== 1 && bits !== 2 && bits !== 4 && bits !== 8) throw new Error(`packedMatmul: bits must be 1, 2, 4 or 8, got ${bits}`);
  const want = 4 + (p.zeroPoint ? 1 : 0) + (p.bias ? 1 : 0);
  if (inputs.length !== want) throw new Error(`packedMatmul: expected ${want} inputs (x, codes, levels, scales${p.zeroPoint ? ', zero points' : ''}${p.bias ? ', bias' : ''}), got ${inputs.length}`);
  const x = inputs[0]!;
  if (x.shape.length !== 2 || !FLOATS.includes(x.dtype as never)) throw new Error(`packedMatmul: x must be a 2-D float32 or float64 [N, K] tensor, got ${x.dtype} ${fmt(x.shape)}`);
  const [N, K] = x.shape as [number, number];
  if (!Number.isInteger(O) || O < 0) throw new Error(`packedMatmul: outFeatures must be a non-negative integer, got ${O}`);
  if (!Number.isInteger(gs) || gs < 1 || K % gs !== 0) throw new Error(`packedMatmul: group size ${gs} does not divide K = ${K}`);
  const G = K / gs;
  const codes = base3
    ? flat('packedMatmul', 'codes', inputs[1], O * base3RowBytes(K), () => `[${O}, ${K}] as base-3 trits (${base3RowBytes(K)} bytes a row)`, ['uint8', 'int8'])
    : flat('packedMatmul', 'codes', inputs[1], Math.ceil((O * K * bits) / 8), () => `[${O}, ${K}] at ${bits} bits`, ['uint8', 'int8']);
  const table = base3
    ? flat('packedMatmul', 'levels', inputs[2], 3, () => 'a ternary digit (a level table too short for base-3 packing)', FLOATS)
    : flat('packedMatmul', 'levels', inputs[2], 2 ** bits, () => `a ${bits}-bit code (a level table too short for the bit width)`, FLOATS);
  const scale = flat('packedMatmul', 'scales', inputs[3], O * G, () => `[${O}, ${K}] in groups of ${gs}`, FLOATS);
  const zero = p.zeroPoint ? flat('packedMatmul', 'zero points', inputs[4], O * G, () => `[${O}, ${K}] in groups of ${gs}`, FLOATS) : null;
  const bias = p.bias ? flat('packedMatmul', 'bias', inputs[want - 1], O, () => `${O} outputs`, FLOATS) : null;
  if (out.dtype !== x.dtype || out.shape.length !== 2 || out.shape[0] !== N || out.shape[1] !== O) {
    throw new Error(`packedMatmul: out must be ${x.dtype} [${N}, ${O}], got ${out.dtype} ${fmt(out.shape)}`);
  }
  return { x, codes, table, scale, zero, bias, N, K, O, G };
}

/**
 * The oracle: each group's sum Σ x·(L[f] − z) and the row's Σ_g s·(…) + b in float64, rounded to
 * out's dtype once. Fields (or base-3 digits) are read straight from the bytes, one at a time.
 */
export const packedMatmul: Kernel<'packedMatmul', TypedArray> = (inputs, out, p) => {
  const { x, codes, table, scale, zero, bias, N, K, O, G } = packedOperands(inputs as Arg[], out, p);
  const { bits, groupSize: gs } = p;
  const mask = 2 ** bits - 1;
  const [sxn, sxk] = [x.strides[0]!, x.strides[1]!];
  const cd = codes.data;
  const base3 = p.packing === 'base3' ? { ...base3Positions(K), rowBytes: base3RowBytes(K) } : null;
  // int8 codes are read as their bytes (two's complement): & 0xff
  const field = base3
    ? (o: number, k: number) => base3Digit(cd[codes.offset + o * base3.rowBytes + base3.byte[k]!]! & 0xff, base3.digit[k]!)
    : (o: number, k: number) => {
      const bit = (o * K + k) * bits;
      return ((cd[codes.offset + Math.floor(bit / 8)]! & 0xff) >> bit % 8) & mask;
    };
  const od = out.data;
  for (let n = 0; n < N; n++) {
    const xr = x.offset + n * sxn;
    for (let o = 0; o < O; o++) {
      let y = 0;
      for (let g = 0; g < G; g++) {
        const z = zero ? zero.data[zero.offset + o * G + g]! : 0;
        let dot = 0;
        for (let j = 0; j < gs; j++) {
          const k = g * gs + j;
          dot += x.data[xr + k * sxk]! * (table.data[table.offset + field(o, k)]! - z);
        }
        y += scale.data[scale.offset + o * G + g]! * dot;
      }
      od[out.offset + n * O + o] = bias ? y + bias.data[bias.offset + o]! : y;
    }
  }
};

/** The operands of one `packedGather` call, checked, with its sizes. */
export interface PackedGatherOperands {
  idx: Arg;
  codes: Arg;
  table: Arg;
  scale: Arg;
  zero: Arg | null;
  /** Rows looked up, fields per row, groups per row. */
  N: number;
  D: number;
  G: number;
}

/**
 * Checks the inputs, output and parameters of a `packedGather` call (every backend's version runs
 * these, so the errors are the same everywhere); the index values are not read here.
 */
export function packedGatherOperands(inputs: readonly Arg[], out: Arg, p: PackedGatherParams): PackedGatherOperands {
  const { bits, rows: V, groupSize: gs } = p;
  if (bits !== 1 && bits !== 2 && bits !== 4 && bits !== 8) throw new Error(`packedGather: bits must be 1, 2, 4 or 8, got ${bits}`);
  if (p.offset !== undefined && p.offset !== 'zeroPoint' && p.offset !== 'beta') throw new Error(`packedGather: offset must be 'zeroPoint' or 'beta', got ${JSON.stringify(p.offset)}`);
  const want = 4 + (p.zeroPoint ? 1 : 0);
  if (inputs.length !== want) throw new Error(`packedGather: expected ${want} inputs (indices, codes, levels, scales${p.zeroPoint ? ', zero points' : ''}), got ${inputs.length}`);
  if (!FLOATS.includes(out.dtype as never) || out.shape.length !== 2 || !isContiguous(out.shape, out.strides)) throw new Error(`packedGather: out must be a contiguous 2-D float32 or float64 [n, D] tensor, got ${out.dtype} ${fmt(out.shape)}`);
  const [N, D] = out.shape as [number, number];
  if (!Number.isInteger(V) || V < 0) throw new Error(`packedGather: rows must be a non-negative integer, got ${V}`);
  if (!Number.isInteger(gs) || gs < 1 || D % gs !== 0) throw new Error(`packedGather: group size ${gs} does not divide D = ${D}`);
  const G = D / gs;
  const idx = flat('packedGather', 'indices', inputs[0], N, () => `${N} rows of out`, ['int32']);
  const codes = flat('packedGather', 'codes', inputs[1], Math.ceil((V * D * bits) / 8), () => `[${V}, ${D}] at ${bits} bits`, ['uint8', 'int8']);
  const table = flat('packedGather', 'levels', inputs[2], 2 ** bits, () => `a ${bits}-bit code (a level table too short for the bit width)`, FLOATS);
  const scale = flat('packedGather', 'scales', inputs[3], V * G, () => `[${V}, ${D}] in groups of ${gs}`, FLOATS);
  const zero = p.zeroPoint ? flat('packedGather', 'zero points', inputs[4], V * G, () => `[${V}, ${D}] in groups of ${gs}`, FLOATS) : null;
  return { idx, codes, table, scale, zero, N, D, G };
}

/**
 * The rows `idx` of a packed table, decoded element by element with the dequantizing tensor ops'
 * roundings (float32: L − z, then ·s, each rounded), so a lookup equals indexing the dequantized
 * table bit for bit. A gather is bound by memory, not arithmetic: wasm runs this one (gpu: gpu/packed.ts).
 */
export const packedGather: Kernel<'packedGather', TypedArray> = (inputs, out, p) => {
  const { idx, codes, table, scale, zero, N, D, G } = packedGatherOperands(inputs as Arg[], out, p);
  const { bits, rows: V, groupSize: gs } = p;
  const f32 = out.dtype === 'float32';
  const beta = p.offset === 'beta';
  const mask = (1 << bits) - 1;
  const [cd, od, td] = [codes.data, out.data, table.data];
  // the level table without its offset, so each element is one lookup
  const levels = Float64Array.from({ length: mask + 1 }, (_, c) => td[table.offset + c]!);
  for (let n = 0; n < N; n++) {
    const r = idx.data[idx.offset + n]!;
    if (!(r >= 0 && r < V)) throw new RangeError(`packedGather: index ${r} (at position ${n}) is out of range [0, ${V})`);
    for (let g = 0; g < G; g++) {
      const s = scale.data[scale.offset + r * G + g]!;
      const z = zero ? zero.data[zero.offset + r * G + g]! : 0;
      let bit = (r * D + g * gs) * bits + codes.offset * 8;
      const o = out.offset + n * D + g * gs;
      // as the tensor ops round: the first operation (l·s, or l − z) to float32 here, the second on
      // the float32 store (one operation on float32 values, done in a double and rounded once to
      // float32, is float32's own result)
      for (let j = 0; j < gs; j++, bit += bits) {
        const l = levels[((cd[bit >>> 3]! & 0xff) >> (bit & 7)) & mask]!;
        od[o + j] = beta ? (f32 ? Math.fround(l * s) : l * s) + z : (f32 ? Math.fround(l - z) : l - z) * s;
      }
    }
  }
};
