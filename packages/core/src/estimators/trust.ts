/**
 * @file QuEST's trust estimator: the gradient passes only where the rounding error is within a
 * trust radius, M = 1[|x̂ − x| ≤ T], T = trust·s (default trust ½, i.e. half a step, QuEST's code
 * default). Non-affine grids give their own radius (half the top gap). No scale gradient.
 */
import { mul } from '../ops/elementwise.js';
import { type EstimatorSpec, trustMask } from './estimator.js';

export const trust: EstimatorSpec = {
  description: "QuEST trust: dx̂/dx = 1[|x̂ − x| ≤ T], T = trust·s (default half a step)",
  backward: (st, g) => [mul(g, trustMask(st)), null, null], // dx̂/dx := 1[|x̂ − x| ≤ T]
};
