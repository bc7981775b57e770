/**
 * @file How wasm kernels see their operands: the dims a map walks (collapsed into blocks of rows
 * × inner elements), the address of each operand in wasm memory (in place for tensors that live
 * there, else a staged copy of its span in scratch), and typed views of the whole memory.
 */
import type { KernelArg } from '../backend.js';
import { collapse, numel } from '../layout.js';
import type { TypedArray } from '../names.js';
import { MAX_HEAP_BYTES, span, type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;

/**
 * A map over `shape` cut into blocks of rows × inner elements, for kernels that walk the two
 * innermost (collapsed) dims in wasm and leave the rest to a JS loop over blocks. Per operand
 * (one strides list each): its inner and row strides, and each block's start in elements
 * relative to the operand's own offset, at `starts[block · operands + operand]`, in row-major
 * order of the outer dims.
 */
export interface Blocks {
  inner: number;
  rows: number;
  innerStride: number[];
  rowStride: number[];
  count: number;
  starts: Int32Array;
}

/** Cuts a map over `shape`, one strides list per operand, into `Blocks`. */
export function blocks(shape: readonly number[], strides: (readonly number[])[]): Blocks {
  const { shape: sh, strides: st } = collapse(shape, strides);
  while (sh.length < 2) {
    sh.unshift(1);
    st.forEach((s) => s.unshift(0));
  }
  const R = sh.length;
  const m = strides.length;
  const outer = sh.slice(0, R - 2);
  const count = numel(outer);
  const starts = new Int32Array(count * m);
  const idx = outer.map(() => 0);
  const off = st.map(() => 0);
  for (let b = 0; b < count; b++) {
    for (let j = 0; j < m; j++) starts[b * m + j] = off[j]!;
    // odometer over the outer dims
    for (let d = outer.length - 1; d >= 0; d--) {
      idx[d]!++;
      for (let j = 0; j < m; j++) off[j]! += st[j]![d]!;
      if (idx[d]! < outer[d]!) break;
      for (let j = 0; j < m; j++) off[j]! -= st[j]![d]! * outer[d]!;
      idx[d] = 0;
    }
  }
  return { inner: sh[R - 1]!, rows: sh[R - 2]!, innerStride: st.map((s) => s[R - 1]!), rowStride: st.map((s) => s[R - 2]!), count, starts };
}

/**
 * The address of each view's element 0 in wasm memory: in place for views that live there (and do
 * not overlap `out`), else the view's span copied after `from` (16-byte aligned, `bytes` per
 * element of each). Returns null when the scratch cannot hold the copies past `from`.
 */
export function stage(engine: Engine, from: number, views: readonly Arg[], bytes: readonly number[], out?: Arg): number[] | null {
  const resident = views.map((x) => engine.inPlace(x, out));
  const spans = views.map(span);
  let end = from;
  for (let j = 0; j < views.length; j++) if (resident[j]! < 0) end = Math.ceil(end / 16) * 16 + (spans[j]![1] - spans[j]![0]) * bytes[j]!;
  if (end - engine.scratch > MAX_HEAP_BYTES || !engine.reserve(end - engine.scratch)) return null;
  const ptrs: number[] = [];
  let p = from;
  views.forEach((x, j) => {
    if (resident[j]! >= 0) {
      ptrs.push(resident[j]!);
      return;
    }
    p = Math.ceil(p / 16) * 16;
    const [lo, hi] = spans[j]!;
    const e = bytes[j]!;
    engine.stageIn(x.data, lo, hi, heapView(engine, x.dtype), p);
    ptrs.push(p + (x.offset - lo) * e);
    p += (hi - lo) * e;
  });
  return ptrs;
}

/** A typed view of the whole wasm memory for a dtype the wasm kernels read. */
export function heapView(engine: Engine, dtype: Arg['dtype']): TypedArray {
  if (dtype === 'float32') return engine.f32;
  if (dtype === 'float64') return engine.f64;
  if (dtype === 'int32') return engine.i32;
  return new Uint8Array(engine.i32.buffer);
}
