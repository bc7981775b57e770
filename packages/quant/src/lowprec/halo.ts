/**
 * @file HALO-style low-precision training (methods-2.md §7): a linear layer whose three matmuls —
 * forward Y = X·Wᵀ and both backward products dX = dY·W, dW = dYᵀ·X — run in low precision, each
 * after a block Hadamard rotation of its own inner dimension on both operands, so outliers are
 * spread before quantizing. `format: 'int8'` (default) runs real int8 products (core's
 * `int8Matmul`, int32 accumulation); `format: 'fp8'` emulates FP8 E4M3 products (see `e4m3Rows`).
 * Not fake quantization: the unrounded operands never meet in a float matmul (unless `round: false`,
 * the exact reference).
 *
 * | product      | inner dim | rotation        | scales of A      | scales of B        |
 * |--------------|-----------|-----------------|------------------|--------------------|
 * | Y  = X·Wᵀ    | in        | (XH)(WH)ᵀ       | per token        | per output channel |
 * | dX = dY·W    | out       | (dY H)(Hᵀ W)    | per token        | per input channel  |
 * | dW = dYᵀ·X   | tokens    | (dYᵀH)(Hᵀ X)    | per output ch.   | per input channel  |
 *
 * H is orthonormal, so without rounding every product equals the float one. Scales are absmax/127
 * (int8: the kernel quantizes the rotated float operands itself, clamp(round(·/s), ±127) per line,
 * as it packs them) or absmax/448 (E4M3's largest value). HALO's code quantizes per tensor and
 * reuses Q(XH), Q(WH) in backward; per-token/per-channel scales must lie on the outer dims of each
 * product, so here each product quantizes its own rotated operands (the token rotation of dW is
 * HALO level 2's idea applied to dW rather than dX). Cost: at the tiny Llama's sizes the six
 * rotations (the fwht kernel) take about as long as the int8 products; fp8 is an emulation for
 * studying accuracy, about 2× a float layer's CPU time (bench int8: each operand costs one absmax
 * pass and one `fpRound` pass that divides by the row scale and rounds to E4M3; the composite of
 * ~20 elementwise ops it replaced made it 28×).
 */
import { defineFunction, div, eq, fpRound, hadamard, int8Matmul, linear, matmul, mul, noGrad, norm, type Tensor, where } from '@qgrad/core';
import { Linear, Module } from '@qgrad/nn';
import { fpRoundGrid } from '../grids/fp.js';
import { matchesName, replaceSubmodule, type NamePattern } from '../qat/prepare.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** Options of `haloLinear` and `HaloLinear`. */
export interface HaloOptions {
  /**
   * Largest Hadamard block along each product's inner dim (a power of two; default 256). Each
   * product uses the largest power of two ≤ this dividing its inner dim (1: no rotation).
   */
  blockSize?: number;
  /**
   * The products' number format: 'int8' (default; real int8 products, int32 accumulation) or
   * 'fp8' (E4M3 operands, emulated exactly with float accumulation; see `e4m3Rows`).
   */
  format?: HaloFormat;
  /**
   * false skips rounding (and the int8 cast): each product is then the float product of the
   * rotated, scaled operands, equal to the plain product up to float rounding — the reference
   * the gradient is checked against. Default true.
   */
  round?: boolean;
}

/** The number formats HALO's products run in. */
export type HaloFormat = 'int8' | 'fp8';

const FORMATS: readonly HaloFormat[] = ['int8', 'fp8'];
const OPTION_NAMES = ['blockSize', 'format', 'round'] as const;

/** The options with defaults filled in; throws naming the bad option (plain-JS callers pass anything). */
function resolveOptions(opts: HaloOptions, who: string): Required<HaloOptions> {
  for (const k of Object.keys(opts)) if (!(OPTION_NAMES as readonly string[]).includes(k)) throw new Error(`${who}: unknown option '${k}'; known: ${OPTION_NAMES.join(', ')}`);
  const { blockSize = 256, format = 'int8', round = true } = opts;
  if (!Number.isInteger(blockSize) || blockSize < 1 || (blockSize & (blockSize - 1)) !== 0) throw new Error(`${who}: blockSize must be a power of two, got ${blockSize}`);
  if (!FORMATS.includes(format)) throw new Error(`${who}: format must be 'int8' or 'fp8', got ${JSON.stringify(format)}`);
  if (typeof round !== 'boolean') throw new Error(`${who}: round must be true or false, got ${JSON.stringify(round)}`);
  return { blockSize, format, round };
}

/**
 * The Hadamard block HALO rotates a dimension of size n in: the largest power of two ≤ cap dividing n.
 * @example haloBlock(384); // 128
 */
export function haloBlock(n: number, cap = 256): number {
  let b = 1;
  while (b * 2 <= cap && n % (b * 2) === 0) b *= 2;
  return b;
}

/** Largest magnitude of each format's grid: int8's symmetric [−127, 127], E4M3's ±448. */
const GRID_MAX: Record<HaloFormat, number> = { int8: 127, fp8: 448 };
const E4M3 = fpRoundGrid('e4m3fn');

/** One absmax scale per row of r mapping it onto [−qmax, qmax] (1 for an all-zero row). */
function rowScales(r: Tensor, qmax: number): Tensor {
  const m = norm(r, Infinity, 1); // [rows]: max |r|, one absmax reduction where no gradient is recorded
  return where(eq(m, 0), 1, div(m, qmax));
}

/**
 * Each row of r [rows, K] scaled by its absmax/448 and rounded half-even onto the FP8 E4M3 grid
 * (OCP "fn": 4 exponent bits, bias 7, 3 mantissa bits, subnormals, ±448, no infinities; core's
 * `fpRound`, dividing and rounding in one pass): r ≈ values · scales[:, None]. No gradient. Two
 * E4M3 values have at most 4 significant bits each, so their product (≤ 8 bits, exponent within
 * float32's range) is exact in float32, and a float32 matmul of `values` is an FP8 GEMM with FP32
 * accumulation, exact up to the summation order (tensor cores that keep fewer accumulator bits
 * differ by that too). So HALO's fp8 mode multiplies these values; it is not fake quantization
 * around a float product of unrounded operands. Float64 operands accumulate in float64 (closer to
 * the exact sum).
 * @example
 * const { values, scales } = e4m3Rows(randn([4, 64]));
 * values.abs().max().item(); // 448: each row's largest magnitude lands on E4M3's top value
 */
export function e4m3Rows(r: Tensor): { values: Tensor; scales: Tensor } {
  if (r.ndim !== 2) throw new Error(`e4m3Rows: expects a 2-D [rows, K] tensor, got ${fmt(r.shape)}`);
  return noGrad(() => {
    const scales = rowScales(r, GRID_MAX.fp8);
    // r / s and its rounding in one kernel pass (the quotient rounded to r's dtype first, as div)
    return { values: fpRound(r, E4M3, { scale: scales.unsqueeze(1) }), scales };
  });
}

/**
 * a [M, K] · b [K, N] with both operands rotated along K by the block Hadamard H (a·H and Hᵀ·b,
 * so the product is unchanged), each quantized per line of its outer dim (int8 or E4M3),
 * multiplied and scaled back: â·b̂ = (sᵢ tⱼ)·Σₖ qa[i, k]·qb[k, j]. int8: the kernel quantizes
 * the rotated float operands itself (qa = clamp(round(aH / s), ±127)) while packing them.
 */
function rotatedProduct(a: Tensor, b: Tensor, cap: number, format: HaloFormat, rounded: boolean): Tensor {
  const blockSize = haloBlock(a.shape[1]!, cap);
  // rows contiguous along K: the transform's fast path, and the kernel's
  const ar = hadamard(a.contiguous(), { blockSize }); // [M, K]
  const br = hadamard(b.transpose(0, 1).contiguous(), { blockSize }); // [N, K]: (Hᵀ b)ᵀ
  if (rounded && format === 'int8') return int8Matmul(ar, br.transpose(0, 1), rowScales(ar, 127), rowScales(br, 127));
  let qa: Tensor, qb: Tensor, sa: Tensor, sb: Tensor;
  if (rounded) [{ values: qa, scales: sa }, { values: qb, scales: sb }] = [e4m3Rows(ar), e4m3Rows(br)];
  else {
    // the same scaled operands, unrounded: the exact product up to float rounding
    [sa, sb] = [rowScales(ar, GRID_MAX[format]), rowScales(br, GRID_MAX[format])];
    [qa, qb] = [div(ar, sa.unsqueeze(1)), div(br, sb.unsqueeze(1))];
  }
  // fp8: exact products of grid values, accumulated in the operands' dtype (float32: the hardware's)
  return mul(mul(matmul(qa, qb.transpose(0, 1)), sa.unsqueeze(1)), sb.unsqueeze(0));
}

const haloFn = defineFunction({
  name: 'haloLinear',
  // the low-precision products have no derivative of their own: backward is itself low precision
  onceDifferentiable: true,
  forward(ctx, x: Tensor, w: Tensor, cap: number, format: HaloFormat, rounded: boolean) {
    ctx.save(x, w);
    ctx.state = { cap, format, rounded };
    return rotatedProduct(x, w.transpose(0, 1), cap, format, rounded); // [T, out]
  },
  backward(ctx, g) {
    const [x, w] = ctx.saved as [Tensor, Tensor];
    const { cap, format, rounded } = ctx.state as { cap: number; format: HaloFormat; rounded: boolean };
    // d(X·Wᵀ)/dX = g·W (inner dim out), d/dW = gᵀ·X (inner dim tokens)
    const dx = ctx.needsInputGrad[0] ? rotatedProduct(g, w, cap, format, rounded) : null;
    const dw = ctx.needsInputGrad[1] ? rotatedProduct(g.transpose(0, 1), x, cap, format, rounded) : null;
    return [dx, dw, null, null, null];
  },
});

/**
 * y = x·Wᵀ + bias with the forward and both backward matmuls in int8 (or FP8 E4M3) after Hadamard
 * rotations (HALO; see the table at the top of this file). x [..., in] (float32 or float64), W [out, in].
 * @example
 * const x = randn([64, 128], { requiresGrad: true });
 * const w = randn([32, 128], { requiresGrad: true });
 * haloLinear(x, w).sum().backward(); // three int8 matmuls: y, x.grad, w.grad
 * haloLinear(x, w, null, { format: 'fp8' }); // E4M3 operands, float32 accumulation
 * haloLinear(x, w, null, { round: false }); // = linear(x, w) up to float rounding
 */
export function haloLinear(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: HaloOptions = {}): Tensor {
  const { blockSize, format, round } = resolveOptions(opts, 'haloLinear');
  if (weight.ndim !== 2) throw new Error(`haloLinear: weight must be 2-D [out, in], got ${fmt(weight.shape)}`);
  const [O, K] = weight.shape as [number, number];
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== K) throw new Error(`haloLinear: input of shape ${fmt(x.shape)} does not match weight ${fmt(weight.shape)} (expects ${K} features)`);
  if (x.dtype !== weight.dtype) throw new Error(`haloLinear: input is ${x.dtype} but weight is ${weight.dtype}`);
  const x2 = x.reshape([-1, K]); // [T, in]
  const y = haloFn(x2, weight, blockSize, format, round).reshape([...x.shape.slice(0, -1), O]);
  return bias ? y.add(bias) : y;
}

/**
 * A Linear layer trained in low precision: its forward and backward matmuls are `haloLinear`'s.
 * Shares the source Linear's weight and bias; `enabled = false` gives the float layer back.
 * @example
 * const l = HaloLinear.from(new Linear(128, 384));
 * l.forward(x); // int8 forward, int8 backward
 * HaloLinear.from(new Linear(128, 384), { format: 'fp8' }); // E4M3 products
 */
export class HaloLinear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly options: Required<HaloOptions>;
  /** Low precision on/off (off: the plain float linear layer). */
  enabled = true;

  constructor(src: Linear, opts: HaloOptions = {}) {
    super();
    this.inFeatures = src.inFeatures;
    this.outFeatures = src.outFeatures;
    this.weight = this.registerParameter('weight', src.weight);
    this.bias = this.registerParameter('bias', src.bias);
    this.options = resolveOptions(opts, 'HaloLinear');
  }
  static from(l: Linear, opts: HaloOptions = {}): HaloLinear {
    return new HaloLinear(l, opts);
  }
  forward(x: Tensor): Tensor {
    if (!this.enabled) return linear(x, this.weight, this.bias);
    return haloLinear(x, this.weight, this.bias, this.options);
  }
  override extraRepr(): string {
    return `${this.inFeatures}, ${this.outFeatures}, ${this.options.format} hadamard≤${this.options.blockSize}${this.options.round ? '' : ', unrounded'}`;
  }
}

/**
 * Replaces every Linear of `model` whose dotted name matches `match` (default all) and not
 * `skip` with a HaloLinear, in place; returns the replaced names.
 * @example
 * prepareHalo(llama, {}, { skip: ['lm_head'] }); // every other Linear trains in int8
 * prepareHalo(llama, { format: 'fp8' }, { match: 'model.layers.**' }); // E4M3 in the blocks
 */
export function prepareHalo(model: Module, opts: HaloOptions = {}, select: { match?: NamePattern | NamePattern[]; skip?: NamePattern[] } = {}): string[] {
  resolveOptions(opts, 'prepareHalo'); // before any layer is swapped
  const targets = [...model.namedModules()].filter(([n, m]) => n !== '' && m instanceof Linear && (select.match === undefined || matchesName(n, select.match)) && !(select.skip && matchesName(n, select.skip)));
  for (const [name, m] of targets) {
    const h = HaloLinear.from(m as Linear, opts);
    h.train(m.training);
    replaceSubmodule(model, name, h);
  }
  return targets.map(([n]) => n);
}
