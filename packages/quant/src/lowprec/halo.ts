/**
 * @file HALO-style low-precision training (methods-2.md §7): a linear layer whose three matmuls —
 * forward Y = X·Wᵀ and both backward products dX = dY·W, dW = dYᵀ·X — run as real int8 products
 * (core's `int8Matmul`, int32 accumulation), each after a block Hadamard rotation of its own inner
 * dimension on both operands, so outliers are spread before quantizing. Not fake quantization:
 * the float operands never meet in a float matmul (unless `round: false`, the exact reference).
 *
 * | product      | inner dim | rotation        | scales of A      | scales of B        |
 * |--------------|-----------|-----------------|------------------|--------------------|
 * | Y  = X·Wᵀ    | in        | (XH)(WH)ᵀ       | per token        | per output channel |
 * | dX = dY·W    | out       | (dY H)(Hᵀ W)    | per token        | per input channel  |
 * | dW = dYᵀ·X   | tokens    | (dYᵀH)(Hᵀ X)    | per output ch.   | per input channel  |
 *
 * H is orthonormal, so without rounding every product equals the float one. The kernel quantizes
 * the rotated float operands itself, clamp(round(·/s), ±127) per line, as it packs them. HALO's
 * code quantizes per tensor and reuses Q(XH), Q(WH) in backward; per-token/per-channel scales must
 * lie on the outer dims of each product, so here each product quantizes its own rotated operands
 * (the token rotation of dW is HALO level 2's idea applied to dW rather than dX). Cost: at the
 * tiny Llama's sizes the six rotations (the fwht kernel) now take about as long as the products.
 */
import { abs, amax, defineFunction, div, eq, hadamard, int8Matmul, linear, matmul, mul, type Tensor, where } from '@qgrad/core';
import { Linear, Module } from '@qgrad/nn';
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
   * false skips rounding (and the int8 cast): each product is then the float product of the
   * rotated, scaled operands, equal to the plain product up to float rounding — the reference
   * the gradient is checked against. Default true.
   */
  round?: boolean;
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

/** One absmax scale per row of r for the symmetric int8 grid [−127, 127] (1 for an all-zero row). */
function rowScales(r: Tensor): Tensor {
  const m = amax(abs(r), 1); // [rows]
  return where(eq(m, 0), 1, div(m, 127));
}

/**
 * a [M, K] · b [K, N] with both operands rotated along K by the block Hadamard H (a·H and Hᵀ·b,
 * so the product is unchanged), each quantized to int8 per line of its outer dim, multiplied in
 * int8 and scaled back: â·b̂ = (sᵢ tⱼ)·Σₖ qa[i, k]·qb[k, j]. The kernel quantizes the rotated
 * float operands itself (qa = clamp(round(aH / s), ±127)) while packing them.
 */
function rotatedProduct(a: Tensor, b: Tensor, cap: number, rounded: boolean): Tensor {
  const blockSize = haloBlock(a.shape[1]!, cap);
  // rows contiguous along K: the transform's fast path, and the kernel's
  const ar = hadamard(a.contiguous(), { blockSize }); // [M, K]
  const br = hadamard(b.transpose(0, 1).contiguous(), { blockSize }); // [N, K]: (Hᵀ b)ᵀ
  const [sa, sb] = [rowScales(ar), rowScales(br)];
  if (rounded) return int8Matmul(ar, br.transpose(0, 1), sa, sb);
  // the same scaled operands, unrounded: the exact product up to float rounding
  const [ua, ub] = [div(ar, sa.unsqueeze(1)), div(br, sb.unsqueeze(1))];
  return mul(mul(matmul(ua, ub.transpose(0, 1)), sa.unsqueeze(1)), sb.unsqueeze(0));
}

const haloFn = defineFunction({
  name: 'haloLinear',
  // the int8 products have no derivative of their own: backward is itself low precision
  onceDifferentiable: true,
  forward(ctx, x: Tensor, w: Tensor, cap: number, rounded: boolean) {
    ctx.save(x, w);
    ctx.state = { cap, rounded };
    return rotatedProduct(x, w.transpose(0, 1), cap, rounded); // [T, out]
  },
  backward(ctx, g) {
    const [x, w] = ctx.saved as [Tensor, Tensor];
    const { cap, rounded } = ctx.state as { cap: number; rounded: boolean };
    // d(X·Wᵀ)/dX = g·W (inner dim out), d/dW = gᵀ·X (inner dim tokens)
    const dx = ctx.needsInputGrad[0] ? rotatedProduct(g, w, cap, rounded) : null;
    const dw = ctx.needsInputGrad[1] ? rotatedProduct(g.transpose(0, 1), x, cap, rounded) : null;
    return [dx, dw, null, null];
  },
});

/**
 * y = x·Wᵀ + bias with the forward and both backward matmuls in int8 after Hadamard rotations
 * (HALO; see the table at the top of this file). x [..., in] (float32 or float64), W [out, in].
 * @example
 * const x = randn([64, 128], { requiresGrad: true });
 * const w = randn([32, 128], { requiresGrad: true });
 * haloLinear(x, w).sum().backward(); // three int8 matmuls: y, x.grad, w.grad
 * haloLinear(x, w, null, { round: false }); // = linear(x, w) up to float rounding
 */
export function haloLinear(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: HaloOptions = {}): Tensor {
  const cap = opts.blockSize ?? 256;
  if (!Number.isInteger(cap) || cap < 1 || (cap & (cap - 1)) !== 0) throw new Error(`haloLinear: blockSize must be a power of two, got ${cap}`);
  if (weight.ndim !== 2) throw new Error(`haloLinear: weight must be 2-D [out, in], got ${fmt(weight.shape)}`);
  const [O, K] = weight.shape as [number, number];
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== K) throw new Error(`haloLinear: input of shape ${fmt(x.shape)} does not match weight ${fmt(weight.shape)} (expects ${K} features)`);
  if (x.dtype !== weight.dtype) throw new Error(`haloLinear: input is ${x.dtype} but weight is ${weight.dtype}`);
  const x2 = x.reshape([-1, K]); // [T, in]
  const y = haloFn(x2, weight, cap, opts.round ?? true).reshape([...x.shape.slice(0, -1), O]);
  return bias ? y.add(bias) : y;
}

/**
 * A Linear layer trained in low precision: its forward and backward matmuls are `haloLinear`'s.
 * Shares the source Linear's weight and bias; `enabled = false` gives the float layer back.
 * @example
 * const l = HaloLinear.from(new Linear(128, 384));
 * l.forward(x); // int8 forward, int8 backward
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
    this.options = { blockSize: opts.blockSize ?? 256, round: opts.round ?? true };
  }
  static from(l: Linear, opts: HaloOptions = {}): HaloLinear {
    return new HaloLinear(l, opts);
  }
  forward(x: Tensor): Tensor {
    if (!this.enabled) return linear(x, this.weight, this.bias);
    return haloLinear(x, this.weight, this.bias, this.options);
  }
  override extraRepr(): string {
    return `${this.inFeatures}, ${this.outFeatures}, int8 hadamard≤${this.options.blockSize}${this.options.round ? '' : ', unrounded'}`;
  }
}

/**
 * Replaces every Linear of `model` whose dotted name matches `match` (default all) and not
 * `skip` with a HaloLinear, in place; returns the replaced names.
 * @example prepareHalo(llama, {}, { skip: ['lm_head'] }); // every other Linear trains in int8
 */
export function prepareHalo(model: Module, opts: HaloOptions = {}, select: { match?: NamePattern | NamePattern[]; skip?: NamePattern[] } = {}): string[] {
  const targets = [...model.namedModules()].filter(([n, m]) => n !== '' && m instanceof Linear && (select.match === undefined || matchesName(n, select.match)) && !(select.skip && matchesName(n, select.skip)));
  for (const [name, m] of targets) {
    const h = HaloLinear.from(m as Linear, opts);
    h.train(m.training);
    replaceSubmodule(model, name, h);
  }
  return targets.map(([n]) => n);
}
