/**
 * @file Strided-view helpers shared by every backend's kernels: element counts, contiguity, and the
 * offsets of a view's elements in row-major order.
 */
import type { KernelArg } from './backend.js';

/**
 * The number of elements of a shape (1 for a scalar shape []).
 * @example numel([2, 3, 4]); // 24
 */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (let i = 0; i < shape.length; i++) n *= shape[i]!;
  return n;
}

/**
 * Row-major strides of a contiguous tensor of `shape`, in elements.
 * @example contiguousStrides([2, 3, 4]); // [12, 4, 1]
 */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

/**
 * True when the view's elements are `offset, offset+1, …` in row-major order.
 * @example isContiguous([2, 3], [3, 1]); // true
 * isContiguous([3, 2], [1, 3]); // false (a transpose)
 */
export function isContiguous(shape: readonly number[], strides: readonly number[]): boolean {
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const d = shape[i]!;
    if (d !== 1 && strides[i] !== s) return false;
    s *= d;
  }
  return true;
}

/**
 * Buffer offset of every element of a strided view (row-major order over `shape`).
 * `shape` defaults to the view's own; pass a broadcast shape with matching strides.
 */
export function offsets(arg: Pick<KernelArg, 'shape' | 'strides' | 'offset'>): Int32Array {
  const { shape, strides } = arg;
  const n = numel(shape);
  const out = new Int32Array(n);
  const rank = shape.length;
  if (n === 0) return out;
  if (rank === 0) {
    out[0] = arg.offset;
    return out;
  }
  const last = rank - 1;
  const innerN = shape[last]!;
  const innerS = strides[last]!;
  const idx = new Array<number>(rank).fill(0);
  let base = arg.offset;
  for (let i = 0; i < n; i += innerN) {
    for (let j = 0; j < innerN; j++) out[i + j] = base + j * innerS;
    // odometer over the outer dims
    for (let d = last - 1; d >= 0; d--) {
      idx[d]!++;
      base += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      base -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

/** Offsets, or null when the view is contiguous (then element i lives at offset + i). */
export function offsetsOrNull(arg: Pick<KernelArg, 'shape' | 'strides' | 'offset'>): Int32Array | null {
  return isContiguous(arg.shape, arg.strides) ? null : offsets(arg);
}

/**
 * Views sharing `shape` (one strides list each), with size-1 dims dropped and adjacent dims merged
 * where every view walks them contiguously (stride[d] = stride[d+1]·shape[d+1], stride 0 included).
 */
export function collapse(shape: readonly number[], strides: (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const sh: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = sh.length - 1;
    if (last >= 0 && strides.every((s, j) => st[j]![last] === s[d]! * shape[d]!)) {
      sh[last]! *= shape[d]!;
      strides.forEach((s, j) => (st[j]![last] = s[d]!));
    } else {
      sh.push(shape[d]!);
      strides.forEach((s, j) => st[j]!.push(s[d]!));
    }
  }
  return { shape: sh, strides: st };
}
