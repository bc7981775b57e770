/**
 * @file Applying a plan to a grouped view (granularity.ts: the last axis holds one scale's
 * elements): data-derived scales, fake quantization with the estimator's gradients, and the codes
 * and values convert stores. Integer grids run core's fused `fakeQuantize`; the others snap
 * x/s onto their levels and hand the estimator the hard output.
 */
import {
  amax, clamp, fakeQuantize, fakeQuantizeAbsmax, getEstimator, gradScale as scaleGradient, lsqGradScale, mean, noGrad, norm, round, scalarLike, sqrt, square, tensor, type GridInfo, type Tensor,
} from '@qgrad/core';
import type { FloatDType, Grid } from '../grids/grid.js';
import { LevelSet } from '../grids/grid.js';
import { mxScale } from '../grids/mx.js';
import { doubleQuantizeScales, doubleScaleValues, type DoubleScale } from '../scale/double.js';
import { GAUSSIAN_MSE_ALPHA, initScale, MIN_STEP, type ScaleRule } from '../scale/rules.js';
import type { QuantizerPlan } from './config.js';

/** The scale and zero point a quantizer plan uses for one tensor (and the double-quantized scale when asked). */
export interface ScaleAndZero {
  scale: Tensor;
  /** Integer zero point (rounded, clamped) or β; 0 where the grid has none. */
  zeroPoint: Tensor | number;
  /** The double-quantized form of `scale` (plans with scale option double). */
  double?: DoubleScale;
}

/** Options that may change during training (schedules set them). */
export interface ApplyOptions {
  trust?: number;
  temperature?: number;
  /** Elements per scale for LSQ's gradient scale, when not the view's last dim (activations' 'paper' policy). */
  lsqN?: number;
}

/**
 * A scale (and zero point) for `view` from the plan's rule: MX power-of-two block scales; absmax
 * and absmean in tensor ops (differentiable when `differentiable`, as HESTIA's normaliser is);
 * every other rule on the CPU, detached.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function dataScale(plan: QuantizerPlan, view: Tensor, rule: ScaleRule = plan.rule, differentiable = false): ScaleAndZero {
  const r = ruleScale(plan, view, rule, differentiable);
  if (!plan.doubleScale) return r;
  const double = doubleQuantizeScales(r.scale.detach());
  return { scale: doubleScaleValues(double, view.dtype as FloatDType), zeroPoint: r.zeroPoint, double };
}

function ruleScale(plan: QuantizerPlan, view: Tensor, rule: ScaleRule, differentiable: boolean): ScaleAndZero {
  const grid = plan.grid;
  if (grid.scale.kind === 'pow2') return { scale: mxScale(view, grid), zeroPoint: 0 };
  const qAbs = grid.hi > 0 ? grid.hi : Math.abs(grid.lo); // max|x| maps to the top level: nothing clips
  const bits = grid.idealBits;
  if (rule === 'gaussian' && !plan.hasZeroPoint && GAUSSIAN_MSE_ALPHA[bits] !== undefined) {
    // QuEST: Δ = 2α*_b·RMS/(2^b − 1) per row, detached (+1e−8 for all-zero rows)
    const k = (2 * GAUSSIAN_MSE_ALPHA[bits]!) / (2 ** bits - 1);
    return { scale: noGrad(() => sqrt(mean(square(view.detach()), -1, true)).mul(k).clamp(1e-8)), zeroPoint: 0 };
  }
  const fast = !plan.hasZeroPoint && (rule === 'absmax' || rule === 'absmean');
  if (fast) {
    const f = () => {
      const d = differentiable ? view : view.detach();
      if (rule === 'absmean') return clamp(mean(d.abs(), -1, true), MIN_STEP); // BitNet: γ = mean|W|
      // max|x| is the ∞-norm: one reduction pass (the absmax kernel under noGrad); unsigned grids take max x
      const m = grid.lo < 0 ? norm(d, Infinity, -1, true) : amax(d, -1, true);
      return clamp(m, MIN_STEP).div(qAbs);
    };
    return { scale: differentiable ? f() : noGrad(f), zeroPoint: 0 };
  }
  const r = initScale(view.detach(), rule, grid, { zeroPoint: plan.hasZeroPoint && plan.offset === 'zeroPoint' });
  return { scale: r.scale.to(view.dtype), zeroPoint: plan.hasZeroPoint ? r.zeroPoint.to(view.dtype) : 0 };
}

/**
 * The integer zero point as the kernel uses it: rounded half-even and clamped (β is used as is).
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function effectiveZero(plan: QuantizerPlan, z: Tensor | number): Tensor | number {
  if (typeof z === 'number' || plan.offset === 'beta' || !plan.grid.integer) return z;
  const { qmin, qmax } = plan.grid.integer;
  return noGrad(() => round(z.detach()).clamp(qmin, qmax));
}

/**
 * The numeric LSQ gradient factor for a view whose scales each cover `n` elements.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function gradFactor(plan: QuantizerPlan, n: number): number {
  return plan.gradScale === 'lsq' ? lsqGradScale(n, Math.max(plan.grid.positiveLevels, 1)) : plan.gradScale;
}

const levelCache = new WeakMap<Grid, Map<FloatDType, { set: LevelSet; tensor: Tensor }>>();

/** The grid's levels as a LevelSet and a tensor in `dtype` (for trust radii, relaxed levels, indices). */
function levelsOf(grid: Grid, dtype: FloatDType): { set: LevelSet; tensor: Tensor } {
  let m = levelCache.get(grid);
  if (!m) levelCache.set(grid, (m = new Map()));
  let e = m.get(dtype);
  if (!e) {
    const v = Array.from(grid.levels(dtype));
    e = { set: new LevelSet(`${grid.name} grid`, v), tensor: tensor(v, { dtype }) };
    m.set(dtype, e);
  }
  return e;
}

/**
 * x̂ of a grouped view with the plan's estimator: integer grids through core's fused
 * fakeQuantize (LSQ/LSQ+ gradients to scale and zero point); other grids as s·snap(x/s), where a
 * learned scale gets LSQ's gradient (snap(u) − u inside the range, the bound outside) by autograd
 * through a clipped straight-through snap.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function fakeQuantView(plan: QuantizerPlan, view: Tensor, scale: Tensor, zeroPoint: Tensor | number, o: ApplyOptions = {}): Tensor {
  const grid = plan.grid;
  checkLevels(plan, view.dtype as FloatDType);
  const est = plan.estimator;
  const g = gradFactor(plan, o.lsqN ?? view.shape[view.ndim - 1]!);
  if (grid.integer) {
    return fakeQuantize(view, scale, zeroPoint, {
      qmin: grid.integer.qmin, qmax: grid.integer.qmax, estimator: est, rounding: plan.rounding, gradScale: g, trust: o.trust, temperature: o.temperature,
    });
  }
  if (plan.mode === 'learned' && est.name === 'lsq') {
    const s = scaleGradient(scale, g);
    const u = view.div(s);
    const hard = grid.snap(u.detach(), plan.rounding);
    const info: GridInfo = { lo: grid.lo, hi: grid.hi, radius: Infinity };
    const y = getEstimator('clipped-ste').apply(u, scalarLike(1, u.dtype, u), scalarLike(0, u.dtype, u), { qmin: -Infinity, qmax: Infinity, rounding: 'halfEven', offset: 'zeroPoint', options: {}, y: hard, grid: info });
    return y.mul(s); // ∂/∂s = snap(u) − u inside, the bound outside
  }
  const sd = scale.detach();
  const hard = noGrad(() => grid.snap(view.detach().div(sd), plan.rounding).mul(sd));
  const lv = est.name === 'relaxed' ? levelsOf(grid, view.dtype as FloatDType) : null;
  const info: GridInfo = {
    lo: noGrad(() => sd.mul(grid.lo)), hi: noGrad(() => sd.mul(grid.hi)),
    radius: noGrad(() => sd.mul(topHalfGap(grid))),
    levels: lv ? noGrad(() => sd.unsqueeze(-1).mul(lv.tensor)) : undefined,
  };
  return est.apply(view, scalarLike(1, view.dtype, view), scalarLike(0, view.dtype, view), {
    qmin: -Infinity, qmax: Infinity, rounding: 'halfEven', offset: 'zeroPoint', options: { trust: o.trust, temperature: o.temperature }, y: hard, grid: info,
  });
}

/**
 * x̂ of a grouped view under a dynamic absmax scale computed inside the fake-quant kernel (core's
 * fakeQuantizeAbsmax): the plans whose `dataScale` is max(‖row‖∞, MIN_STEP)/top level on a signed
 * integer grid (per-token int8 activations). The same x̂ as `dataScale` then `fakeQuantView`, in
 * one pass; null for every other plan.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function fakeQuantAbsmaxView(plan: QuantizerPlan, view: Tensor, o: ApplyOptions = {}): Tensor | null {
  const grid = plan.grid;
  const int = grid.integer;
  if (!int || grid.scale.kind !== 'real' || plan.mode !== 'dynamic' || plan.rule !== 'absmax' || plan.hasZeroPoint || plan.doubleScale || !(grid.lo < 0) || plan.estimator.spec.forward) return null;
  return fakeQuantizeAbsmax(view, {
    qmin: int.qmin, qmax: int.qmax, estimator: plan.estimator, rounding: plan.rounding, gradScale: gradFactor(plan, o.lsqN ?? view.shape[view.ndim - 1]!),
    trust: o.trust, temperature: o.temperature, divisor: grid.hi > 0 ? grid.hi : Math.abs(grid.lo), minScale: MIN_STEP,
  }).y;
}

/**
 * The grid's levels must be distinct and finite in the tensor's dtype: an error naming the quantizer otherwise.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function checkLevels(plan: QuantizerPlan, dtype: FloatDType): void {
  if (plan.grid.integer) return;
  try {
    plan.grid.levels(dtype);
  } catch (e) {
    throw new Error(`${plan.who}: ${(e as Error).message}`);
  }
}

/**
 * Half the gap between the two largest levels (QuEST's trust radius on non-uniform grids).
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function topHalfGap(grid: Grid): number {
  if (grid.integer) return 0.5;
  return levelsOf(grid, 'float64').set.topHalfGap;
}

/**
 * Storage codes (int32, view layout) of an on-grid x̂ (`fakeQuantView`'s output): integer grids
 * round(x̂/s + z) (or round((x̂ − β)/s)), exact since x̂ = s·(q − z) was rounded once; other grids
 * encode x̂/s.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function codesOfView(plan: QuantizerPlan, xHat: Tensor, scale: Tensor, zeroPoint: Tensor | number): Tensor {
  return noGrad(() => {
    const s = scale.detach();
    if (plan.grid.integer) {
      const q = plan.offset === 'beta' ? round(xHat.sub(zeroPoint).div(s)) : round(xHat.div(s).add(zeroPoint));
      return q.to('int32');
    }
    return plan.grid.encode(xHat.div(s));
  });
}

/**
 * Values of codes (view layout) with their scales: (q − z)·s, q·s + β, or decode(c)·s — the fake-quant kernel's arithmetic.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function dequantizeView(plan: QuantizerPlan, codes: Tensor, scale: Tensor, zeroPoint: Tensor | number): Tensor {
  return noGrad(() => {
    const dtype = scale.dtype as FloatDType;
    if (plan.grid.integer) {
      const q = codes.to(dtype);
      return plan.offset === 'beta' ? q.mul(scale).add(zeroPoint) : q.sub(zeroPoint).mul(scale);
    }
    return plan.grid.decode(codes, dtype).mul(scale);
  });
}

/**
 * A monotone level index per element of an on-grid x̂/s (integer grids: q itself; others: the position among the levels).
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function levelIndexOfView(plan: QuantizerPlan, xHat: Tensor, scale: Tensor, zeroPoint: Tensor | number): Tensor {
  return noGrad(() => {
    if (plan.grid.integer) return codesOfView(plan, xHat, scale, zeroPoint).to(xHat.dtype);
    return levelsOf(plan.grid, xHat.dtype as FloatDType).set.index(xHat.div(scale.detach())).to(xHat.dtype);
  });
}

/**
 * The on-grid value of level indices (inverse of levelIndexOfView), differentiable in the scale.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function valueOfLevelIndex(plan: QuantizerPlan, index: Tensor, scale: Tensor, zeroPoint: Tensor | number): Tensor {
  if (plan.grid.integer) return plan.offset === 'beta' ? index.mul(scale).add(zeroPoint) : index.sub(zeroPoint).mul(scale);
  const lv = levelsOf(plan.grid, scale.dtype as FloatDType).set;
  return lv.at(index.to('int32'), scale.dtype as FloatDType).mul(scale);
}

