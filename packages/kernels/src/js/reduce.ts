/**
 * @file js reference reductions: sum/max/min/prod/absmax over any set of axes, and argmax/argmin
 * along one axis. Sums accumulate in float64 and in a fixed order.
 */
import type { Kernel } from '../backend.js';
import type { TypedArray } from '../names.js';
import { offsets } from '../layout.js';

/** Splits a view into outer (kept) and inner (reduced) dims; returns each outer element's base offset. */
function split(shape: readonly number[], strides: readonly number[], offset: number, axes: readonly number[]) {
  const keep: number[] = [];
  const red: number[] = [];
  for (let d = 0; d < shape.length; d++) (axes.includes(d) ? red : keep).push(d);
  const bases = offsets({ shape: keep.map((d) => shape[d]!), strides: keep.map((d) => strides[d]!), offset });
  const inner = offsets({ shape: red.map((d) => shape[d]!), strides: red.map((d) => strides[d]!), offset: 0 });
  return { bases, inner };
}

export const reduce: Kernel<'reduce', TypedArray> = ([x], out, { op, axes }) => {
  const { bases, inner } = split(x!.shape, x!.strides, x!.offset, axes);
  const xd = x!.data;
  const od = out.data;
  const m = inner.length;
  for (let o = 0; o < bases.length; o++) {
    const b = bases[o]!;
    let acc: number;
    if (op === 'sum') {
      acc = 0;
      for (let j = 0; j < m; j++) acc += xd[b + inner[j]!]!;
    } else if (op === 'prod') {
      acc = 1;
      for (let j = 0; j < m; j++) acc *= xd[b + inner[j]!]!;
    } else if (op === 'absmax') {
      acc = 0;
      for (let j = 0; j < m; j++) {
        const v = Math.abs(xd[b + inner[j]!]!);
        if (v !== v) {
          acc = NaN;
          break;
        }
        if (v > acc) acc = v;
      }
    } else {
      // max/min propagate NaN, as PyTorch does
      acc = op === 'max' ? -Infinity : Infinity;
      for (let j = 0; j < m; j++) {
        const v = xd[b + inner[j]!]!;
        if (v !== v) {
          acc = NaN;
          break;
        }
        if (op === 'max' ? v > acc : v < acc) acc = v;
      }
    }
    od[out.offset + o] = acc;
  }
};

export const argReduce: Kernel<'argReduce', TypedArray> = ([x], out, { op, axis }) => {
  const { bases, inner } = split(x!.shape, x!.strides, x!.offset, [axis]);
  const xd = x!.data;
  const od = out.data;
  for (let o = 0; o < bases.length; o++) {
    const b = bases[o]!;
    let best = 0;
    let bv = xd[b + inner[0]!]!;
    for (let j = 1; j < inner.length && bv === bv; j++) {
      const v = xd[b + inner[j]!]!;
      // NaN counts as the extreme value, first occurrence wins
      if (v !== v || (op === 'argmax' ? v > bv : v < bv)) {
        bv = v;
        best = j;
      }
    }
    od[out.offset + o] = best;
  }
};
