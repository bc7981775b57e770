/**
 * @file AWQ's clip search (methods-2.md §2, "Clip search"): per output row, or per group of a row,
 * the weight range that minimises that unit's output error on the calibration inputs. Tensor ops
 * only; ptq.ts runs it after AWQ's scale search and before the layer is quantized.
 */
import { noGrad, stack, tidy, where, type Tensor } from '@qgrad/core';

/** The candidate ranges of `awqClipSearch`: absmax·(1 − i/grid) for i = 0 … grid·maxShrink − 1. */
export interface AwqClipOptions {
  /** Steps per unit of absmax (default 20, as the reference). */
  grid?: number;
  /** Largest fraction of absmax cut off (default 0.5, as the reference; with grid 20 the smallest range tried is 0.55·absmax). */
  maxShrink?: number;
}

/** What `awqClipSearch` chose, per clip unit [out, in/groupSize], and the clamped weight [out, in]. */
export interface AwqClip {
  weight: Tensor;
  maxVal: Tensor;
  absmax: Tensor;
  /** Fraction of units whose range was shrunk (maxVal < absmax). */
  clipped: number;
}

/**
 * AWQ's clip search on a weight `w` [out, in] with calibration inputs `x` [n, in] (both float64, as
 * the layer sees them after AWQ's scaling): for every unit (a row when groupSize = in, else one group
 * of groupSize inputs of a row) try |w| ≤ absmax·(1 − i/grid), quantize with `quantize` (the layer's
 * round-to-nearest, whose scales follow the clamped range), and keep the i with the lowest
 * mean_tokens (Σ_{j∈unit} x_j(q_j − w_j))². i = 0 is no clipping, so a unit never gets worse by its
 * own measure. On grouped grids the per-group measures ignore the cross terms between a row's groups;
 * a row whose full output error came out higher than unclipped is reset to no clipping, so the
 * layer's calibration output error never exceeds that without the search (the reference omits that reset).
 * The error is taken from the Gram matrix xᵀx/n, so every calibration token counts (the reference subsamples 512).
 * @example
 * const { weight, clipped } = awqClipSearch(w, x, (v) => roundToNearest(wq, v), 32);
 */
export function awqClipSearch(w: Tensor, x: Tensor, quantize: (w: Tensor) => Tensor, groupSize: number, o: AwqClipOptions = {}): AwqClip {
  const [out, inF] = [w.shape[0]!, w.shape[1]!];
  const grid = o.grid ?? 20;
  const maxShrink = o.maxShrink ?? 0.5;
  if (w.ndim !== 2 || x.ndim !== 2 || x.shape[1] !== inF) throw new Error(`awqClipSearch: weight [out, in] and inputs [n, in] must share in; got weight [${w.shape.join(', ')}] and inputs [${x.shape.join(', ')}]`);
  if (!Number.isInteger(groupSize) || groupSize < 1 || inF % groupSize) throw new Error(`awqClipSearch: group size ${groupSize} must divide the ${inF} inputs`);
  if (!(Number.isInteger(grid) && grid >= 1)) throw new Error(`awqClipSearch: grid must be a positive integer, got ${grid}`);
  if (!(maxShrink >= 0 && maxShrink < 1)) throw new Error(`awqClipSearch: maxShrink must be in [0, 1), got ${maxShrink}`);
  const groups = inF / groupSize;
  const steps = Math.max(1, Math.ceil(grid * maxShrink - 1e-9));
  return tidy(() => noGrad(() => {
    const h = x.t().matmul(x).div(x.shape[0]!); // [in, in]
    const blocks = stack(Array.from({ length: groups }, (_, k) => h.narrow(0, k * groupSize, groupSize).narrow(1, k * groupSize, groupSize))); // [groups, g, g]
    // dᵀ H d per unit: the mean over tokens of the unit's squared partial output error
    const unitError = (d: Tensor) => {
      const dv = d.reshape([out, groups, groupSize]).permute([1, 0, 2]).contiguous(); // [groups, out, g]
      return dv.bmm(blocks).mul(dv).sum(-1).t(); // [out, groups]
    };
    const rowError = (d: Tensor) => d.matmul(h).mul(d).sum(-1); // [out]
    const view = w.reshape([out, groups, groupSize]);
    const absmax = view.abs().amax(-1, true); // [out, groups, 1]
    const clampTo = (m: Tensor) => view.minimum(m).maximum(m.neg()).reshape([out, inF]);
    let best: { err: Tensor; max: Tensor } | null = null;
    for (let i = 0; i < steps; i++) {
      // a tidy per candidate: only the running best outlives it
      best = tidy(() => {
        const max = absmax.mul(1 - i / grid);
        const err = unitError(quantize(clampTo(max)).sub(w));
        if (!best) return { err, max };
        const better = err.lt(best.err);
        return { err: where(better, err, best.err), max: where(better.unsqueeze(-1), max, best.max) };
      });
    }
    let max = best!.max;
    if (groups > 1) {
      const worse = rowError(quantize(clampTo(max)).sub(w)).gt(rowError(quantize(w).sub(w))); // [out]
      max = where(worse.reshape([out, 1, 1]), absmax, max);
    }
    const clippedUnits = max.lt(absmax).sum().item();
    return { weight: clampTo(max), maxVal: max.reshape([out, groups]), absmax: absmax.reshape([out, groups]), clipped: clippedUnits / (out * groups) };
  }));
}
