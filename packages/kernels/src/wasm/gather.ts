/**
 * @file wasm gather/scatter kernels: gather, scatterAdd, indexSelect and indexAdd (embedding
 * lookups and their backward). indexSelect is a gather and indexAdd a scatterAdd whose index is
 * broadcast along every dim but `dim`; rows that are contiguous in every operand move (or add)
 * as f32x4/f64x2 vectors. An index outside [0, size), negative ones included (as in PyTorch),
 * makes the kernel stop and the call fall back to js, whose RangeError names the op, the index
 * and the range.
 */
import type { KernelArg } from '../backend.js';
import { contiguousStrides, isContiguous, numel, offsets } from '../layout.js';
import type { KernelParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { blocks, heapView, stage } from './operands.js';
import { span, type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;
type Kind = 'f32' | 'f64';
type View = Pick<Arg, 'shape' | 'strides' | 'offset'>;

const P = ValType.i32;
const BYTES: Record<Kind, number> = { f32: 4, f64: 8 };
const LOAD: Record<Kind, number> = { f32: Op.f32_load, f64: Op.f64_load };
const STORE: Record<Kind, number> = { f32: Op.f32_store, f64: Op.f64_store };
const ADD: Record<Kind, [simd: number, scalar: number]> = { f32: [Simd.f32x4_add, Op.f32_add], f64: [Simd.f64x2_add, Op.f64_add] };

/**
 * Below this many moved elements the copies in and out cost more than js saves: at 2048 (128
 * rows of 16 from a [64, 16] table) js's row path and wasm both take ~4 µs; at 32768 ([256] rows
 * of 128) indexSelect is 12 → 7 µs and indexAdd 52 → 10 µs (2-core box, float32).
 */
const MIN_ELEMENTS = 2048;

/**
 * Loads the index at `ptr` into `i` and returns 1 from the kernel when it is outside [0, size)
 * (js then reruns the call and throws): one unsigned compare, as a negative i reads as ≥ 2³¹.
 */
function loadIndex(c: Code, ptr: number, i: number, size: number): void {
  c.get(ptr).mem(Op.i32_load, 2).tee(i).get(size).op(Op.i32_ge_u).if();
  c.i32(1).op(Op.return);
  c.end();
}

/** Byte address base + (i · stride) · bytes, on the stack. */
function scaled(c: Code, base: number, i: number, stride: number, bytes: number): void {
  c.get(base).get(i).get(stride).op(Op.i32_mul).i32(bytes).op(Op.i32_mul).op(Op.i32_add);
}

/**
 * gather_k(out, n, rows, so, ro, x, sx, rx, idx, si, ri, sdim, size) → 0, or 1 at a bad index:
 * rows × n elements out[r·ro + j·so] = x[r·rx + j·sx + idx[r·ri + j·si]·sdim] (element
 * strides; the caller's out is contiguous, so = 1 and ro = n).
 *
 * scatter_k(t, n, rows, st, rt, src, ss, rs, idx, si, ri, sdim, size) → 0 or 1: in row-major
 * order t[r·rt + j·st + idx[r·ri + j·si]·sdim] += src[r·rs + j·ss], so repeated targets
 * sum in the oracle's order.
 *
 * When a row has one index (si = 0) and both operands walk it contiguously, the row moves (or
 * adds) 16 bytes at a time; otherwise every element reads its own index.
 */
export function emitGather(mb: ModuleBuilder): void {
  for (const k of ['f32', 'f64'] as const) {
    emitIndexed(mb, k, false);
    emitIndexed(mb, k, true);
  }
}

function emitIndexed(mb: ModuleBuilder, k: Kind, scatter: boolean): void {
  const e = BYTES[k];
  const align = k === 'f32' ? 2 : 3;
  mb.func([P, P, P, P, P, P, P, P, P, P, P, P, P], [P], (c) => {
    // dst is gather's out or scatter's target; src is gather's x or scatter's src
    const [dst, n, rows, sd, rd, src, ss, rs, idx, si, ri, sdim, size] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    const [row, j, i, pd, ps, pi, qd, qs, end, vend] = Array.from({ length: 10 }, () => c.local(P)) as [number, number, number, number, number, number, number, number, number, number];
    /** dst[at] = src[from] (gather) or dst[at] += src[from] (scatter): one vector or one element. */
    const move = (simd: boolean, at: number, from: number) => {
      const load = (p: number) => (simd ? c.get(p).simdMem(Simd.v128_load, 0) : c.get(p).mem(LOAD[k], align));
      c.get(at);
      if (scatter) load(at);
      load(from);
      if (scatter && simd) c.simd(ADD[k][0]);
      if (scatter && !simd) c.op(ADD[k][1]);
      if (simd) c.simdMem(Simd.v128_store, 0);
      else c.mem(STORE[k], align);
    };
    /** Moves the pointer the index addresses (scatter's target, gather's source) to slice i. */
    const toSlice = (d: number, s: number) => {
      const p = scatter ? d : s;
      c.get(p).get(i).get(sdim).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(p);
    };
    const step = (p: number, bytes: number) => c.get(p).i32(bytes).op(Op.i32_add).set(p);
    c.for(row, () => c.i32(0), () => c.get(rows), 1, () => {
      scaled(c, dst, row, rd, e);
      c.set(pd);
      scaled(c, src, row, rs, e);
      c.set(ps);
      scaled(c, idx, row, ri, 4);
      c.set(pi);
      c.get(si).i32(0).op(Op.i32_eq).get(sd).i32(1).op(Op.i32_eq).op(Op.i32_and).get(ss).i32(1).op(Op.i32_eq).op(Op.i32_and);
      c.if();
      loadIndex(c, pi, i, size);
      toSlice(pd, ps);
      c.get(pd).get(n).i32(e).op(Op.i32_mul).op(Op.i32_add).tee(end).i32(15).op(Op.i32_sub).set(vend);
      c.while(() => c.get(pd).get(vend).op(Op.i32_lt_s), () => {
        move(true, pd, ps);
        step(pd, 16);
        step(ps, 16);
      });
      c.while(() => c.get(pd).get(end).op(Op.i32_lt_s), () => {
        move(false, pd, ps);
        step(pd, e);
        step(ps, e);
      });
      c.op(Op.else);
      c.for(j, () => c.i32(0), () => c.get(n), 1, () => {
        scaled(c, pi, j, si, 4);
        c.set(qd);
        loadIndex(c, qd, i, size);
        scaled(c, pd, j, sd, e);
        c.set(qd);
        scaled(c, ps, j, ss, e);
        c.set(qs);
        toSlice(qd, qs);
        move(false, qd, qs);
      });
      c.end();
    });
    c.i32(0);
  }, `${scatter ? 'scatter' : 'gather'}_${k}`);
}

function kindOf(data: readonly Arg[], out: Arg, index: Arg): Kind | null {
  if (index.dtype !== 'int32' || (out.dtype !== 'float32' && out.dtype !== 'float64')) return null;
  if (!data.every((x) => x.dtype === out.dtype)) return null;
  return out.dtype === 'float32' ? 'f32' : 'f64';
}

const elements = (v: View): number => {
  const [lo, hi] = span(v);
  return hi - lo;
};

/**
 * out[q] = x[q with q_dim ← index[q]] over out's shape; `index` is already a view over out's shape
 * (indexSelect broadcasts its 1-D index). Returns false to hand the call to js.
 */
function runGather(engine: Engine, x: Arg, index: Arg, out: Arg, dim: number): boolean {
  const k = kindOf([x], out, index);
  if (k === null) return false;
  const n = numel(out.shape);
  if (n < MIN_ELEMENTS) return false;
  // a few elements picked out of a large table: copying the table in costs more than the picks
  // (operands in wasm memory are read in place: no copy)
  const copied = (v: Arg) => (engine.addressOf(v) >= 0 ? 0 : elements(v));
  if (copied(x) + copied(index) > 4 * n) return false;
  const e = BYTES[k];
  const direct = engine.addressOf(out);
  const outPtr = direct >= 0 ? direct : engine.scratch;
  const ptrs = stage(engine, engine.scratch + n * e, [x, index], [e, 4], direct >= 0 ? out : undefined);
  if (ptrs === null) return false;
  const [px, pi] = ptrs as [number, number];
  const xs = x.strides.map((s, d) => (d === dim ? 0 : s));
  const B = blocks(out.shape, [contiguousStrides(out.shape), xs, index.strides]);
  const [, sx, si] = B.innerStride as [number, number, number];
  const [, rx, ri] = B.rowStride as [number, number, number];
  const name = `gather_${k}`;
  const sdim = x.strides[dim]!;
  const size = x.shape[dim]!;
  for (let b = 0; b < B.count; b++) {
    const s = b * 3;
    const st = B.starts;
    if (engine.call(name, outPtr + st[s]! * e, B.inner, B.rows, 1, B.inner, px + st[s + 1]! * e, sx, rx, pi + st[s + 2]! * 4, si, ri, sdim, size) !== 0) return false;
  }
  if (direct < 0) engine.stageOut(out, heapView(engine, out.dtype), outPtr, n);
  return true;
}

/**
 * out = base, then out[q with q_dim ← index[q]] += src[q] over the iteration `shape` in row-major
 * order; `index` and `src` are views over that shape. Returns false to hand the call to js.
 */
function runScatter(engine: Engine, base: Arg, index: Arg, src: Arg, out: Arg, dim: number, shape: readonly number[]): boolean {
  const k = kindOf([base, src], out, index);
  if (k === null) return false;
  const nOut = numel(out.shape);
  const n = numel(shape);
  const copied = (v: Arg) => (engine.addressOf(v) >= 0 ? 0 : elements(v));
  if (n < MIN_ELEMENTS || copied(src) + copied(index) > 4 * n) return false;
  const e = BYTES[k];
  // the sums accumulate in out itself when it is in wasm memory (unless base overlaps it other
  // than exactly: an in-place add into the same elements), else in scratch copied out
  let direct = engine.addressOf(out);
  const baseAt = engine.addressOf(base);
  if (direct >= 0 && baseAt >= 0 && engine.inPlace(base, out) < 0 && !(baseAt === direct && isContiguous(base.shape, base.strides))) direct = -1;
  // a table staged in and out whole is worth it only when the additions outnumber its elements;
  // one already in wasm memory, out too, costs one memory copy, as js's clone of base, without
  // the fallback's copies out of and back into wasm memory (a gather's backward: 2048 picks
  // scattered into a [2048, 256] zero table, 0.7 ms on js)
  const resident = direct >= 0 && baseAt >= 0 && isContiguous(base.shape, base.strides);
  if (nOut > n && !resident) return false;
  const outPtr = direct >= 0 ? direct : engine.scratch;
  const ptrs = stage(engine, engine.scratch + nOut * e, [src, index], [e, 4], direct >= 0 ? out : undefined);
  if (ptrs === null) return false;
  const [ps, pi] = ptrs as [number, number];
  const view = heapView(engine, out.dtype);
  const at = outPtr / e;
  const pb = engine.addressOf(base);
  if (isContiguous(base.shape, base.strides)) {
    // (base already is out when the scatter is in place)
    if (pb >= 0 && pb !== outPtr) view.copyWithin(at, pb / e, pb / e + nOut);
    else if (pb < 0) engine.stageIn(base.data, base.offset, base.offset + nOut, view, outPtr);
  } else {
    const ob = offsets(base);
    const bd = base.data;
    for (let p = 0; p < nOut; p++) view[at + p] = bd[ob[p]!]!;
  }
  const ts = contiguousStrides(out.shape);
  const sdim = ts[dim]!;
  ts[dim] = 0;
  const B = blocks(shape, [ts, src.strides, index.strides]);
  const [st, ss, si] = B.innerStride as [number, number, number];
  const [rt, rs, ri] = B.rowStride as [number, number, number];
  const name = `scatter_${k}`;
  const size = out.shape[dim]!;
  for (let b = 0; b < B.count; b++) {
    const s = b * 3;
    const o = B.starts;
    if (engine.call(name, outPtr + o[s]! * e, B.inner, B.rows, st, rt, ps + o[s + 1]! * e, ss, rs, pi + o[s + 2]! * 4, si, ri, sdim, size) !== 0) return false;
  }
  if (direct < 0) engine.stageOut(out, view, outPtr, nOut);
  return true;
}

/** A 1-D (or 0-D) index seen over `shape`: it walks `dim`, every other dim broadcasts. */
function alongDim(index: Arg, shape: readonly number[], dim: number): Arg {
  return { ...index, shape, strides: shape.map((_, d) => (d === dim ? (index.strides[0] ?? 0) : 0)) };
}

/** out = x.gather(dim, index) in wasm for float x and int32 index; false hands the call to js. */
export function gatherWasm(engine: Engine, [x, index]: readonly Arg[], out: Arg, { dim }: KernelParams['gather']): boolean {
  return runGather(engine, x!, index!, out, dim);
}

/** out = base.scatter_add(dim, index, src) in wasm, summing in js's order; false hands the call to js. */
export function scatterAddWasm(engine: Engine, [base, index, src]: readonly Arg[], out: Arg, { dim }: KernelParams['scatterAdd']): boolean {
  return runScatter(engine, base!, index!, { ...src!, shape: index!.shape }, out, dim, index!.shape);
}

/** out = x.index_select(dim, index): a gather whose 1-D index broadcasts over the other dims. */
export function indexSelectWasm(engine: Engine, [x, index]: readonly Arg[], out: Arg, { dim }: KernelParams['indexSelect']): boolean {
  return runGather(engine, x!, alongDim(index!, out.shape, dim), out, dim);
}

/** out = base.index_add(dim, index, src): a scatterAdd whose 1-D index broadcasts over the other dims. */
export function indexAddWasm(engine: Engine, [base, index, src]: readonly Arg[], out: Arg, { dim }: KernelParams['indexAdd']): boolean {
  return runScatter(engine, base!, alongDim(index!, src!.shape, dim), src!, out, dim, src!.shape);
}
