/**
 * @file js reference gather/scatter kernels: gather and scatterAdd along a dim (index of the
 * same rank), indexSelect and indexAdd (1-D index). Out-of-range indices throw naming the op.
 */
import type { Kernel, KernelArg } from '../backend.js';
import type { TypedArray } from '../names.js';
import { contiguousStrides, numel, offsets } from './layout.js';

function checkIndex(op: string, i: number, size: number): void {
  if (!(i >= -size && i < size)) throw new RangeError(`${op}: index ${i} is out of bounds for dimension of size ${size}`);
}

/** Calls fn(outPos, srcOffsetWithoutDim, indexValue) for each element of `index`. */
function eachIndexed(
  op: string,
  index: KernelArg<TypedArray>,
  target: { shape: readonly number[]; strides: readonly number[]; offset: number },
  dim: number,
  fn: (pos: number, targetOffset: number) => void,
): void {
  const shape = index.shape;
  const idxOff = offsets(index);
  // strides of `target` with the indexed dim zeroed: we add index * stride[dim] ourselves
  const ts = target.strides.map((s, d) => (d === dim ? 0 : s));
  const tOff = offsets({ shape, strides: ts, offset: target.offset });
  const size = target.shape[dim]!;
  const sd = target.strides[dim]!;
  for (let p = 0; p < idxOff.length; p++) {
    let i = index.data[idxOff[p]!]!;
    checkIndex(op, i, size);
    if (i < 0) i += size;
    fn(p, tOff[p]! + i * sd);
  }
}

export const gather: Kernel<'gather', TypedArray> = ([x, index], out, { dim }) => {
  const xd = x!.data;
  const od = out.data;
  eachIndexed('gather', index!, x!, dim, (p, off) => {
    od[out.offset + p] = xd[off]!;
  });
};

function cloneInto(base: KernelArg<TypedArray>, out: KernelArg<TypedArray>): void {
  const ob = offsets(base);
  for (let i = 0; i < ob.length; i++) out.data[out.offset + i] = base.data[ob[i]!]!;
}

export const scatterAdd: Kernel<'scatterAdd', TypedArray> = ([base, index, src], out, { dim }) => {
  cloneInto(base!, out);
  const srcOff = offsets({ shape: index!.shape, strides: src!.strides, offset: src!.offset });
  const od = out.data;
  const sd = src!.data;
  eachIndexed('scatterAdd', index!, { shape: out.shape, strides: contiguousStrides(out.shape), offset: out.offset }, dim, (p, off) => {
    od[off] += sd[srcOff[p]!]!;
  });
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
    let i = index.data[idx[k]!]!;
    checkIndex(op, i, size);
    if (i < 0) i += size;
    base[p] = base[p]! + i * sd;
  }
  return base;
}

export const indexSelect: Kernel<'indexSelect', TypedArray> = ([x, index], out, { dim }) => {
  const src = selectOffsets('indexSelect', x!, index!, dim);
  for (let p = 0; p < src.length; p++) out.data[out.offset + p] = x!.data[src[p]!]!;
};

export const indexAdd: Kernel<'indexAdd', TypedArray> = ([base, index, src], out, { dim }) => {
  cloneInto(base!, out);
  const dst = selectOffsets('indexAdd', { shape: out.shape, strides: contiguousStrides(out.shape), offset: out.offset }, index!, dim);
  const so = offsets(src!);
  for (let p = 0; p < dst.length; p++) out.data[dst[p]!] += src!.data[so[p]!]!;
};
