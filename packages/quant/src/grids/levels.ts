/**
 * @file Non-uniform level grids: nearest-level assignment onto a sorted level set (NF4, learned
 * codebooks, any explicit grid), with the x gradient chosen by an estimator and a gradient to the
 * codebook entries. Helpers to describe such a grid to core's estimators live here too.
 */
import { arange, argmin, cast, eq, getEstimator, scalarLike, sum, tensor, unsqueeze, type EstimatorOptions, type GridInfo, type Tensor } from '@qgrad/core';

/** Index of the nearest level for every element (ties go to the lower level). */
export function nearestIndex(x: Tensor, levels: Tensor): Tensor {
  return argmin(unsqueeze(x.detach(), -1).sub(levels.detach()).abs(), -1);
}

/** Half the gap between the two largest levels: QuEST's default trust radius for non-uniform grids. */
export function topHalfGap(levels: number[]): number {
  const s = [...levels].sort((a, b) => a - b);
  return s.length < 2 ? Infinity : (s[s.length - 1]! - s[s.length - 2]!) / 2;
}

/**
 * Applies an estimator to a precomputed hard output `y` of a non-affine grid: forward y,
 * backward as the estimator decides from `grid` (clip window, trust radius, levels).
 */
export function withEstimator(x: Tensor, y: Tensor, grid: GridInfo, estimator = 'ste', options: EstimatorOptions = {}): Tensor {
  return getEstimator(estimator).apply(x, scalarLike(1, x.dtype, x), scalarLike(0, x.dtype, x), {
    qmin: -Infinity, qmax: Infinity, rounding: 'halfEven', offset: 'zeroPoint', options, y: y.detach(), grid,
  });
}

export interface LevelQuantOptions extends EstimatorOptions {
  estimator?: string;
}

/**
 * Snaps every element of x to the nearest entry of `levels` (1-D). The forward value is the
 * chosen level; x gets the estimator's gradient (default straight-through) and each level gets
 * the sum of the output gradients of the elements assigned to it (VQ-style codebook gradient).
 * @example quantizeToLevels(tensor([0.1, 0.7]), tensor([0, 0.5, 1])).toArray(); // [0, 0.5]
 */
export function quantizeToLevels(x: Tensor, levels: Tensor | number[], opts: LevelQuantOptions = {}): Tensor {
  const l = Array.isArray(levels) ? tensor(levels, { dtype: x.dtype }) : levels;
  if (l.ndim !== 1 || l.numel() === 0) throw new Error(`quantizeToLevels: levels must be a non-empty 1-D tensor, got shape [${l.shape.join(', ')}]`);
  const idx = nearestIndex(x, l);
  const k = l.shape[0]!;
  const onehot = cast(eq(unsqueeze(idx, -1), arange(0, k, 1, { dtype: 'int32' })), x.dtype); // [..., K]
  const y = sum(onehot.mul(l), -1); // differentiable in the levels
  const vals = Array.from(l.data);
  const lo = Math.min(...vals);
  const hi = Math.max(...vals);
  const xPart = withEstimator(x, y, { lo, hi, radius: topHalfGap(vals), levels: l.detach() }, opts.estimator ?? 'ste', opts);
  return l.requiresGrad ? xPart.add(y.sub(y.detach())) : xPart;
}
