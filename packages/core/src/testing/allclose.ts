/**
 * @file allclose and its asserting twin: elementwise |a - b| ≤ atol + rtol·|b|, NaNs equal
 * only to NaNs, and a report of the worst element when they differ.
 */
import type { TypedArray } from '@qgrad/kernels';
import type { NestedArray, Tensor } from '../tensor.js';

/** Tolerances of `allclose`: |a − b| ≤ atol + rtol·|b|, and whether NaN equals NaN. */
export interface CloseOptions {
  rtol?: number;
  atol?: number;
  /** NaN == NaN (default true). */
  equalNan?: boolean;
}

type Values = Tensor | TypedArray | number[] | NestedArray;

function flat(x: Values): { values: ArrayLike<number>; shape: number[] } {
  if (typeof x === 'number') return { values: [x], shape: [] };
  if (ArrayBuffer.isView(x)) return { values: x, shape: [x.length] };
  if (Array.isArray(x)) {
    const shape: number[] = [];
    let a: unknown = x;
    while (Array.isArray(a)) {
      shape.push(a.length);
      a = a[0];
    }
    return { values: (x as unknown[]).flat(Infinity as 1) as number[], shape };
  }
  return { values: (x as Tensor).dataSync(), shape: [...(x as Tensor).shape] };
}

/**
 * Describes the first worst mismatch, or returns null when all elements are close.
 * @example closeReport([1, 2], [1, 2.5]); // a message naming the worst element, or null
 */
export function closeReport(actual: Values, expected: Values, opts: CloseOptions = {}): string | null {
  const rtol = opts.rtol ?? 1e-5;
  const atol = opts.atol ?? 1e-8;
  const a = flat(actual);
  const b = flat(expected);
  if (a.values.length !== b.values.length) return `sizes differ: actual has ${a.values.length} elements (shape [${a.shape.join(', ')}]), expected ${b.values.length} (shape [${b.shape.join(', ')}])`;
  let worst = -1;
  let worstExcess = 0;
  let bad = 0;
  for (let i = 0; i < a.values.length; i++) {
    const x = a.values[i]!;
    const y = b.values[i]!;
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (Number.isNaN(x) && Number.isNaN(y) && (opts.equalNan ?? true)) continue;
      bad++;
      if (worstExcess !== Infinity) [worst, worstExcess] = [i, Infinity];
      continue;
    }
    if (x === y) continue;
    const excess = Math.abs(x - y) - (atol + rtol * Math.abs(y));
    if (excess > 0) {
      bad++;
      if (excess > worstExcess) [worst, worstExcess] = [i, excess];
    }
  }
  if (bad === 0) return null;
  return `${bad} of ${a.values.length} elements differ (rtol ${rtol}, atol ${atol}); worst at flat index ${worst}: actual ${a.values[worst]}, expected ${b.values[worst]}`;
}

/** True when every element is close. @example allclose(tensor([1, 2]), [1, 2 + 1e-9]); // true */
export function allclose(actual: Values, expected: Values, opts: CloseOptions = {}): boolean {
  return closeReport(actual, expected, opts) === null;
}

/**
 * Throws with the worst element when `actual` and `expected` are not close.
 * @example assertAllclose(y.toArray(), [1, 2, 3], { atol: 1e-6 });
 */
export function assertAllclose(actual: Values, expected: Values, opts: CloseOptions = {}, what = 'values'): void {
  const r = closeReport(actual, expected, opts);
  if (r) throw new Error(`${what}: ${r}`);
}
