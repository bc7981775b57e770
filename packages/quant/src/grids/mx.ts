/**
 * @file Grids 'mxfp4' and 'mxfp8' (OCP Microscaling): an FP element grid (E2M1, E4M3) whose scale
 * is a power of two 2^X per block of 32 along the last axis, X = ⌊log2 max|x|⌋ − emax_elem clamped
 * to [−127, 127] (an E8M0 byte). The scale comes from the data, so these grids take no other.
 */
import { amax, floor, log, noGrad, pow, where, eq, type Tensor } from '@qgrad/core';
import { fpFormat, fpGrid, fpLimits, type FpFormatName } from './fp.js';
import type { Grid } from './grid.js';

/**
 * The shared block exponents X of a grouped view whose last axis is one block (shape [..., 1]).
 * @example mxSharedExponent(x.reshape([-1, 32]), 2).shape; // [n/32, 1]
 */
export function mxSharedExponent(blocks: Tensor, emax: number): Tensor {
  return noGrad(() => {
    const m = amax(blocks.abs(), -1, true);
    const e = floor(log(m).div(Math.LN2));
    const p = pow(2, e);
    const fixed = e.add(m.ge(p.mul(2)).to(blocks.dtype)).sub(m.lt(p).to(blocks.dtype)); // exact at powers of two
    return where(eq(m, 0), 0, fixed.sub(emax)).clamp(-127, 127); // all-zero blocks: any scale
  });
}

/**
 * The MX scale 2^X of each block (last axis of the grouped view).
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function mxScale(blocks: Tensor, grid: Grid): Tensor {
  if (grid.scale.kind !== 'pow2') throw new Error(`mxScale: grid '${grid.name}' takes no power-of-two block scale`);
  return noGrad(() => pow(2, mxSharedExponent(blocks, grid.scale.kind === 'pow2' ? grid.scale.emax : 0)));
}

function mxGrid(name: string, element: FpFormatName): Grid {
  const g = fpGrid(name, element);
  const emax = fpLimits(fpFormat(element)).emax;
  return { ...g, label: name, scale: { kind: 'pow2', blockSize: 32, emax }, defaults: { ...g.defaults, granularity: { group: 32 } } };
}

/** `{ grid: 'mxfp4' }`: E2M1 elements, blocks of 32. */
export const mxfp4Grid = (): Grid => mxGrid('mxfp4', 'e2m1');
/** `{ grid: 'mxfp8' }`: E4M3 elements, blocks of 32. */
export const mxfp8Grid = (): Grid => mxGrid('mxfp8', 'e4m3fn');
