/**
 * @file What a gradient estimator is: the state a quantizer hands it (input, hard output, scale,
 * zero point, integer range), `makeEstimator` that turns a spec into one differentiable primitive
 * with `defineFunction`, and mask helpers estimators are written from. The registry is index.ts.
 */
import type { QuantOffset, RoundingMode } from '@qgrad/kernels';
import { runKernel } from '../dispatch.js';
import { defineFunction } from '../function.js';
import type { Generator } from '../random.js';
import { Tensor } from '../tensor.js';
import { rand } from '../ops/creation.js';
import { abs, add, cast, ge, le, logicalAnd, mul, sub } from '../ops/elementwise.js';
import { expandView } from '../ops/movement.js';

/** Options every estimator may read; unknown ones are ignored. */
export interface EstimatorOptions {
  /** Multiplies the scale and zero-point gradients (LSQ's g = 1/√(N·Q_P)); default 1. */
  gradScale?: number;
  /** Trust radius in steps for 'trust' (QuEST): the mask is |x̂ − x| ≤ trust·s; default ½. */
  trust?: number;
  /** Temperature τ of the 'relaxed' estimator's soft quantizer (in step units); default 0.5. */
  temperature?: number;
  /** Random source for 'stochastic' rounding (the default generator when omitted). */
  generator?: Generator;
}

/**
 * Everything an estimator's backward sees. `scale` and `zeroPoint` are broadcastable to `x`
 * (per-tensor, per-channel and per-group scales all arrive as broadcast views).
 */
export interface QuantState {
  x: Tensor;
  /** The hard forward output x̂. */
  y: Tensor;
  scale: Tensor;
  zeroPoint: Tensor;
  /** Integer range (±Infinity when unbounded, as for plain rounding). */
  qmin: number;
  qmax: number;
  rounding: RoundingMode;
  offset: QuantOffset;
  options: EstimatorOptions;
  /** Which gradients are wanted, in the order x, scale, zeroPoint. */
  needsInputGrad: readonly boolean[];
  /** Uniform noise used by stochastic rounding (so backward sees the same draw). */
  noise?: Tensor;
  /** Grids that are not an affine integer grid (FP, NF4, codebooks) describe themselves here. */
  grid?: GridInfo;
}

/** For non-affine grids: the real-domain clip window, trust radius and levels (x units). */
export interface GridInfo {
  lo: Tensor | number;
  hi: Tensor | number;
  /** Trust radius (QuEST uses half the top gap for non-uniform grids). */
  radius: Tensor | number;
  /** The grid's levels in x units, broadcastable as [..., K] against x.unsqueeze(-1). */
  levels?: Tensor;
}

/** Gradients for [x, scale, zeroPoint]; null where none flows. */
export type EstimatorGrads = [Tensor | null, Tensor | null, Tensor | null];

/** What `defineEstimator` takes besides the name: how the estimator's gradients are computed, and a description. */
export interface EstimatorSpec {
  /** One line shown by `listEstimators()` and in error messages. */
  description?: string;
  /** What the third argument of fakeQuantize means under this estimator (default 'zeroPoint'). */
  offset?: 'zeroPoint' | 'beta';
  /**
   * The hard forward x̂, replacing round-to-nearest (stochastic rounding does); receives the state
   * without `y`. May set `state.noise` for backward.
   */
  forward?: (state: Omit<QuantState, 'y'>) => Tensor;
  /** Gradients of x, scale and zeroPoint from the output gradient `g` (written in tensor ops). */
  backward: (state: QuantState, g: Tensor) => EstimatorGrads;
}

/** Non-tensor configuration of one quantizer application. */
export interface QuantConfig {
  qmin: number;
  qmax: number;
  rounding: RoundingMode;
  offset: QuantOffset;
  options: EstimatorOptions;
  /** A precomputed hard output (non-affine grids), used instead of the kernel. */
  y?: Tensor;
  grid?: GridInfo;
}

/** A registered estimator: its spec and the primitive that applies it. */
export interface Estimator {
  readonly name: string;
  readonly spec: EstimatorSpec;
  /** x̂ of x on the grid given by scale/zeroPoint/config, with this estimator's gradients. */
  readonly apply: (x: Tensor, scale: Tensor, zeroPoint: Tensor, config: QuantConfig) => Tensor;
}

/**
 * The fused forward kernel (noise only for stochastic rounding).
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function fakeQuantizeKernel(x: Tensor, scale: Tensor, zeroPoint: Tensor, c: Pick<QuantConfig, 'qmin' | 'qmax' | 'rounding' | 'offset'>, noise?: Tensor): Tensor {
  const shape = [...x.shape];
  const ins = [x, cast(scale, x.dtype), cast(zeroPoint, x.dtype)].map((t) => expandView(t, shape));
  if (noise) ins.push(expandView(noise, shape));
  return runKernel('fakeQuantize', ins, shape, x.dtype, { qmin: c.qmin, qmax: c.qmax, rounding: c.rounding, offset: c.offset });
}

/** Uniform noise ξ ~ U[0, 1) of x's shape and dtype. */
export function uniformNoise(x: Tensor, generator?: Generator): Tensor {
  return rand([...x.shape], { dtype: x.dtype, generator });
}

/**
 * Wraps a spec as one primitive (STYLE rule 8): forward computes x̂ (the kernel, the spec's own
 * forward, or a precomputed value), backward hands the saved state to the spec.
 */
export function makeEstimator(name: string, spec: EstimatorSpec): Estimator {
  const fn = defineFunction({
    name: `quantize[${name}]`,
    forward(ctx, x: Tensor, scale: Tensor, zeroPoint: Tensor, c: QuantConfig) {
      const base: Omit<QuantState, 'y'> = {
        x, scale, zeroPoint, qmin: c.qmin, qmax: c.qmax, rounding: c.rounding, offset: c.offset,
        options: c.options, needsInputGrad: ctx.needsInputGrad.slice(0, 3), grid: c.grid,
      };
      const y = c.y ?? (spec.forward ? spec.forward(base) : fakeQuantizeKernel(x, scale, zeroPoint, c));
      ctx.save(x, scale, zeroPoint, y);
      ctx.state = { ...base, y };
      return y === x ? x.alias() : y;
    },
    backward(ctx, g) {
      const st = ctx.state as unknown as QuantState;
      const [gx, gs, gz] = spec.backward({ ...st, needsInputGrad: ctx.needsInputGrad.slice(0, 3) }, g);
      return [ctx.needsInputGrad[0] ? gx : null, ctx.needsInputGrad[1] ? gs : null, ctx.needsInputGrad[2] ? gz : null, null];
    },
  });
  return { name, spec, apply: fn };
}

// ---------------------------------------------------------------- helpers for writing estimators
/**
 * The real-domain clip window [lo, hi] of x: s·(qmin − z) … s·(qmax − z), or qmin·s + β ….
 * @example const [lo, hi] = clipWindow(st); // inside a custom estimator's backward
 */
export function clipWindow(st: QuantState): [Tensor | number, Tensor | number] {
  if (st.grid) return [st.grid.lo, st.grid.hi];
  const z = st.offset === 'roundedZeroPoint' ? st.zeroPoint.round().clamp(st.qmin, st.qmax) : st.zeroPoint;
  if (st.offset === 'beta') return [add(mul(st.scale, st.qmin), z), add(mul(st.scale, st.qmax), z)];
  return [mul(st.scale, sub(z, st.qmin).neg()), mul(st.scale, sub(z, st.qmax).neg())];
}

/**
 * 1 where lo ≤ x ≤ hi (inclusive, like torch.clamp's gradient), as x's dtype.
 * @example defineEstimator('my-clipped-ste', { backward: (st, g) => [g.mul(windowMask(st)), null, null] });
 */
export function windowMask(st: QuantState): Tensor {
  const [lo, hi] = clipWindow(st);
  return cast(logicalAnd(ge(st.x, lo), le(st.x, hi)), st.x.dtype);
}

/**
 * The trust radius: `trust`·s on an affine grid (default half a step), the grid's own otherwise.
 * @example const r = trustRadius(st); // the trust estimator's window half-width
 */
export function trustRadius(st: QuantState): Tensor | number {
  if (st.grid) return st.options.trust === undefined ? st.grid.radius : mul(st.grid.radius, 2 * st.options.trust);
  return mul(abs(st.scale), st.options.trust ?? 0.5);
}

/**
 * 1 where |x̂ − x| ≤ radius (QuEST's trust mask).
 * @example defineEstimator('my-trust', { backward: (st, g) => [g.mul(trustMask(st)), null, null] });
 */
export function trustMask(st: QuantState): Tensor {
  return cast(le(abs(sub(st.y, st.x)), trustRadius(st)), st.x.dtype);
}

export { Tensor };
