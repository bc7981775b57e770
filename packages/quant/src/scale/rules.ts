/**
 * @file Data-derived scale initialisers, one scale (and zero point) per row of a grouped view's
 * last axis: min-max, absmax, percentile, MSE-optimal grid search, Gaussian-MSE-optimal (QuEST's
 * α*_b·RMS), absmean (BitNet b1.58), median (b1.58 Reloaded) and LSQ's 2·mean|x|/√Qp. Computed on
 * the CPU without gradient. How a scale lives (fixed, learned, dynamic) is scale/spec.ts.
 */
import { fromTypedArray, type Tensor } from '@qgrad/core';
import type { Grid } from '../grids/grid.js';
import { roundNumber } from '../grids/int.js';

/** How a scale is computed from data: 'mse' and 'gaussian' are the fitted rules. */
export type ScaleRule = 'minmax' | 'absmax' | 'mse' | 'gaussian' | 'absmean' | 'median' | 'lsq' | { percentile: number };

/** Smallest step handed out by data-derived scales (BitNet's 1e−5 clamp). */
export const MIN_STEP = 1e-5;

/** MSE-optimal clipping α*_b of a b-bit centred uniform grid for N(0, 1) data (QuEST; methods.md §3). */
export const GAUSSIAN_MSE_ALPHA: Readonly<Record<number, number>> = {
  1: 0.79788, 1.585: 1.22401, 2: 1.49353, 3: 2.05107, 4: 2.51393, 5: 2.91609, 6: 3.2766, 7: 3.60105, 8: 3.88494,
};

/** A scale and zero point computed from data by a scale rule. */
export interface ScaleParams {
  scale: Tensor;
  zeroPoint: Tensor;
}

function quantile(sorted: ArrayLike<number>, p: number): number {
  const i = (sorted.length - 1) * p;
  const lo = Math.floor(i);
  return sorted[lo]! + (sorted[Math.min(lo + 1, sorted.length - 1)]! - sorted[lo]!) * (i - lo);
}

/**
 * One scale and zero point per row of `view`'s last axis, shaped `[...view.shape[:-1], 1]`.
 * @example initScale(x.reshape([1, -1]), 'absmax', ext).scale; // [1, 1]
 */
export function initScale(view: Tensor, method: ScaleRule, grid: Grid, opts: { zeroPoint?: boolean } = {}): ScaleParams {
  const g = { qmin: grid.lo, qmax: grid.hi, bits: Math.round(grid.idealBits * 1000) / 1000, snap: (u: number) => grid.snapValue(u) };
  const k = view.shape[view.ndim - 1]!;
  const data = Float64Array.from(view.dataSync());
  const rows = data.length / k;
  const s = new Float64Array(rows);
  const z = new Float64Array(rows);
  const qAbs = g.qmax > 0 ? g.qmax : Math.abs(g.qmin); // the largest value maps to the top level: nothing clips
  const asym = !!opts.zeroPoint && grid.integer !== null;
  for (let r = 0; r < rows; r++) {
    // one pass over the row's typed view (dynamic scales run this every forward: arrays and
    // spreads of each row cost 13 % of the demo's run time)
    const row = data.subarray(r * k, (r + 1) * k);
    let amax = 0;
    let sumAbs = 0;
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < k; i++) {
      const v = row[i]!;
      const a = Math.abs(v);
      amax = Math.max(amax, a);
      sumAbs += a;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    const meanAbs = sumAbs / k;
    const absSorted = () => row.map(Math.abs).sort();
    let scale: number;
    if (typeof method === 'object') {
      const p = method.percentile;
      if (!(p > 0 && p <= 100)) throw new Error(`initScale: percentile must be in (0, 100], got ${p}`);
      const sortedAbs = absSorted();
      const sorted = row.slice().sort();
      if (asym) [lo, hi] = [quantile(sorted, 1 - p / 100), quantile(sorted, p / 100)];
      scale = asym ? (hi - lo) / (g.qmax - g.qmin) : quantile(sortedAbs, p / 100) / qAbs;
    } else if (method === 'minmax' || method === 'absmax') {
      scale = asym && method === 'minmax' ? (Math.max(hi, 0) - Math.min(lo, 0)) / (g.qmax - g.qmin) : amax / qAbs;
      if (asym) lo = Math.min(lo, 0);
    } else if (method === 'absmean') {
      scale = Math.max(meanAbs, 1e-5); // BitNet b1.58: γ = mean|W|
    } else if (method === 'median') {
      scale = Math.max(quantile(absSorted(), 0.5), 1e-5); // b1.58 Reloaded: median|W|
    } else if (method === 'lsq') {
      scale = (2 * meanAbs) / Math.sqrt(Math.max(grid.positiveLevels, 1)); // LSQ: 2·mean|v|/√Qp
    } else if (method === 'gaussian') {
      const a = g.bits === undefined ? undefined : GAUSSIAN_MSE_ALPHA[g.bits];
      if (a === undefined) throw new Error(`initScale: 'gaussian' needs bits in {${Object.keys(GAUSSIAN_MSE_ALPHA).join(', ')}}, got ${g.bits}`);
      let sq = 0;
      for (let i = 0; i < k; i++) sq += row[i]! * row[i]!;
      const rms = Math.sqrt(sq / k);
      scale = (2 * a * rms) / (2 ** g.bits! - 1); // QuEST: Δ = 2α*_b·RMS/(2^b − 1)
    } else if (method === 'mse') {
      // grid search over clipping fractions of the absmax scale (100 candidates)
      const base = asym ? (Math.max(hi, 0) - Math.min(lo, 0)) / (g.qmax - g.qmin) : amax / qAbs;
      let best = Infinity;
      scale = base;
      for (let c = 1; c <= 100; c++) {
        const sc = (base * c) / 100;
        if (!(sc > 0)) break;
        const zc = asym ? Math.min(Math.max(roundNumber(-Math.min(lo, 0) / sc) + g.qmin, g.qmin), g.qmax) : 0;
        let err = 0;
        for (const v of row) {
          const d = v - sc * (g.snap(v / sc + zc) - zc);
          err += d * d;
        }
        if (err < best) [best, scale] = [err, sc];
      }
      if (asym) lo = Math.min(lo, 0);
    } else {
      throw new Error(`initScale: unknown method ${JSON.stringify(method)}; use minmax, absmax, mse, gaussian, absmean, median, lsq or { percentile }`);
    }
    if (scale === 0) scale = 1; // an all-zero group: any positive scale represents it exactly
    if (!(scale > 0 && scale < Infinity)) throw new Error(`initScale: rule ${JSON.stringify(method)} gives scale ${scale} for group ${r} (its values include non-finite numbers?)`);
    s[r] = scale;
    z[r] = asym ? Math.min(Math.max(roundNumber(-lo / scale) + g.qmin, g.qmin), g.qmax) : 0;
  }
  const shape = [...view.shape.slice(0, -1), 1];
  const dtype = view.dtype === 'float64' ? 'float64' : 'float32';
  return { scale: fromTypedArray(dtype === 'float64' ? s : Float32Array.from(s), shape, dtype), zeroPoint: fromTypedArray(dtype === 'float64' ? z : Float32Array.from(z), shape, dtype) };
}

/**
 * Checks user-given or loaded scales: every one finite and > 0; names `who` and the first bad one.
 * @example checkScale(loadedScale, 'layer.0.weight'); // throws on a zero, negative or non-finite scale
 */
export function checkScale(scale: Tensor, who: string): void {
  const d = scale.dataSync();
  for (let i = 0; i < d.length; i++) {
    if (!(d[i]! > 0 && d[i]! < Infinity)) throw new Error(`${who}: scale ${d[i]} at index ${i} (of shape [${scale.shape.join(', ')}]) must be finite and > 0`);
  }
}
