/**
 * @file Grid 'binary' {−1, +1} (sign): x̂ = α·(x ≥ 0 ? 1 : −1), zero mapping to +α so every output
 * is on the grid; absmean scale (α = mean|W|) and straight-through by default.
 */
import { levelGrid, LevelSet, type Grid } from './grid.js';

const SIGNS = new LevelSet('binary grid', [-1, 1]);

/**
 * `{ grid: 'binary' }`.
 * @example fakeQuant(w, { grid: 'binary' }); // the config form of this grid
 */
export function binaryGrid(): Grid {
  return levelGrid('binary', 'binary', SIGNS, { scaleRule: 'absmean', estimator: 'ste' }, 1);
}
