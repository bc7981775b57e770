/**
 * @file Grid 'centered': 2^b levels at the half-integers {±½, ±3/2, …, ±(2^(b−1) − ½)}, no zero —
 * QuEST's centred uniform grid and StatsQ's (methods.md §3, §8). With scale 'gaussian' the step
 * is QuEST's Δ = 2α*_b·RMS/(2^b − 1); with estimator 'trust' its default radius is Δ/2.
 */
import { noGrad } from '@qgrad/core';
import { levelGrid, LevelSet, type Grid, type GridOptions } from './grid.js';

/** `{ grid: 'centered', bits }` (1–8 bits, default 4; 1 bit is ±½, a sign). */
export function centeredGrid(o: GridOptions): Grid {
  const bits = o.bits ?? 4;
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) throw new Error(`centered grid: bits must be an integer in 1…8, got ${bits}`);
  const h = 2 ** (bits - 1);
  const levels = Array.from({ length: 2 * h }, (_, k) => k - h + 0.5);
  const [lo, hi] = [0.5 - h, h - 0.5];
  return {
    ...levelGrid('centered', `centered${bits}`, new LevelSet('centered grid', levels), { scaleRule: 'absmax', estimator: 'ste' }, bits),
    // in tensor ops (kernels stay on the device): the nearest half-integer is ⌊u⌋ + ½ (ties at integers go up)
    snap: (u) => noGrad(() => u.floor().add(0.5).clamp(lo, hi)),
    encode: (v) => noGrad(() => v.sub(lo).round().clamp(0, 2 * h - 1).to('int32')),
    decode: (c, dtype) => noGrad(() => c.to(dtype).add(lo)),
  };
}
