/**
 * @file The relaxed estimator: a hard forward (round to nearest) whose backward is the slope of
 * a soft quantizer (softmax over grid levels at temperature τ) — a soft *backward* only. HESTIA
 * is different: its forward itself is soft (@qgrad/quant's `soft` weight-quantizer plug-in). With p_k ∝ exp(−(u − c_k)²/τ) and ũ = Σ p_k c_k,
 * dũ/du = (2/τ)·Var_p(c). On an affine grid the levels are the 6 integers around u inside
 * [qmin, qmax] (farther ones carry weight < e^{−4/τ}); non-affine grids supply their levels.
 */
import { arange } from '../ops/creation.js';
import { add, cast, div, exp, floor, ge, le, logicalAnd, mul, neg, round, square, sub, where } from '../ops/elementwise.js';
import { logsumexp, sum } from '../ops/reduce.js';
import { unsqueeze } from '../ops/movement.js';
import { Tensor } from '../tensor.js';
import type { EstimatorSpec, QuantState } from './estimator.js';

/** (2/τ)·Var_p(c) along the last axis for logits −(u − c)²/τ (+ −∞ where masked off). */
function varianceSlope(u: Tensor, c: Tensor, tau: Tensor | number, valid?: Tensor): Tensor {
  let logits = div(neg(square(sub(u, c))), tau);
  if (valid) logits = where(valid, logits, -Infinity);
  const p = exp(sub(logits, logsumexp(logits, -1, true)));
  const mean = sum(mul(p, c), -1, true);
  const v = sum(mul(p, square(sub(c, mean))), -1);
  return div(mul(v, 2), tau instanceof Tensor ? tau.squeeze(-1) : tau);
}

function relaxedSlope(st: QuantState): Tensor {
  const tau = st.options.temperature ?? 0.5;
  if (!(tau > 0)) throw new Error(`quantize[relaxed]: temperature must be > 0, got ${tau}`);
  if (st.grid) {
    if (!st.grid.levels) throw new Error('quantize[relaxed]: this grid gives no levels to relax over');
    const r = st.grid.radius;
    // τ in units of the (top) step 2r
    const tx = r instanceof Tensor ? mul(square(mul(unsqueeze(r, -1), 2)), tau) : (2 * r) ** 2 * tau;
    return varianceSlope(unsqueeze(st.x, -1), st.grid.levels, tx);
  }
  const z = st.offset === 'roundedZeroPoint' ? round(st.zeroPoint).clamp(st.qmin, st.qmax) : st.zeroPoint;
  const u = st.offset === 'beta' ? div(sub(st.x, z), st.scale) : add(div(st.x, st.scale), z);
  const bounded = Number.isFinite(st.qmin) || Number.isFinite(st.qmax);
  const base = bounded ? floor(u).clamp(Number.isFinite(st.qmin) ? st.qmin : null, Number.isFinite(st.qmax) ? st.qmax : null) : floor(u);
  const c = add(unsqueeze(base, -1), arange(-2, 4, 1, { dtype: st.x.dtype })); // [..., 6] candidate integers
  const valid = logicalAnd(ge(c, st.qmin), le(c, st.qmax));
  return varianceSlope(unsqueeze(u, -1), c, tau, valid);
}

export const relaxed: EstimatorSpec = {
  description: 'relaxed: hard forward (not soft, unlike HESTIA); backward is the soft quantizer\'s slope (2/τ)·Var_p(levels), τ = temperature (default 0.5 step²)',
  backward: (st, g) => [mul(g, cast(relaxedSlope(st), g.dtype)), null, null], // dũ/du = (2/τ)·Var_p(c)
};
