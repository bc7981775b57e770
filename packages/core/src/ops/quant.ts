/**
 * @file Quantization ops that take no gradient estimator: the soft quantizer `softQuantize`
 * (HESTIA's forward), `gradScale`, `packedLinear` and `packedEmbedding` (inference on packed
 * low-bit weights), `sparse24Linear` (inference on 2:4 sparse weights),
 * `int8Matmul` (the int8 × int8 → int32 product low-precision training runs its matmuls on) and
 * `fpRound` (rounding onto a minifloat grid in one kernel pass).
 * `fakeQuantize` and rounding with an estimator live beside the estimators in
 * ../estimators/quant.ts; grids, quantizers and packing in @qgrad/quant.
 */
import { broadcastShapes, runKernel } from '../dispatch.js';
import { defineFunction } from '../function.js';
import { isGradEnabled } from '../tape.js';
import { Tensor } from '../tensor.js';
import { fromTypedArray, tensor } from './creation.js';
import { div, exp, mul, neg, square, sub } from './elementwise.js';
import { expandView, unsqueeze } from './movement.js';
import { logsumexp, sum } from './reduce.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

// the base-3 ternary layout, for packers above core (quant may not import kernels)
export { base3RowBytes, packBase3, unpackBase3 } from '@qgrad/kernels';
export { pack24, unpack24, type Packed24 } from '@qgrad/kernels';
import { isFloat, pack24, type FpRoundParams, type KernelParams } from '@qgrad/kernels';

/**
 * A 2:4 sparse weight W [outFeatures, inFeatures] in compressed form (the `sparse24Matmul`
 * kernel's layout): two kept values per group of four inputs and their 2-bit positions.
 */
export interface Sparse24Weight {
  /** Kept values [outFeatures, inFeatures / 2], in the input's float dtype. */
  values: Tensor;
  /** uint8: each kept value's position within its group, 2 bits, four per byte, low bits first. */
  indices: Tensor;
  outFeatures: number;
  inFeatures: number;
}

/**
 * Compresses a dense 2-D weight with at most two non-zeros in each group of four inputs (a
 * hardened 2:4 mask) into the `sparse24Linear` form. Errors name the first group with more.
 * @example const w = sparse24Weight(tensor([[0, 3, 0, -1]])); // values [[3, -1]], positions 1 and 3
 */
export function sparse24Weight(weight: Tensor): Sparse24Weight {
  if (weight.ndim !== 2 || (weight.dtype !== 'float32' && weight.dtype !== 'float64')) throw new Error(`sparse24Weight: needs a 2-D float32 or float64 weight, got ${weight.dtype} ${fmt(weight.shape)}`);
  const [O, K] = weight.shape as [number, number];
  const p = pack24(weight.contiguous().dataSync() as Float32Array | Float64Array, O, K);
  return { values: fromTypedArray(p.values, [O, K / 2], weight.dtype), indices: fromTypedArray(p.indices, [p.indices.length], 'uint8'), outFeatures: O, inFeatures: K };
}

/**
 * y = x·Wᵀ + bias for a 2:4 sparse W, reading only the kept half of the weight (inference only,
 * as `packedLinear`: an x requiring grad while grad is enabled is an error).
 * @example
 * const w = sparse24Weight(tensor([[0, 3, 0, -1], [2, 0, 0, 0]]));
 * sparse24Linear(tensor([[1, 2, 3, 4]]), w).toArray(); // [[2, 2]]
 */
export function sparse24Linear(x: Tensor, weight: Sparse24Weight, bias?: Tensor | null): Tensor {
  const { outFeatures: O, inFeatures: K } = weight;
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== K) throw new Error(`sparse24Linear: input of shape ${fmt(x.shape)} has ${x.shape[x.ndim - 1] ?? 0} features but the 2:4 weight [${O}, ${K}] expects ${K}`);
  if (isGradEnabled() && x.requiresGrad) throw new Error('sparse24Linear: has no gradient (inference on a compressed weight); call it under noGrad(), or train through a SparseLinear');
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== O)) throw new Error(`sparse24Linear: bias of shape ${fmt(bias.shape)} does not match ${O} outputs`);
  const rows = x.numel() / Math.max(K, 1);
  const operands = [x.reshape([rows, K]), weight.values, weight.indices].map((t) => t.contiguous());
  if (bias) operands.push(bias.contiguous());
  const y = runKernel('sparse24Matmul', operands, [rows, O], x.dtype, { outFeatures: O, bias: Boolean(bias) });
  return y.reshape([...x.shape.slice(0, -1), O]);
}

/**
 * The relaxed quantizer: softmax over grid levels of −(x − ℓ)²/τ, returning the expected level
 * Σ_k p_k ℓ_k. Differentiable in x, the levels and τ; hardens to the nearest level as τ → 0.
 * @example softQuantize(tensor([0.4]), [-1, 0, 1], 0.01).item(); // ≈ 0
 */
export function softQuantize(x: Tensor, levels: Tensor | number[], temperature: Tensor | number): Tensor {
  const l = levels instanceof Tensor ? levels : tensor(levels, { dtype: x.dtype });
  if (l.ndim !== 1 || l.numel() === 0) throw new Error(`softQuantize: levels must be a non-empty 1-D tensor, got shape ${fmt(l.shape)}`);
  if (typeof temperature === 'number' && !(temperature > 0)) throw new Error(`softQuantize: temperature must be > 0, got ${temperature}`);
  const xe = unsqueeze(x, -1); // [..., 1] against levels [K]
  const logits = div(neg(square(sub(xe, l))), temperature instanceof Tensor ? unsqueeze(temperature, -1) : temperature);
  const p = exp(sub(logits, logsumexp(logits, -1, true)));
  return sum(mul(p, l), -1);
}

const gradScaleFn = defineFunction({
  name: 'gradScale',
  forward(ctx, x: Tensor, factor: number) {
    ctx.state = { factor };
    return x.alias();
  },
  backward: (ctx, g) => [mul(g, ctx.state.factor as number), null], // d(identity)·factor
});

/**
 * Identity forward, gradient multiplied by `factor` (LSQ's gradient scaling, methods.md §0.3).
 * @example const s2 = gradScale(s, 1 / Math.sqrt(n * qmax));
 */
export function gradScale(x: Tensor, factor: number): Tensor {
  return gradScaleFn(x, factor);
}

/**
 * A weight W [outFeatures, inFeatures] stored as packed code fields (the `packedMatmul` kernel's
 * layout): W[o, k] = scale[o, g]·(levels[field(o, k)] − zeroPoint[o, g]), g = ⌊k / groupSize⌋.
 */
export interface PackedWeight {
  /**
   * uint8 (or int8) bytes: `bits`-bit fields, row-major over [outFeatures, inFeatures], little
   * end first; with `packing` 'base3', ternary digits five per byte in TQ1_0's order (`packBase3`).
   */
  codes: Tensor;
  /** 1, 2, 4 or 8 (2 for base-3 digits). */
  bits: number;
  /** 'fields' (the default) or 'base3' (1.6 bits per ternary weight; see `packBase3`). */
  packing?: 'fields' | 'base3';
  /** The level of each field value (at least 2^bits entries), in the input's float dtype. */
  levels: Tensor;
  /** One per (row, group), row-major: outFeatures · inFeatures / groupSize values. */
  scale: Tensor;
  /** Zero points in level units, laid out as the scales; null for none. */
  zeroPoint: Tensor | null;
  /**
   * How zeroPoint applies: 'zeroPoint' (the default) W = s·(L − z); 'beta' W = s·L + z (LSQ+'s
   * offset β, as the dequantizing forward adds it). Only `packedEmbedding` reads 'beta';
   * `packedLinear` takes −β/s as a zero point instead.
   */
  offset?: 'zeroPoint' | 'beta';
  outFeatures: number;
  inFeatures: number;
  /** Inputs per scale; divides inFeatures (inFeatures: per output channel). */
  groupSize: number;
}

/**
 * y = x·Wᵀ + bias for a packed low-bit W, read as packed (never unpacked to a float matrix): the
 * quantized model's inference linear. Inference only: an x that requires grad while grad is
 * enabled is an error (a QAT model trains through fakeQuantize instead).
 * @example
 * // two rows of 4-bit codes 0…15 meaning levels −8…7, one scale per row
 * const w: PackedWeight = { codes: tensor([0x98, 0xba, 0x10, 0x32], { dtype: 'uint8' }), bits: 4,
 *   levels: arange(-8, 8, 1, { dtype: 'float32' }), scale: tensor([0.5, 0.25]), zeroPoint: null, outFeatures: 2, inFeatures: 4, groupSize: 4 };
 * packedLinear(tensor([[1, 1, 1, 1]]), w).toArray(); // [[3, -6.5]]: 0.5·(0+1+2+3), 0.25·(−8−7−6−5)
 */
export function packedLinear(x: Tensor, weight: PackedWeight, bias?: Tensor | null): Tensor {
  const { outFeatures: O, inFeatures: K } = weight;
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== K) throw new Error(`packedLinear: input of shape ${fmt(x.shape)} has ${x.shape[x.ndim - 1] ?? 0} features but the packed weight [${O}, ${K}] expects ${K}`);
  if (isGradEnabled() && x.requiresGrad) throw new Error('packedLinear: has no gradient (inference on packed weights); call it under noGrad(), or train through fakeQuantize');
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== O)) throw new Error(`packedLinear: bias of shape ${fmt(bias.shape)} does not match ${O} outputs`);
  if (weight.offset === 'beta') throw new Error("packedLinear: reads zero points (W = s·(L − z)); give an offset β as the zero point −β/s, not offset 'beta'");
  // a 2-D x (a decode step's one row) goes as it is: no reshape views made and unmade (a
  // tiny-Llama matvec is a few µs, and each view costs a tensor)
  const flat = x.ndim === 2;
  const rows = flat ? x.shape[0]! : x.numel() / Math.max(K, 1);
  const operands = [(flat ? x : x.reshape([rows, K])).contiguous(), weight.codes.contiguous(), weight.levels.contiguous(), weight.scale.contiguous()];
  if (weight.zeroPoint) operands.push(weight.zeroPoint.contiguous());
  if (bias) operands.push(bias.contiguous());
  const params: KernelParams['packedMatmul'] = { bits: weight.bits, outFeatures: O, groupSize: weight.groupSize, zeroPoint: weight.zeroPoint !== null, bias: Boolean(bias) };
  if (weight.packing === 'base3') params.packing = 'base3';
  const y = runKernel('packedMatmul', operands, [rows, O], x.dtype, params);
  return flat ? y : y.reshape([...x.shape.slice(0, -1), O]);
}

/**
 * Rows `indices` of a packed low-bit table W [outFeatures, inFeatures] (a quantized embedding):
 * only the looked-up rows are decoded, element by element as the dequantizing forward rounds
 * them, so the result equals `embedding(indices, W)` of the dequantized table bit for bit.
 * Returns [...indices.shape, inFeatures] in the scales' dtype. An index outside [0, outFeatures)
 * is a RangeError naming it and its position. Inference only (no gradient).
 * @example
 * const w: PackedWeight = { codes: tensor([0x98, 0xba, 0x10, 0x32], { dtype: 'uint8' }), bits: 4,
 *   levels: arange(-8, 8, 1, { dtype: 'float32' }), scale: tensor([0.5, 0.25]), zeroPoint: null, outFeatures: 2, inFeatures: 4, groupSize: 4 };
 * packedEmbedding(tensor([1, 0, 1], { dtype: 'int32' }), w).toArray(); // [[-2, -1.75, -1.5, -1.25], [0, 0.5, 1, 1.5], [-2, …]]
 */
export function packedEmbedding(indices: Tensor, weight: PackedWeight): Tensor {
  if (isFloat(indices.dtype)) throw new TypeError(`packedEmbedding: indices must be an integer tensor (int32), got ${indices.dtype} of shape ${fmt(indices.shape)}`);
  const { outFeatures: V, inFeatures: D } = weight;
  if (weight.packing === 'base3') throw new Error('packedEmbedding: reads bit fields; base-3 packed tables are not supported');
  const idx = (indices.dtype === 'int32' ? indices : indices.to('int32')).contiguous();
  const operands = [idx, weight.codes, weight.levels, weight.scale].map((t) => t.contiguous());
  if (weight.zeroPoint) operands.push(weight.zeroPoint.contiguous());
  const n = idx.numel();
  try {
    const y = runKernel('packedGather', operands, [n, D], weight.scale.dtype, {
      bits: weight.bits, rows: V, groupSize: weight.groupSize, zeroPoint: weight.zeroPoint !== null, ...(weight.offset === 'beta' && { offset: 'beta' as const }),
    });
    return y.reshape([...indices.shape, D]);
  } catch (e) {
    if (e instanceof RangeError) throw new RangeError(`packedEmbedding: ${e.message.replace(/^\w+: /, '')} (indices ${fmt(indices.shape)}, packed table [${V}, ${D}])`);
    throw e;
  }
}

/**
 * The int8 product a·b as a real low-precision matmul: int8 a [M, K] · int8 b [K, N] (any views,
 * so transposes cost nothing) summed exactly in int32. Without scales the result is that int32
 * accumulator; with per-row scales sa [M] and per-column scales sb [N] (both of one float dtype)
 * it is acc·(sa[m]·sb[n]) in that dtype, scaled as the kernel finishes each tile. With scales,
 * a and b may also be float tensors of the scales' dtype: the kernel quantizes them as it packs
 * them, clamp(round½even(x / s), −127, 127) with row i of a using sa[i] and column j of b sb[j]. Not
 * differentiable (integer inputs): low-precision training wraps it in its own backward (HALO in
 * @qgrad/quant). K ≤ 131071.
 * @example
 * const a = tensor([[1, -2]], { dtype: 'int8' });
 * const b = tensor([[3], [4]], { dtype: 'int8' });
 * int8Matmul(a, b).toArray(); // [[-5]] (int32)
 * int8Matmul(a, b, tensor([0.5]), tensor([0.1])).toArray(); // [[-0.25]] (float32, ≈)
 * int8Matmul(tensor([[0.5, -1]]), tensor([[1], [2]]), tensor([1 / 127]), tensor([2 / 127])); // ≈ [[-1.5]], quantized inside
 */
export function int8Matmul(a: Tensor, b: Tensor, scaleA?: Tensor, scaleB?: Tensor): Tensor {
  if (a.ndim !== 2 || b.ndim !== 2) throw new Error(`int8Matmul: a and b must be 2-D, got ${fmt(a.shape)} and ${fmt(b.shape)}`);
  if ((scaleA === undefined) !== (scaleB === undefined)) throw new Error('int8Matmul: give both scales (per row of a, per column of b) or neither');
  const shape = [a.shape[0]!, b.shape[1]!];
  if (!scaleA || !scaleB) return runKernel('int8Matmul', [a, b], shape, 'int32', {});
  return runKernel('int8Matmul', [a, b, scaleA, scaleB], shape, scaleA.dtype, {});
}

/** The minifloat grid of `fpRound`: mantissa bits, smallest normal exponent, largest magnitude. */
export interface FpRoundGrid {
  /** Fraction bits M (E4M3: 3, E5M2: 2, E2M1: 1). */
  mantissaBits: number;
  /** emin = 1 − bias, the smallest normal exponent; the subnormal step is 2^(emin − M). */
  minExponent: number;
  /** The largest finite value (E4M3fn 448, E5M2 57344, E2M1 6): a grid value, saturated to. */
  max: number;
}

/** Options of `fpRound`. */
export interface FpRoundOptions {
  /** 'halfEven' (default, IEEE/OCP), 'halfAway' (ties away from zero) or 'floor'. */
  rounding?: FpRoundParams['rounding'];
  /** Scales s broadcast to x: rounds x / s (the quotient rounded to x's dtype first), e.g. per-row absmax scales. */
  scale?: Tensor;
}

const ROUNDINGS: readonly FpRoundParams['rounding'][] = ['halfEven', 'halfAway', 'floor'];

/** ⌊log2 a⌋ for a > 0, exactly. */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  return e;
}

/** Throws naming the bad field unless `grid` is a minifloat grid whose every value x's dtype holds exactly. */
function checkFpGrid(grid: FpRoundGrid, x: Tensor): void {
  const { mantissaBits: M, minExponent: emin, max } = grid;
  const what = `fpRound: grid { mantissaBits: ${M}, minExponent: ${emin}, max: ${max} }`;
  if (!Number.isInteger(M) || M < 0 || M > 52) throw new Error(`${what}: mantissaBits must be an integer in [0, 52]`);
  if (!Number.isInteger(emin)) throw new Error(`${what}: minExponent must be an integer`);
  if (!(max > 0 && Number.isFinite(max))) throw new Error(`${what}: max must be a positive finite number`);
  const step = Math.max(exponentOf(max), emin) - M;
  if (!Number.isInteger(max / 2 ** step)) throw new Error(`${what}: max is not a value of the grid (needs more than ${M} mantissa bits)`);
  // the subnormal step and max must be values of the dtype, or rounding would round again on store
  const [smallest, largest] = x.dtype === 'float32' ? [-149, 3.4028234663852886e38] : [-1074, Number.MAX_VALUE];
  if (emin - M < smallest || max > largest) throw new Error(`${what}: its values do not all fit ${x.dtype} (subnormal step 2^${emin - M}, max ${max}); round a float64 tensor`);
}

/**
 * Rounds x onto a minifloat (FP ExMy) grid in one kernel pass: v = x (or x / scale), e =
 * max(⌊log2|v|⌋, minExponent), out = clamp(R(v / 2^(e − M))·2^(e − M), −max, max). NaN stays NaN,
 * ±∞ saturate to ±max (OCP's saturating conversion), zeros keep their sign (halfAway gives +0
 * for −0, as `roundHalfAway`). Returns x's shape and dtype, on the grid (in scale units with a
 * scale). No gradient: an x that requires grad while grad is enabled is an error (train through
 * an estimator, or call it under noGrad()). `roundToFp` in @qgrad/quant takes a format by name.
 * @example
 * const e4m3 = { mantissaBits: 3, minExponent: -6, max: 448 };
 * fpRound(tensor([0.3, 17, 1000, -Infinity]), e4m3).toArray(); // [0.3125, 16, 448, -448]
 * fpRound(tensor([[1, 2], [3, 4]]), e4m3, { scale: tensor([[0.01], [0.1]]) }); // rows rounded as x / 0.01 and x / 0.1
 */
export function fpRound(x: Tensor, grid: FpRoundGrid, opts: FpRoundOptions = {}): Tensor {
  if (x.dtype !== 'float32' && x.dtype !== 'float64') throw new Error(`fpRound: input must be float32 or float64, got ${x.dtype} of shape ${fmt(x.shape)}`);
  if (isGradEnabled() && x.requiresGrad) throw new Error('fpRound: has no gradient (it is piecewise constant); call it under noGrad(), or train through an estimator');
  checkFpGrid(grid, x);
  const rounding = opts.rounding ?? 'halfEven';
  if (!ROUNDINGS.includes(rounding)) throw new Error(`fpRound: rounding must be one of ${ROUNDINGS.join(', ')}, got ${JSON.stringify(rounding)}`);
  const inputs = [x];
  const s = opts.scale;
  if (s) {
    if (s.dtype !== x.dtype) throw new Error(`fpRound: scale is ${s.dtype} but the input is ${x.dtype}`);
    const b = broadcastShapes('fpRound (scale)', x.shape, s.shape);
    if (b.length !== x.ndim || b.some((d, i) => d !== x.shape[i])) throw new Error(`fpRound: scale of shape ${fmt(s.shape)} must broadcast to the input's shape ${fmt(x.shape)} without enlarging it`);
    inputs.push(expandView(s, [...x.shape]));
  }
  const { mantissaBits, minExponent, max } = grid;
  return runKernel('fpRound', inputs, [...x.shape], x.dtype, { mantissaBits, minExponent, max, rounding, scale: Boolean(s) });
}
