/**
 * @file Integer grids at any bit width 1–16: signed (full or narrow), unsigned, and the
 * ternary {−1, 0, 1}·s / binary {−1, 1}·s grids. Fake quantization itself is core's fakeQuantize.
 */
import { fakeQuantize, getEstimator, scalarLike, where, ge, type Tensor, type EstimatorOptions } from '@qgrad/core';

export interface IntRange {
  qmin: number;
  qmax: number;
}

/**
 * The integer range of a b-bit grid: signed [−2^(b−1), 2^(b−1) − 1] (narrow: symmetric
 * [−(2^(b−1) − 1), 2^(b−1) − 1]) or unsigned [0, 2^b − 1].
 * @example intRange(4); // { qmin: -8, qmax: 7 }
 */
export function intRange(bits: number, opts: { signed?: boolean; narrow?: boolean } = {}): IntRange {
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) throw new Error(`intRange: bits must be an integer in 1…16, got ${bits}`);
  const signed = opts.signed ?? true;
  if (!signed) return { qmin: 0, qmax: 2 ** bits - 1 };
  if (bits === 1) return opts.narrow ? { qmin: 0, qmax: 0 } : { qmin: -1, qmax: 0 };
  const h = 2 ** (bits - 1);
  return { qmin: opts.narrow ? -(h - 1) : -h, qmax: h - 1 };
}

/**
 * Ternary fake quantization {−s, 0, s} (BitNet b1.58): s·clamp(R(x/s), −1, 1).
 * @example ternary(tensor([-0.9, 0.2, 0.6]), 1).toArray(); // [-1, 0, 1]
 */
export function ternary(x: Tensor, scale: Tensor | number, opts: EstimatorOptions & { estimator?: string } = {}): Tensor {
  return fakeQuantize(x, scale, 0, { qmin: -1, qmax: 1, estimator: opts.estimator ?? 'ste', ...opts });
}

/**
 * Binary fake quantization {−s, s}: s·(x ≥ 0 ? 1 : −1) (zero maps to +s so every output is on the
 * grid). Default estimator 'clipped-ste' (gradient where |x| ≤ s).
 */
export function binary(x: Tensor, scale: Tensor | number, opts: EstimatorOptions & { estimator?: string } = {}): Tensor {
  const s = typeof scale === 'number' ? scalarLike(scale, x.dtype, x) : scale;
  const y = where(ge(x.detach(), 0), s.detach(), s.detach().neg());
  const radius = s.detach(); // half the gap 2s
  return getEstimator(opts.estimator ?? 'clipped-ste').apply(x, scalarLike(1, x.dtype, x), scalarLike(0, x.dtype, x), {
    qmin: -Infinity, qmax: Infinity, rounding: 'halfEven', offset: 'zeroPoint', options: opts, y,
    grid: { lo: s.detach().neg(), hi: s.detach(), radius, levels: undefined },
  });
}
