/**
 * @file Helpers shared by the core op tests: flat index ↔ multi-index conversions.
 */

/** Flat row-major index → multi-index for `shape`. */
export const unravel = (i: number, shape: number[]): number[] => {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return idx;
};

/** Multi-index → flat row-major index for `shape`. */
export const ravel = (idx: number[], shape: number[]): number => idx.reduce((a, v, d) => a * shape[d]! + v, 0);
