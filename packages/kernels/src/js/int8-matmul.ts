/**
 * @file js reference for `int8Matmul` (int8 · int8 accumulated in int32, then optionally scaled
 * per row and per column into a float out), and the operand checks every backend's version shares.
 * The SIMD version is wasm/int8-matmul.ts.
 *
 * Why two outputs: the int32 accumulator is what tests compare bit for bit, and what a caller that
 * wants its own dequantization takes; the scaled float out is what training uses, because applying
 * sᵢ·tⱼ while the accumulator is still in registers saves an [M, N] int32 tensor and a pass over it.
 * Why float operands too: quantizing while packing (which reads every operand once anyway) saves
 * the divide, round, clamp and int8 cast passes a caller would otherwise make over both operands.
 */
import type { Kernel, KernelArg } from '../backend.js';
import type { TypedArray } from '../names.js';
import { roundHalfEven } from './elementwise.js';

type Arg = KernelArg<TypedArray>;

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** The largest K whose int32 accumulator cannot overflow: 128²·K < 2³¹. */
export const INT8_MATMUL_MAX_K = 131071;

/** The operands of one `int8Matmul` call, checked, with its sizes. */
export interface Int8MatmulOperands {
  a: Arg;
  b: Arg;
  /** Per-row and per-column scales (float outs only). */
  scaleA: Arg | null;
  scaleB: Arg | null;
  M: number;
  K: number;
  N: number;
}

/**
 * Checks the inputs and output of an `int8Matmul` call; every error names the kernel and both
 * shapes or the offending dtype.
 */
export function int8MatmulOperands(inputs: readonly Arg[], out: Arg): Int8MatmulOperands {
  const [a, b] = inputs;
  if (!a || !b) throw new Error(`int8Matmul: expected inputs [a, b] or [a, b, scaleA, scaleB], got ${inputs.length}`);
  for (const [name, x] of [['a', a], ['b', b]] as const) {
    if ((x.dtype !== 'int8' && x.dtype !== out.dtype) || x.shape.length !== 2) throw new Error(`int8Matmul: ${name} must be a 2-D int8 tensor (or float, quantized by the scales, of out's dtype), got ${x.dtype} ${fmt(x.shape)} for a ${out.dtype} out`);
  }
  if (a.dtype !== b.dtype) throw new Error(`int8Matmul: a and b must have one dtype, got ${a.dtype} and ${b.dtype}`);
  const [M, K] = a.shape as [number, number];
  const [Kb, N] = b.shape as [number, number];
  if (K !== Kb) throw new Error(`int8Matmul: inner sizes differ: a ${fmt(a.shape)} · b ${fmt(b.shape)}`);
  if (K > INT8_MATMUL_MAX_K) throw new Error(`int8Matmul: K = ${K} exceeds ${INT8_MATMUL_MAX_K}, past which the int32 accumulator could overflow`);
  if (out.shape.length !== 2 || out.shape[0] !== M || out.shape[1] !== N) throw new Error(`int8Matmul: out must be [${M}, ${N}] for a ${fmt(a.shape)} · b ${fmt(b.shape)}, got ${fmt(out.shape)}`);
  if (out.dtype === 'int32') {
    if (inputs.length !== 2) throw new Error(`int8Matmul: an int32 out takes inputs [a, b], got ${inputs.length}`);
    return { a, b, scaleA: null, scaleB: null, M, K, N };
  }
  if (out.dtype !== 'float32' && out.dtype !== 'float64') throw new Error(`int8Matmul: out must be int32, float32 or float64, got ${out.dtype}`);
  if (inputs.length !== 4) throw new Error(`int8Matmul: a ${out.dtype} out takes inputs [a, b, scaleA, scaleB], got ${inputs.length}`);
  const [scaleA, scaleB] = [inputs[2]!, inputs[3]!];
  for (const [name, s, n] of [['scaleA', scaleA, M], ['scaleB', scaleB, N]] as const) {
    if (s.dtype !== out.dtype || s.shape.length !== 1 || s.shape[0] !== n) throw new Error(`int8Matmul: ${name} must be ${out.dtype} [${n}], got ${s.dtype} ${fmt(s.shape)}`);
  }
  return { a, b, scaleA, scaleB, M, K, N };
}

/**
 * The int8 code of a float operand entry x with its line's scale s: clamp(round½even(x / s),
 * −127, 127) with the division in the operand's dtype (float32: the correctly rounded quotient,
 * which fround of the double quotient is), NaN → 0 as a saturating conversion gives.
 */
export function int8Code(x: number, s: number, f32: boolean): number {
  const u = f32 ? Math.fround(x / s) : x / s;
  if (Number.isNaN(u)) return 0;
  return Math.min(127, Math.max(-127, roundHalfEven(u)));
}

/**
 * The oracle: float operands quantized by `int8Code`, exact integer sums (a JS number holds
 * 128²·K exactly), then for a float32 out f32(f32(acc) · f32(sᵢ·tⱼ)), for float64 acc·(sᵢ·tⱼ): the
 * same roundings the SIMD code does.
 */
export const int8Matmul: Kernel<'int8Matmul', TypedArray> = (inputs, out) => {
  const { a, b, scaleA, scaleB, M, K, N } = int8MatmulOperands(inputs as Arg[], out);
  const [sam, sak] = [a.strides[0]!, a.strides[1]!];
  const [sbk, sbn] = [b.strides[0]!, b.strides[1]!];
  const [ad, bd, od] = [a.data, b.data, out.data];
  const f32 = out.dtype === 'float32';
  const row = new Float64Array(N);
  // float operands: their codes first (b's by column, with that column's scale)
  let bq: Float64Array | null = null;
  if (b.dtype !== 'int8') {
    bq = new Float64Array(K * N);
    for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) bq[k * N + j] = int8Code(bd[b.offset + k * sbk + j * sbn]!, scaleB!.data[scaleB!.offset + j * scaleB!.strides[0]!]!, f32);
  }
  for (let i = 0; i < M; i++) {
    row.fill(0);
    const sq = a.dtype === 'int8' ? 0 : scaleA!.data[scaleA!.offset + i * scaleA!.strides[0]!]!;
    for (let k = 0; k < K; k++) {
      const x = ad[a.offset + i * sam + k * sak]!;
      const av = a.dtype === 'int8' ? x : int8Code(x, sq, f32);
      if (av === 0) continue;
      if (bq) for (let j = 0; j < N; j++) row[j] += av * bq[k * N + j]!;
      else {
        const b0 = b.offset + k * sbk;
        for (let j = 0; j < N; j++) row[j] += av * bd[b0 + j * sbn]!;
      }
    }
    const o0 = out.offset + i * N;
    if (!scaleA || !scaleB) {
      od.set(row, o0);
      continue;
    }
    const si = scaleA.data[scaleA.offset + i * scaleA.strides[0]!]!;
    for (let j = 0; j < N; j++) {
      const st = si * scaleB.data[scaleB.offset + j * scaleB.strides[0]!]!;
      od[o0 + j] = f32 ? Math.fround(Math.fround(row[j]!) * Math.fround(st)) : row[j]! * st;
    }
  }
};
