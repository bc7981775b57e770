/**
 * @file The straight-through estimators: `ste` (identity) and `clipped-ste` (identity inside the
 * real-domain clip window s·(qmin − z) ≤ x ≤ s·(qmax − z), inclusive; zero outside).
 * Neither passes a gradient to the scale or zero point (they are treated as constants).
 */
import { mul } from '../ops/elementwise.js';
import { type EstimatorSpec, windowMask } from './estimator.js';

export const ste: EstimatorSpec = {
  description: 'straight-through: dx̂/dx = 1 everywhere; no scale/zero-point gradient',
  backward: (_st, g) => [g, null, null], // dx̂/dx := 1
};

export const clippedSte: EstimatorSpec = {
  description: 'clipped straight-through: dx̂/dx = 1 inside the real clip window (inclusive), 0 outside',
  backward: (st, g) => [mul(g, windowMask(st)), null, null], // dx̂/dx := 1[lo ≤ x ≤ hi]
};
