/**
 * @file js reference gather/scatter kernels: gather and scatterAdd along a dim (index of the
 * same rank), indexSelect and indexAdd (1-D index), with a whole-row path for contiguous tables
 * (embedding lookups and their backward). An index outside [0, size) throws naming the op; a
 * negative one too, as in PyTorch (counting it from the end would pick a wrong row silently).
 */
import type { Kernel, KernelArg } from '../backend.js';
import type { TypedArray } from '../names.js';
import { contiguousStrides, isContiguous, numel, offsets } from '../layout.js';

function checkIndex(op: string, i: number, size: number): void {
  if (!(i >= 0 && i < size)) throw new RangeError(`${op}: index ${i} is out of range [0, ${size})`);
}

/**
 * The offset in `target` of each element of `index` (row-major over the index's shape): the
 * element's own position with `dim` replaced by its index value. Indices are checked in order.
 */
function indexedOffsets(op: string, index: KernelArg<TypedArray>, target: { shape: readonly number[]; strides: readonly number[]; offset: number }, dim: number): Int32Array {
  const idxOff = offsets(index);
  // strides of `target` with the indexed dim zeroed: we add index * stride[dim] ourselves
  const ts = target.strides.map((s, d) => (d === dim ? 0 : s));
  const tOff = offsets({ shape: index.shape, strides: ts, offset: target.offset });
  const size = target.shape[dim]!;
  const sd = target.strides[dim]!;
  const id = index.data;
  for (let p = 0; p < idxOff.length; p++) {
    const i = id[idxOff[p]!]!;
    checkIndex(op, i, size);
    tOff[p] += i * sd;
  }
  return tOff;
}

export const gather: Kernel<'gather', TypedArray> = ([x, index], out, { dim }) => {
  const src = indexedOffsets('gather', index!, x!, dim);
  const xd = x!.data;
  const od = out.data;
  const o = out.offset;
  for (let p = 0; p < src.length; p++) od[o + p] = xd[src[p]!]!;
};

function cloneInto(base: KernelArg<TypedArray>, out: KernelArg<TypedArray>): void {
  if (isContiguous(base.shape, base.strides)) {
    out.data.set(base.data.subarray(base.offset, base.offset + numel(base.shape)) as never, out.offset);
    return;
  }
  const ob = offsets(base);
  for (let i = 0; i < ob.length; i++) out.data[out.offset + i] = base.data[ob[i]!]!;
}

export const scatterAdd: Kernel<'scatterAdd', TypedArray> = ([base, index, src], out, { dim }) => {
  cloneInto(base!, out);
  const dst = indexedOffsets('scatterAdd', index!, { shape: out.shape, strides: contiguousStrides(out.shape), offset: out.offset }, dim);
  const srcOff = offsets({ shape: index!.shape, strides: src!.strides, offset: src!.offset });
  const od = out.data;
  const sd = src!.data;
  for (let p = 0; p < dst.length; p++) od[dst[p]!] += sd[srcOff[p]!]!;
};

/** Offsets of `x` for each output element of index_select (out shape = x shape with dim → len(index)). */
function selectOffsets(op: string, x: { shape: readonly number[]; strides: readonly number[]; offset: number }, index: KernelArg<TypedArray>, dim: number): Int32Array {
  const idx = offsets(index);
  const size = x.shape[dim]!;
  const shape = x.shape.map((s, d) => (d === dim ? idx.length : s));
  const base = offsets({ shape, strides: x.strides.map((s, d) => (d === dim ? 0 : s)), offset: x.offset });
  const inner = numel(shape.slice(dim + 1));
  const sd = x.strides[dim]!;
  for (let p = 0; p < base.length; p++) {
    const k = Math.floor(p / inner) % idx.length;
    const i = index.data[idx[k]!]!;
    checkIndex(op, i, size);
    base[p] = base[p]! + i * sd;
  }
  return base;
}

/** Rows shorter than this copy faster in a loop than through subarray + set (an object per call). */
const SET_MIN = 32;

/**
 * The whole-row path's plan for a contiguous tensor of `shape` seen as [outer, size, inner] around
 * `dim` (a slice along `dim` is one run of `inner` elements), with the index's L values checked
 * to lie in [0, size) in index order, so an error names the first bad one. Null for an
 * empty result, which reads no index (as the general path: so no error either).
 */
function rowPlan(op: string, shape: readonly number[], dim: number, index: KernelArg<TypedArray>): { outer: number; inner: number; size: number; L: number; rows: Int32Array } | null {
  const outer = numel(shape.slice(0, dim));
  const inner = numel(shape.slice(dim + 1));
  const size = shape[dim]!;
  const L = numel(index.shape);
  if (outer * L * inner === 0) return null;
  const io = offsets(index);
  const rows = new Int32Array(L);
  for (let k = 0; k < L; k++) {
    const i = index.data[io[k]!]!;
    checkIndex(op, i, size);
    rows[k] = i;
  }
  return { outer, inner, size, L, rows };
}

export const indexSelect: Kernel<'indexSelect', TypedArray> = ([x, index], out, { dim }) => {
  if (isContiguous(x!.shape, x!.strides)) return indexSelectRows(x!, index!, out, dim);
  const src = selectOffsets('indexSelect', x!, index!, dim);
  for (let p = 0; p < src.length; p++) out.data[out.offset + p] = x!.data[src[p]!]!;
};

/** indexSelect on a contiguous x: out[o, k, :] = x[o, index[k], :], whole rows at a time. */
function indexSelectRows(x: KernelArg<TypedArray>, index: KernelArg<TypedArray>, out: KernelArg<TypedArray>, dim: number): void {
  const plan = rowPlan('indexSelect', x.shape, dim, index);
  if (!plan) return;
  const { outer, inner, size, L, rows } = plan;
  const xd = x.data;
  const od = out.data;
  for (let o = 0; o < outer; o++) {
    const xo = x.offset + o * size * inner;
    let dst = out.offset + o * L * inner;
    for (let k = 0; k < L; k++, dst += inner) {
      const src = xo + rows[k]! * inner;
      if (inner >= SET_MIN) od.set(xd.subarray(src, src + inner) as never, dst);
      else for (let j = 0; j < inner; j++) od[dst + j] = xd[src + j]!;
    }
  }
}

export const indexAdd: Kernel<'indexAdd', TypedArray> = ([base, index, src], out, { dim }) => {
  cloneInto(base!, out);
  if (isContiguous(src!.shape, src!.strides)) return indexAddRows(index!, src!, out, dim);
  const dst = selectOffsets('indexAdd', { shape: out.shape, strides: contiguousStrides(out.shape), offset: out.offset }, index!, dim);
  const so = offsets(src!);
  for (let p = 0; p < dst.length; p++) out.data[dst[p]!] += src!.data[so[p]!]!;
};

/**
 * indexAdd with a contiguous src: out[o, index[k], :] += src[o, k, :], whole rows at a time. Each
 * element of out receives its additions in the same (o, k) order as the general path: same bits.
 */
function indexAddRows(index: KernelArg<TypedArray>, src: KernelArg<TypedArray>, out: KernelArg<TypedArray>, dim: number): void {
  const plan = rowPlan('indexAdd', out.shape, dim, index);
  if (!plan) return;
  const { outer, inner, size, L, rows } = plan;
  const sd = src.data;
  const od = out.data;
  for (let o = 0; o < outer; o++) {
    const oo = out.offset + o * size * inner;
    let s = src.offset + o * L * inner;
    for (let k = 0; k < L; k++, s += inner) {
      const d = oo + rows[k]! * inner;
      for (let j = 0; j < inner; j++) od[d + j] += sd[s + j]!;
    }
  }
}
