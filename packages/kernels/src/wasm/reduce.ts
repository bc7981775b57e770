/**
 * @file wasm reductions (sum/max/min, f32 and f64) over one run of reduced axes: either the
 * innermost axis (row reduce: SIMD along the row) or an outer one with contiguous kept elements
 * (column reduce: SIMD across a row of accumulators). Sums accumulate in f64 like the oracle.
 * argmax/argmin run as scalar wasm over any strides of the same [kept, reduced, kept] layout.
 * prod, empty reductions and other layouts stay on js.
 */
import type { KernelArg } from '../backend.js';
import { contiguousStrides, isContiguous, numel } from '../layout.js';
import { contiguousCopy, copyWasm, releaseCopy } from './elementwise.js';
import { copy as jsCopy } from '../js/elementwise.js';
import type { ArgReduceOp, ReduceOp, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { MAX_HEAP_BYTES, type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;
type Kind = 'f32' | 'f64';
type Red = 'sum' | 'max' | 'min' | 'absmax';

const P = ValType.i32;
const bytes = (k: Kind) => (k === 'f32' ? 4 : 8);

/** Accumulator type: f64 for sums (as the oracle), the input type for max/min (exact). */
const accKind = (op: Red, k: Kind): Kind => (op === 'sum' ? 'f64' : k);

/** Loads one input element as an accumulator scalar. */
function loadScalar(c: Code, op: Red, k: Kind, ptr: number): void {
  c.get(ptr).mem(k === 'f32' ? Op.f32_load : Op.f64_load, k === 'f32' ? 2 : 3);
  if (op === 'sum' && k === 'f32') c.op(Op.f64_promote_f32);
  if (op === 'absmax') c.op(k === 'f32' ? Op.f32_abs : Op.f64_abs);
}

function combineScalar(c: Code, op: Red, k: Kind): void {
  const a = accKind(op, k);
  if (op === 'sum') c.op(Op.f64_add);
  else if (op === 'max' || op === 'absmax') c.op(a === 'f32' ? Op.f32_max : Op.f64_max);
  else c.op(a === 'f32' ? Op.f32_min : Op.f64_min);
}

function combineVector(c: Code, op: Red, k: Kind): void {
  const a = accKind(op, k);
  if (op === 'sum') c.simd(Simd.f64x2_add);
  // |x| has its sign bit clear, so its bits order as integers do, with every NaN above +∞: one
  // integer max keeps the NaN-propagating maximum, where f32x4.max takes ~8 x64 instructions
  // (per-token absmax over 16×128×384: 596 → 185 µs, over 16×128×128: 175 → 70; now timed by
  // scripts/bench/kernels.ts)
  else if (op === 'absmax' && a === 'f32') c.simd(Simd.i32x4_max_s);
  else if (op === 'max' || op === 'absmax') c.simd(a === 'f32' ? Simd.f32x4_max : Simd.f64x2_max);
  else c.simd(a === 'f32' ? Simd.f32x4_min : Simd.f64x2_min);
}

function init(c: Code, op: Red, k: Kind, simd: boolean): void {
  const a = accKind(op, k);
  const v = op === 'sum' || op === 'absmax' ? 0 : op === 'max' ? -Infinity : Infinity;
  if (a === 'f32') c.f32(v);
  else c.f64(v);
  if (simd) c.simd(a === 'f32' ? Simd.f32x4_splat : Simd.f64x2_splat);
}

/**
 * Pushes the vectors one SIMD step reads at `ptr + off` as accumulator vectors: f32 sums read
 * two f32 pairs and widen them, everything else one vector. Returns how many vectors it pushed
 * via `each` (called once per vector, after pushing it).
 */
function loadVectors(c: Code, op: Red, k: Kind, ptr: number, off: number, each: (i: number) => void): void {
  if (op === 'sum' && k === 'f32') {
    for (let h = 0; h < 2; h++) {
      c.get(ptr).simdMem(Simd.v128_load64_zero, 3, off + h * 8).simd(Simd.f64x2_promote_low_f32x4);
      each(h);
    }
  } else {
    c.get(ptr).simdMem(Simd.v128_load, 4, off);
    if (op === 'absmax') c.simd(k === 'f32' ? Simd.f32x4_abs : Simd.f64x2_abs);
    each(0);
  }
}

/** Elements one SIMD step consumes. */
const stepElems = (op: Red, k: Kind) => (op === 'sum' && k === 'f32' ? 4 : k === 'f32' ? 4 : 2);

/** reduce_row(out, x, R, P, sp): out[p] = op over r < R of x[p·sp + r]. */
function emitRow(mb: ModuleBuilder, op: Red, k: Kind): void {
  const a = accKind(op, k);
  const A = a === 'f32' ? ValType.f32 : ValType.f64;
  mb.func([P, P, P, P, P], [], (c) => {
    const [out, x, R, Pn, sp] = [0, 1, 2, 3, 4];
    const [p, i, ptr, po] = [c.local(P), c.local(P), c.local(P), c.local(P)];
    const v0 = c.local(ValType.v128);
    const v1 = c.local(ValType.v128);
    const s = c.local(A);
    const step = stepElems(op, k);
    c.get(out).set(po);
    c.for(p, () => c.i32(0), () => c.get(Pn), 1, () => {
      c.get(x).get(p).get(sp).op(Op.i32_mul).i32(bytes(k)).op(Op.i32_mul).op(Op.i32_add).set(ptr);
      init(c, op, k, true);
      c.set(v0);
      init(c, op, k, true);
      c.set(v1);
      c.i32(0).set(i);
      // two independent accumulators (2 steps per pass) so adds overlap
      c.while(() => c.get(i).i32(2 * step - 1).op(Op.i32_add).get(R).op(Op.i32_lt_s), () => {
        for (let u = 0; u < 2; u++) {
          const acc = u === 0 ? v0 : v1;
          loadVectors(c, op, k, ptr, u * step * bytes(k), (h) => {
            if (h === 0) c.get(acc);
            else c.get(acc === v0 ? v1 : v0);
            combineVector(c, op, k);
            c.set(h === 0 ? acc : acc === v0 ? v1 : v0);
          });
        }
        c.get(ptr).i32(2 * step * bytes(k)).op(Op.i32_add).set(ptr);
        c.get(i).i32(2 * step).op(Op.i32_add).set(i);
      });
      c.get(v0).get(v1);
      combineVector(c, op, k);
      c.set(v0);
      init(c, op, k, false);
      c.set(s);
      c.while(() => c.get(i).get(R).op(Op.i32_lt_s), () => {
        c.get(s);
        loadScalar(c, op, k, ptr);
        combineScalar(c, op, k);
        c.set(s);
        c.get(ptr).i32(bytes(k)).op(Op.i32_add).set(ptr);
        c.get(i).i32(1).op(Op.i32_add).set(i);
      });
      const lanes = a === 'f32' ? 4 : 2;
      for (let l = 0; l < lanes; l++) {
        c.get(s).get(v0).lane(a === 'f32' ? Simd.f32x4_extract_lane : Simd.f64x2_extract_lane, l);
        combineScalar(c, op, k);
        c.set(s);
      }
      c.get(po).get(s);
      if (k === 'f32' && a === 'f64') c.op(Op.f32_demote_f64);
      c.mem(k === 'f32' ? Op.f32_store : Op.f64_store, k === 'f32' ? 2 : 3);
      c.get(po).i32(bytes(k)).op(Op.i32_add).set(po);
    });
  }, `reduce_row_${op}_${k}`);
}

/** reduce_col(out, x, acc, R, sr, P, sp, Q): out[p, q] = op over r < R of x[p·sp + r·sr + q]. */
function emitCol(mb: ModuleBuilder, op: Red, k: Kind): void {
  const a = accKind(op, k);
  const ab = bytes(a);
  mb.func([P, P, P, P, P, P, P, P], [], (c) => {
    const [out, x, acc, R, sr, Pn, sp, Q] = [0, 1, 2, 3, 4, 5, 6, 7];
    const [p, r, q, px, pa, po, vecEnd] = Array.from({ length: 7 }, () => c.local(P));
    const step = stepElems(op, k);
    c.get(out).set(po);
    c.get(Q).i32(step - 1).op(Op.i32_sub).set(vecEnd);
    c.for(p, () => c.i32(0), () => c.get(Pn), 1, () => {
      c.for(q, () => c.i32(0), () => c.get(Q), 1, () => {
        c.get(acc).get(q).i32(ab).op(Op.i32_mul).op(Op.i32_add);
        init(c, op, k, false);
        c.mem(a === 'f32' ? Op.f32_store : Op.f64_store, a === 'f32' ? 2 : 3);
      });
      c.for(r, () => c.i32(0), () => c.get(R), 1, () => {
        c.get(x).get(p).get(sp).op(Op.i32_mul).get(r).get(sr).op(Op.i32_mul).op(Op.i32_add).i32(bytes(k)).op(Op.i32_mul).op(Op.i32_add).set(px);
        c.get(acc).set(pa);
        c.i32(0).set(q);
        c.while(() => c.get(q).get(vecEnd).op(Op.i32_lt_s), () => {
          loadVectors(c, op, k, px, 0, (h) => {
            const off = h * 16;
            const t = c.local(ValType.v128);
            c.set(t);
            c.get(pa).get(pa).simdMem(Simd.v128_load, 4, off).get(t);
            combineVector(c, op, k);
            c.simdMem(Simd.v128_store, 4, off);
          });
          c.get(px).i32(step * bytes(k)).op(Op.i32_add).set(px);
          c.get(pa).i32(step * ab).op(Op.i32_add).set(pa);
          c.get(q).i32(step).op(Op.i32_add).set(q);
        });
        c.while(() => c.get(q).get(Q).op(Op.i32_lt_s), () => {
          c.get(pa).get(pa).mem(a === 'f32' ? Op.f32_load : Op.f64_load, a === 'f32' ? 2 : 3);
          loadScalar(c, op, k, px);
          combineScalar(c, op, k);
          c.mem(a === 'f32' ? Op.f32_store : Op.f64_store, a === 'f32' ? 2 : 3);
          c.get(px).i32(bytes(k)).op(Op.i32_add).set(px);
          c.get(pa).i32(ab).op(Op.i32_add).set(pa);
          c.get(q).i32(1).op(Op.i32_add).set(q);
        });
      });
      c.for(q, () => c.i32(0), () => c.get(Q), 1, () => {
        c.get(po).get(acc).get(q).i32(ab).op(Op.i32_mul).op(Op.i32_add).mem(a === 'f32' ? Op.f32_load : Op.f64_load, a === 'f32' ? 2 : 3);
        if (k === 'f32' && a === 'f64') c.op(Op.f32_demote_f64);
        c.mem(k === 'f32' ? Op.f32_store : Op.f64_store, k === 'f32' ? 2 : 3);
        c.get(po).i32(bytes(k)).op(Op.i32_add).set(po);
      });
    });
  }, `reduce_col_${op}_${k}`);
}

/**
 * argreduce(out, x, R, sr, P, sp, Q, sq): out[p, q] = first r of the max/min of x[p·sp + r·sr + q·sq]
 * (i32); a NaN counts as the extreme and ends the scan, as in the oracle.
 */
function emitArg(mb: ModuleBuilder, op: ArgReduceOp, k: Kind): void {
  const S = k === 'f32' ? ValType.f32 : ValType.f64;
  const load = k === 'f32' ? Op.f32_load : Op.f64_load;
  const al = k === 'f32' ? 2 : 3;
  mb.func([P, P, P, P, P, P, P, P], [], (c) => {
    const [out, x, R, sr, Pn, sp, Q, sq] = [0, 1, 2, 3, 4, 5, 6, 7];
    const [p, q, r, ptr, step, best] = Array.from({ length: 6 }, () => c.local(P));
    const [bv, v] = [c.local(S), c.local(S)];
    c.get(sr).i32(bytes(k)).op(Op.i32_mul).set(step);
    c.for(p, () => c.i32(0), () => c.get(Pn), 1, () => {
      c.for(q, () => c.i32(0), () => c.get(Q), 1, () => {
        c.get(x).get(p).get(sp).op(Op.i32_mul).get(q).get(sq).op(Op.i32_mul).op(Op.i32_add).i32(bytes(k)).op(Op.i32_mul).op(Op.i32_add).tee(ptr);
        c.mem(load, al).set(bv);
        c.i32(0).set(best);
        c.i32(1).set(r);
        c.while(() => c.get(r).get(R).op(Op.i32_lt_s).get(bv).get(bv).op(k === 'f32' ? Op.f32_eq : Op.f64_eq).op(Op.i32_and), () => {
          c.get(ptr).get(step).op(Op.i32_add).tee(ptr).mem(load, al).set(v);
          c.get(v).get(v).op(k === 'f32' ? Op.f32_ne : Op.f64_ne);
          c.get(v).get(bv);
          if (op === 'argmax') c.op(k === 'f32' ? Op.f32_gt : Op.f64_gt);
          else c.op(k === 'f32' ? Op.f32_lt : Op.f64_lt);
          c.op(Op.i32_or).if();
          c.get(v).set(bv);
          c.get(r).set(best);
          c.end();
          c.get(r).i32(1).op(Op.i32_add).set(r);
        });
        c.get(out).get(best).mem(Op.i32_store, 2);
        c.get(out).i32(4).op(Op.i32_add).set(out);
      });
    });
  }, `${op}_${k}`);
}

/**
 * reduce_pair_sum_f32(out, x, sr, P, sp, Q): out[p, q] = (0 + x[p·sp + q]) + x[p·sp + sr + q] in
 * f32, for sums of R = 2 (the heads of a grouped-query pair, a gradient summed over a broadcast
 * dim of 2). The column kernel's f64 accumulation gives the same bits there: a sum of two floats
 * formed in double and rounded to float is the float sum (double rounding is innocuous for one
 * addition, 53 ≥ 2·24 + 2), and the 0 + first keeps the oracle's −0 + −0 = +0 start. Half the
 * traffic of the column kernel, which keeps a row of f64 accumulators in memory.
 */
function emitPairSum(mb: ModuleBuilder): void {
  mb.func([P, P, P, P, P, P], [], (c) => {
    const [out, x, sr, Pn, sp, Q] = [0, 1, 2, 3, 4, 5];
    const [p, q, px, po] = Array.from({ length: 4 }, () => c.local(P));
    const pair = (simd: boolean) => {
      c.get(po);
      if (simd) {
        c.f32(0).simd(Simd.f32x4_splat).get(px).simdMem(Simd.v128_load, 0).simd(Simd.f32x4_add);
        c.get(px).get(sr).op(Op.i32_add).simdMem(Simd.v128_load, 0).simd(Simd.f32x4_add).simdMem(Simd.v128_store, 0);
      } else {
        c.f32(0).get(px).mem(Op.f32_load, 2).op(Op.f32_add);
        c.get(px).get(sr).op(Op.i32_add).mem(Op.f32_load, 2).op(Op.f32_add).mem(Op.f32_store, 2);
      }
      const step = simd ? 4 : 1;
      c.get(px).i32(4 * step).op(Op.i32_add).set(px);
      c.get(po).i32(4 * step).op(Op.i32_add).set(po);
      c.get(q).i32(step).op(Op.i32_add).set(q);
    };
    c.get(out).set(po);
    c.get(sr).i32(2).op(Op.i32_shl).set(sr);
    c.for(p, () => c.i32(0), () => c.get(Pn), 1, () => {
      c.get(x).get(p).get(sp).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(px);
      c.i32(0).set(q);
      c.while(() => c.get(q).i32(4).op(Op.i32_add).get(Q).op(Op.i32_le_s), () => pair(true));
      c.while(() => c.get(q).get(Q).op(Op.i32_lt_s), () => pair(false));
    });
  }, 'reduce_pair_sum_f32');
}

export function emitReduce(mb: ModuleBuilder): void {
  emitPairSum(mb);
  for (const k of ['f32', 'f64'] as const) {
    for (const op of ['sum', 'max', 'min', 'absmax'] as const) {
      emitRow(mb, op, k);
      emitCol(mb, op, k);
    }
    emitArg(mb, 'argmax', k);
    emitArg(mb, 'argmin', k);
  }
}

const MIN_ELEMENTS = 2048;

/**
 * Views x as [P, R, Q] (kept outer, reduced, kept inner) when the reduced axes form one run after
 * merging dims that are contiguous with each other; null otherwise.
 */
function asPRQ(x: Arg, axes: readonly number[]): { dims: [number, number, number]; strides: [number, number, number] } | null {
  const groups: { red: boolean; n: number; s: number }[] = [];
  x.shape.forEach((n, d) => {
    if (n === 1) return;
    const red = axes.includes(d);
    const s = x.strides[d]!;
    const last = groups[groups.length - 1];
    if (last && last.red === red && last.s === s * n) {
      last.n *= n;
      last.s = s;
    } else groups.push({ red, n, s });
  });
  const g = groups.map((x) => x.red);
  const first = g.indexOf(true);
  if (first < 0 || g.lastIndexOf(true) !== first || groups.length > 3) return null;
  const before = groups.slice(0, first);
  const after = groups.slice(first + 1);
  if (before.length > 1 || after.length > 1) return null;
  const r = groups[first]!;
  return {
    dims: [before[0]?.n ?? 1, r.n, after[0]?.n ?? 1],
    strides: [before[0]?.s ?? 0, r.s, after[0]?.s ?? 1],
  };
}

/**
 * The dims of x from the largest stride to the smallest (size-1 dims first) when x is one dense
 * block seen through a permutation (a transposed gradient); null otherwise.
 */
function storageOrder(x: Arg): number[] | null {
  const dims = x.shape.map((_, d) => d).filter((d) => x.shape[d]! > 1).sort((a, b) => x.strides[b]! - x.strides[a]!);
  let dense = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    if (x.strides[dims[i]!] !== dense) return null;
    dense *= x.shape[dims[i]!]!;
  }
  return [...x.shape.map((_, d) => d).filter((d) => x.shape[d] === 1), ...dims];
}

/**
 * Reduces a permuted dense x in its storage order, when the reduced axes form one run there, into
 * a scratch tensor, then copies that (half or less of x) into out's order: where copying x into
 * out's order first moved all of x twice. The kept elements sum the same values in the same order
 * (r ascending), so the bits do not change.
 */
function storageOrderReduce(engine: Engine, x: Arg, out: Arg, op: ReduceOp, axes: readonly number[]): boolean {
  const perm = storageOrder(x);
  if (!perm || isContiguous(x.shape, x.strides) || !engine.heap.shared) return false;
  const xs: Arg = { ...x, shape: perm.map((d) => x.shape[d]!), strides: perm.map((d) => x.strides[d]!) };
  const axesS = axes.map((a) => perm.indexOf(a));
  if (asPRQ(xs, axesS)?.strides[2] !== 1) return false;
  const oshape = perm.map((d) => out.shape[d]!);
  const ostrides = contiguousStrides(oshape);
  let data: TypedArray;
  try {
    data = engine.heap.alloc(x.dtype, numel(oshape));
  } catch (e) {
    if (e instanceof RangeError) return false;
    throw e;
  }
  const tmp: Arg = { data, dtype: x.dtype, shape: oshape, strides: ostrides, offset: 0 };
  try {
    if (!reduceWasm(engine, [xs], tmp, { op, axes: axesS })) return false;
    const view: Arg = { ...tmp, shape: [...out.shape], strides: out.shape.map((_, d) => ostrides[perm.indexOf(d)]!) };
    if (!copyWasm(engine, [view], out)) jsCopy([view], out, {});
    return true;
  } finally {
    releaseCopy(engine, tmp);
  }
}

export function reduceWasm(engine: Engine, [x]: readonly Arg[], out: Arg, { op, axes }: { op: ReduceOp; axes: number[] }): boolean {
  const d = x!.dtype;
  if (op === 'prod' || (d !== 'float32' && d !== 'float64') || out.dtype !== d) return false;
  const n = numel(x!.shape);
  if (n < MIN_ELEMENTS || numel(out.shape) === 0) return false;
  const v = asPRQ(x!, axes);
  if (!v || v.strides[2] !== 1 || (v.dims[2] === 1 && v.strides[1] !== 1) || v.strides[0] < 0 || v.strides[1] < 0) {
    if (storageOrderReduce(engine, x!, out, op, axes)) return true;
    // another layout (e.g. a gradient that arrives transposed): one strided copy into contiguous
    // order is far cheaper than reducing on js — when that order makes the reduced axes one run
    const runs = asPRQ({ ...x!, strides: contiguousStrides(x!.shape) }, axes) !== null;
    const tmp = !runs || isContiguous(x!.shape, x!.strides) ? null : contiguousCopy(engine, x!);
    try {
      return tmp !== null && reduceWasm(engine, [tmp], out, { op, axes });
    } finally {
      if (tmp) releaseCopy(engine, tmp);
    }
  }
  const [Pn, R, Q] = v.dims;
  const [sp, sr] = v.strides;
  const k: Kind = d === 'float32' ? 'f32' : 'f64';
  const e = bytes(k);
  // copy the span the view touches
  const lo = x!.offset;
  const hi = lo + (Pn - 1) * sp + (R - 1) * sr + Q;
  if (hi - lo > 4 * n) return false;
  const outN = Pn * Q;
  // operands in wasm memory are read and written in place, others staged through scratch
  const direct = engine.addressOf(out);
  const xIn = engine.inPlace(x!, direct >= 0 ? out : undefined);
  const xPtr = engine.scratch;
  const accPtr = xPtr + Math.ceil(((hi - lo) * e) / 16) * 16;
  const outPtr = accPtr + Q * 8 + 16;
  if (outPtr + outN * e > MAX_HEAP_BYTES || !engine.reserve(outPtr - engine.scratch + outN * e)) return false;
  const view = k === 'f32' ? engine.f32 : engine.f64;
  if (xIn < 0) engine.stageIn(x!.data, lo, hi, view, xPtr);
  const [src, dst] = [xIn >= 0 ? xIn : xPtr, direct >= 0 ? direct : outPtr];
  if (Q === 1) engine.call(`reduce_row_${op}_${k}`, dst, src, R, Pn, sp);
  else if (R === 2 && op === 'sum' && k === 'f32') engine.call('reduce_pair_sum_f32', dst, src, sr, Pn, sp, Q);
  else engine.call(`reduce_col_${op}_${k}`, dst, src, accPtr, R, sr, Pn, sp, Q);
  if (direct < 0) engine.stageOut(out, view, outPtr, outN);
  return true;
}

export function argReduceWasm(engine: Engine, [x]: readonly Arg[], out: Arg, { op, axis }: { op: ArgReduceOp; axis: number }): boolean {
  const d = x!.dtype;
  if ((d !== 'float32' && d !== 'float64') || out.dtype !== 'int32') return false;
  const n = numel(x!.shape);
  if (n < MIN_ELEMENTS || x!.shape[axis] === 0) return false;
  // a size-1 axis has no run to reduce: every index is 0
  if (x!.shape[axis] === 1) {
    out.data.fill(0, out.offset, out.offset + n);
    return true;
  }
  const v = asPRQ(x!, [axis]);
  if (!v || v.strides.some((s) => s < 0)) return false;
  const [Pn, R, Q] = v.dims;
  const [sp, sr, sq] = v.strides;
  const k: Kind = d === 'float32' ? 'f32' : 'f64';
  const e = bytes(k);
  const lo = x!.offset;
  const hi = lo + (Pn - 1) * sp + (R - 1) * sr + (Q - 1) * sq + 1;
  if (hi - lo > 4 * n) return false;
  const outN = Pn * Q;
  const direct = engine.addressOf(out);
  const xIn = engine.inPlace(x!, direct >= 0 ? out : undefined);
  const outPtr = engine.scratch + Math.ceil(((hi - lo) * e) / 16) * 16;
  if (outPtr + outN * 4 > MAX_HEAP_BYTES || !engine.reserve(outPtr - engine.scratch + outN * 4)) return false;
  if (xIn < 0) engine.stageIn(x!.data, lo, hi, k === 'f32' ? engine.f32 : engine.f64, engine.scratch);
  engine.call(`${op}_${k}`, direct >= 0 ? direct : outPtr, xIn >= 0 ? xIn : engine.scratch, R, sr, Pn, sp, Q, sq);
  if (direct < 0) engine.stageOut(out, engine.i32, outPtr, outN);
  return true;
}
