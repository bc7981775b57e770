/**
 * @file NF4 (QLoRA): the 16 normal-float levels and blockwise absmax quantization onto them
 * (blocks of 64 along the flattened tensor by default).
 */
import { amax, noGrad, type Tensor } from '@qgrad/core';
import { quantizeToLevels, type LevelQuantOptions } from './levels.js';

/** The 16 NF4 levels (bitsandbytes' table), ascending, exactly −1 … 1 with a 0. */
export const NF4_LEVELS: readonly number[] = [
  -1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1,
];

/**
 * NF4 fake quantization: flatten, blocks of `blockSize`, c = max|w| per block, each w/c snapped to
 * the nearest NF4 level, times c. x gets the estimator's gradient (default straight-through).
 * @example nf4(randn([4, 64])).shape; // [4, 64]
 */
export function nf4(x: Tensor, opts: LevelQuantOptions & { blockSize?: number } = {}): Tensor {
  const b = opts.blockSize ?? 64;
  const n = x.numel();
  if (n % b !== 0) throw new Error(`nf4: ${n} elements (shape [${x.shape.join(', ')}]) do not split into blocks of ${b}`);
  const blocks = x.reshape([n / b, b]);
  const c = noGrad(() => amax(blocks.abs(), -1, true).clamp(1e-12, null)); // [n/b, 1]
  return quantizeToLevels(blocks.div(c), [...NF4_LEVELS], opts).mul(c).reshape(x.shape);
}
