/**
 * @file LR-QAT (methods.md §6.4): the low-rank term inside the rounding,
 * Ŵ = s·clamp(round(Φ0 + (α/r)·B·A), qmin, qmax), with Φ0 = W0/s0 held as int8 fixed point
 * (8 − b fractional bits, the paper's `fixed_point8`) and the scale s learned. The layer is one
 * custom function that saves only x, A, B and s and recomputes Ŵ in its backward, so no
 * full-size weight stays on the tape. Merge: the integers clamp(round(Φ0 + C)) and s, exactly.
 */
import { defineFunction, linear, noGrad, zeros, type FunctionCtx, type Tensor } from '@qgrad/core';
import { init, Parameter, type Linear } from '@qgrad/nn';
import { groupedShape, granularityName } from '../grids/granularity.js';
import { QuantizedLinear } from '../qat/convert.js';
import { QuantLinear } from '../qat/modules.js';
import { describePlan, resolveQuantizer, type QuantizerPlan } from '../quantizer/config.js';
import { initScale } from '../scale/rules.js';
import { floatLinear, LoraLayer, type LoraLayerOptions, type MergedLayer } from './layer.js';

interface LrQatState {
  phi: Tensor;
  view: number[];
  qmin: number;
  qmax: number;
  scaling: number;
  bias: Tensor | null;
}

/** u = Φ0 + C in view layout, its clamped integers, and the in-range mask. */
function integers(st: LrQatState, a: Tensor, b: Tensor): { wInt: Tensor; mask: Tensor } {
  const u = st.phi.add(b.matmul(a).mul(st.scaling).reshape(st.view));
  const wInt = u.round().clamp(st.qmin, st.qmax);
  const mask = u.ge(st.qmin).to(u.dtype).mul(u.le(st.qmax).to(u.dtype));
  return { wInt, mask };
}

/** y = x·Ŵᵀ + b with Ŵ = s·clamp(round(Φ0 + (α/r)·B·A)); the backward recomputes Ŵ from the saved factors. */
const lrQatLinear = defineFunction({
  name: 'lrQatLinear',
  forward(ctx: FunctionCtx<LrQatState>, x: Tensor, a: Tensor, b: Tensor, s: Tensor, st: LrQatState): Tensor {
    ctx.state = st;
    ctx.save(x, a, b, s);
    const { wInt } = integers(st, a, b);
    const out = b.shape[0]!;
    return linear(x, wInt.mul(s).reshape([out, a.shape[1]!]), st.bias);
  },
  backward(ctx: FunctionCtx<LrQatState>, g: Tensor) {
    const st = ctx.state;
    const [x, a, b, s] = ctx.saved as [Tensor, Tensor, Tensor, Tensor];
    const [out, inF] = [b.shape[0]!, a.shape[1]!];
    const { wInt, mask } = integers(st, a, b);
    const w = wInt.mul(s).reshape([out, inF]);
    const g2 = g.reshape([-1, out]);
    const dW = g2.t().matmul(x.reshape([-1, inF])).reshape(st.view); // ∂L/∂Ŵ = Gᵀ·X
    const dC = dW.mul(s).mul(mask).reshape([out, inF]); // ∂Ŵ/∂C = s·1[qmin ≤ Φ0 + C ≤ qmax]
    const dA = ctx.needsInputGrad[1] ? b.t().matmul(dC).mul(st.scaling) : null; // ∂L/∂A = (α/r)·Bᵀ·∂L/∂C
    const dB = ctx.needsInputGrad[2] ? dC.matmul(a.t()).mul(st.scaling) : null; // ∂L/∂B = (α/r)·∂L/∂C·Aᵀ
    const dS = ctx.needsInputGrad[3] ? dW.mul(wInt).sum(-1, true) : null; // ∂Ŵ/∂s = W_int (Φ0 is frozen: no −x/s term)
    const dX = ctx.needsInputGrad[0] ? g.matmul(w) : null; // ∂L/∂x = G·Ŵ
    return [dX, dA, dB, dS, null];
  },
});

/** The plan of an LR-QAT quant config: a symmetric integer grid of ≤ 8 bits per tensor, channel or group along the inputs. */
function lrQatPlan(o: LoraLayerOptions): QuantizerPlan {
  const plan = resolveQuantizer({ ...o.quant, scale: 'fixed' }, 'weight', o.who);
  const g = plan.granularity;
  const ok = g === 'tensor' || g === 'channel' || (typeof g === 'object' && 'group' in g && (g.axis === undefined || g.axis === -1 || g.axis === 1));
  if (!plan.grid.integer || plan.hasZeroPoint || plan.grid.integer.qmin >= 0 || !ok) {
    throw new Error(`${o.who}: method 'lr-qat' rounds Φ0 + B·A onto a symmetric signed integer grid per tensor, channel or group along the inputs (e.g. { grid: 'int', bits: 4 }); got ${describePlan(plan)} (${granularityName(g)})`);
  }
  const bits = Math.log2(plan.grid.integer.qmax - plan.grid.integer.qmin + 1);
  if (bits > 8) throw new Error(`${o.who}: method 'lr-qat' stores Φ0 = W0/s0 as int8 fixed point with 8 − b fractional bits, so bits must be ≤ 8; got ${bits}`);
  return plan;
}

/**
 * LR-QAT: the low-rank term added inside the rounding of an int8 fixed-point copy of the weight, with a learned scale.
 * @example loraQuant(model, { method: 'lr-qat', rank: 8, alpha: 16, targets: ['**.q_proj', '**.v_proj'] });
 */
export class LrQatLinear extends LoraLayer {
  readonly method = 'lr-qat' as const;
  /** Φ0 = W0/s0 as int8 fixed point (8 − b fractional bits), view layout. */
  phi: Tensor;
  /** The learned scale s (grouped-view layout, last dim 1). */
  scale: Tensor;
  bias: Tensor | null;
  readonly plan: QuantizerPlan;
  readonly fracBits: number;
  readonly viewShape: number[];

  constructor(src: Linear, o: LoraLayerOptions) {
    const plan = lrQatPlan(o);
    super(src, o);
    if (this.dropoutP) throw new Error(`${o.who}: dropout does not apply to 'lr-qat' (the adapter acts inside the rounded weight, not on the input)`);
    this.plan = plan;
    const { qmin, qmax } = plan.grid.integer!;
    this.fracBits = 8 - Math.log2(qmax - qmin + 1);
    const dtype = src.weight.dtype === 'float64' ? 'float64' : 'float32';
    const view = groupedShape([this.outFeatures, this.inFeatures], plan.granularity, o.who).view;
    this.viewShape = view;
    const w = noGrad(() => src.weight.detach().reshape(view));
    const rule = typeof o.quant.scale === 'object' ? o.quant.scale.rule ?? 'mse' : typeof o.quant.scale === 'string' && !['fixed', 'learned', 'dynamic'].includes(o.quant.scale) ? (o.quant.scale as 'mse') : 'mse';
    const s0 = initScale(w, rule, plan.grid).scale.to(dtype);
    // Φ0 = clamp(W0/s0)·2^f rounded to int8 (LR-QAT's fixed_point8)
    const f = 2 ** this.fracBits;
    const phi = noGrad(() => w.div(s0).clamp(qmin, qmax).mul(f).round().clamp(-128, 127).to('int8'));
    this.phi = this.registerBuffer('phi', phi);
    this.scale = this.registerParameter('scale', Parameter(s0));
    this.bias = this.registerBuffer('bias', src.bias ? noGrad(() => src.bias!.detach().clone()) : null);
    this.loraA = this.registerParameter('loraA', Parameter(zeros([o.rank, this.inFeatures], { dtype })));
    this.loraB = this.registerParameter('loraB', Parameter(zeros([this.outFeatures, o.rank], { dtype })));
    init.kaimingUniform_(this.loraA, { a: Math.sqrt(5), generator: o.generator });
  }
  /** Φ0 decoded from its fixed-point storage (view layout). */
  phiValues(): Tensor {
    return noGrad(() => this.phi.to(this.dtype).div(2 ** this.fracBits));
  }
  #state(): LrQatState {
    const { qmin, qmax } = this.plan.grid.integer!;
    return { phi: this.phiValues(), view: this.viewShape, qmin, qmax, scaling: this.scaling, bias: this.bias };
  }
  forward(x: Tensor): Tensor {
    return lrQatLinear(x, this.loraA, this.loraB, this.scale, this.#state());
  }
  /** The integer weight clamp(round(Φ0 + C)) (view layout, no gradient). */
  integerWeight(): Tensor {
    return noGrad(() => integers(this.#state(), this.loraA, this.loraB).wInt);
  }
  override trainable(): Tensor[] {
    return [this.loraA, this.loraB, this.scale];
  }
  baseState(): Record<string, Tensor> {
    return { phi: this.phi };
  }
  merged(): MergedLayer {
    const w = noGrad(() => this.integerWeight().mul(this.scale).reshape([this.outFeatures, this.inFeatures]));
    const q = QuantLinear.from(floatLinear(w, this.bias), { weight: { ...this.quant, scale: 'fixed' } }, this.who);
    noGrad(() => q.weightQuantizer!.scale!.copy_(this.scale.reshape(q.weightQuantizer!.scale!.shape)));
    return { layer: new QuantizedLinear(q), kind: 'quantized' };
  }
}

/**
 * Decodes int8 fixed point with `fracBits` fractional bits (for tests and inspection).
 * @example decodeFixedPoint(new Int8Array([16, -8]), 4); // [1, -0.5]
 */
export function decodeFixedPoint(codes: Int8Array, fracBits: number): Float64Array {
  return Float64Array.from(codes, (c) => c / 2 ** fracBits);
}
