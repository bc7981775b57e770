/**
 * @file Grid 'nf4' (QLoRA): the 16 normal-float levels, absmax scales per block of 64 of the
 * flattened tensor; QLoRA's double quantization of those scales is scale option `double`.
 */
import { levelGrid, LevelSet, type Grid } from './grid.js';

/** The 16 NF4 levels (bitsandbytes' table), ascending, exactly −1 … 1 with a 0. */
export const NF4_LEVELS: readonly number[] = [
  -1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1,
];

const NF4 = new LevelSet('nf4 grid', NF4_LEVELS);

/**
 * `{ grid: 'nf4' }`: blocks of 64, absmax scale, straight-through by default.
 * @example const grid = nf4Grid(); // the grid behind { grid: 'nf4' }
 */
export function nf4Grid(): Grid {
  return levelGrid('nf4', 'nf4', NF4, { scaleRule: 'absmax', estimator: 'ste', granularity: { block: 64 } }, 4);
}
