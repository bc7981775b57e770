/**
 * @file AWQ's and SmoothQuant's per-input-channel migration (methods-2.md §2, §3): a scale s with
 * (x/s)·(W·diag(s))ᵀ = xWᵀ, chosen from calibration activations. Pure scale arithmetic in tensor
 * ops; ptq.ts folds 1/s into an InputTransform in front of the layer.
 */
import { dispose, noGrad, tidy, type Tensor } from '@qgrad/core';

/** A migration scale s [in] and the exponent that produced it. */
export interface Migration {
  scale: Tensor;
  alpha: number;
}

/**
 * AWQ's scale search: s = clip(mean|x|^α, 1e−4) normalised so max(s)·min(s) = 1, for α = k/grid,
 * k = 0…grid−1 (α = 0 is plain RTN), keeping the α whose Q(W·s)/s gives the lowest output MSE on
 * the calibration rows. `quantize` rounds a weight [out, in] onto the layer's grid.
 * @example const { scale, alpha } = awqSearch(w, x, (v) => roundToNearest(wq, v));
 */
export function awqSearch(w: Tensor, x: Tensor, quantize: (w: Tensor) => Tensor, grid = 20): Migration {
  return tidy(() => noGrad(() => {
    const sx = x.abs().mean(0); // [in]
    const yRef = x.matmul(w.t());
    let best: Migration | null = null;
    let bestErr = Infinity;
    for (let k = 0; k < grid; k++) {
      const alpha = k / grid;
      // a tidy per trial: each one's [n, out] output would otherwise live until the search ends
      const { s, err } = tidy(() => {
        const s0 = sx.pow(alpha).clamp(1e-4);
        const s = s0.div(Math.sqrt(s0.amax().item() * s0.amin().item()));
        const y = x.matmul(quantize(w.mul(s)).div(s).t());
        return { s, err: y.sub(yRef).square().mean().item() };
      });
      if (err < bestErr) {
        if (best) dispose(best.scale);
        bestErr = err;
        best = { scale: s, alpha };
      } else dispose(s);
    }
    return best!;
  }));
}

/**
 * SmoothQuant's scale s_j = clip(max|x_j|^α / max(1e−5, max_r|W_rj|)^(1−α), 1e−5): α moves the
 * activation outliers into the weights (α = 0.5 balances the two maxima per channel).
 * @example const { scale } = smoothQuantScales(w, x, 0.85); // then x/scale and w·scale
 */
export function smoothQuantScales(w: Tensor, x: Tensor, alpha = 0.5): Migration {
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`smoothQuantScales: alpha must be in [0, 1], got ${alpha}`);
  return noGrad(() => {
    const a = x.abs().amax(0); // [in]
    const wm = w.abs().amax(0).clamp(1e-5);
    return { scale: a.pow(alpha).div(wm.pow(1 - alpha)).clamp(1e-5), alpha };
  });
}
