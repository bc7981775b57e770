/**
 * @file Grid 'ternary' {−1, 0, 1} (BitNet b1.58): an integer grid, so the fused kernel and every
 * estimator apply; absmean scale (γ = mean|W|) and straight-through by default.
 */
import type { Grid } from './grid.js';
import { integerGrid } from './int.js';

/**
 * `{ grid: 'ternary' }`.
 * @example fakeQuant(w, { grid: 'ternary' }); // the config form of this grid
 */
export function ternaryGrid(): Grid {
  return integerGrid('ternary', 'ternary', -1, 1, Math.log2(3), 'absmean', 'ste');
}
