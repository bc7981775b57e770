/**
 * @file Stochastic rounding: q = ⌊u + ξ⌋, ξ ~ U[0, 1) from a seedable generator, so E[q] = u
 * inside the range (unbiased). Backward is the clipped straight-through estimator, which is the
 * derivative of that expectation.
 */
import { mul } from '../ops/elementwise.js';
import { type EstimatorSpec, fakeQuantizeKernel, uniformNoise, windowMask } from './estimator.js';

export const stochastic: EstimatorSpec = {
  description: 'stochastic rounding ⌊u + ξ⌋ (seeded, unbiased); clipped straight-through backward',
  forward(st) {
    if (st.grid) throw new Error(`quantize[stochastic]: stochastic rounding needs an affine integer grid; this grid is not one`);
    st.noise = uniformNoise(st.x, st.options.generator);
    return fakeQuantizeKernel(st.x, st.scale, st.zeroPoint, { ...st, rounding: 'stochastic' }, st.noise);
  },
  backward: (st, g) => [mul(g, windowMask(st)), null, null], // d E[x̂]/dx = 1 inside the window
};
