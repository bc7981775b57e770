/**
 * @file FlexRound (methods.md §9.1): learnable element-wise division before rounding,
 * Ŵ = s1·clip(R_ste(W ⊘ (s1·e^{S2}·e^{s3})), lo, hi), with S2 [out, in] and s3 [out, 1] starting at 0
 * (so training starts at round-to-nearest) and log s1 learned, fitted to the layer's float output
 * on calibration rows by Adam. Ŵ/s1 is an integer in range, so the layer keeps Ŵ as its weight and
 * s1 as its fixed scale. Block = one Linear here (the reference reconstructs whole transformer blocks).
 */
import { enableGrad, noGrad, quantRound, zeros, type Tensor } from '@qgrad/core';
import { Adam, Parameter } from '@qgrad/nn';

/** Options of FlexRound: the codes' range, the initial per-row scale, and the Adam steps and learning rate. */
export interface FlexRoundOptions {
  /** Integer range of the codes. */
  qmin: number;
  qmax: number;
  /** Initial per-row scale s1 [out, 1] (e.g. the RTN scale). */
  scale: Tensor;
  /** Adam steps (default 200; the reference runs 5000 per block) and learning rate (default 3e−3). */
  iters?: number;
  lr?: number;
}

/**
 * Fits FlexRound's divisions for W [out, in] on inputs x [n, in]; returns the on-grid weight and s1.
 * @example const { weight, scale } = flexRound(w, x, { qmin: -8, qmax: 7, scale: s });
 */
export function flexRound(w: Tensor, x: Tensor, o: FlexRoundOptions): { weight: Tensor; scale: Tensor; loss: number } {
  const [out, inp] = w.shape as [number, number];
  const wd = w.detach();
  const xd = x.detach().to(w.dtype);
  const target = noGrad(() => xd.matmul(wd.t()));
  const logS1 = Parameter(noGrad(() => o.scale.reshape([out, 1]).to(w.dtype).log()));
  const s2 = Parameter(zeros([out, inp], { dtype: w.dtype }));
  const s3 = Parameter(zeros([out, 1], { dtype: w.dtype }));
  const hat = () => {
    const s1 = logS1.exp();
    const u = wd.div(s1.mul(s2.exp()).mul(s3.exp()));
    return quantRound(u).clamp(o.qmin, o.qmax).mul(s1); // STE round, multiply back by s1 only
  };
  const opt = new Adam([logS1, s2, s3], { lr: o.lr ?? 3e-3 });
  let loss = NaN;
  enableGrad(() => {
    for (let i = 0; i < (o.iters ?? 200); i++) {
      opt.zeroGrad();
      const l = xd.matmul(hat().t()).sub(target).square().mean();
      l.backward();
      opt.step();
      loss = l.item();
    }
  });
  return noGrad(() => ({ weight: hat().detach(), scale: logS1.exp().detach(), loss }));
}
