/**
 * @file wasm fake quantization (f32x4 / f64x2): `fakeQuantize` (also with its per-row absmax
 * scales computed first) and its fused backward (also with per-row dscale/dzeroPoint sums) for
 * the js fast path's case (half-even rounding, no noise, x contiguous, scale/zero point/grad
 * walked row by row), bit-identical to the js kernel. Everything else returns false (js fallback).
 */
import type { KernelArg } from '../backend.js';
import { isContiguous, numel, offsets } from '../layout.js';
import type { FakeQuantizeParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;
type Kind = 'f32' | 'f64';
type Mode = 0 | 1 | 2; // zeroPoint, roundedZeroPoint, beta (as in js/quant.ts)

/** Below this many elements the copies cost more than the js loop. */
export const QUANT_MIN_ELEMENTS = 1024;

const I8X16_SHUFFLE = 0x0d;
const F64X2_PMIN = 0xf6;
const F64X2_PMAX = 0xf7;

/** The vector ops of one lane type. */
const V = {
  f32: {
    e: 4, lanes: 4, add: Simd.f32x4_add, sub: Simd.f32x4_sub, mul: Simd.f32x4_mul, div: Simd.f32x4_div,
    min: Simd.f32x4_min, max: Simd.f32x4_max, pmin: Simd.f32x4_pmin, pmax: Simd.f32x4_pmax,
    lt: Simd.f32x4_lt, le: Simd.f32x4_le, ge: Simd.f32x4_ge, neg: Simd.f32x4_neg, abs: Simd.f32x4_abs,
    splat: Simd.f32x4_splat, loadSplat: Simd.v128_load32_splat, extract: Simd.f32x4_extract_lane, store: Op.f32_store,
  },
  f64: {
    e: 8, lanes: 2, add: Simd.f64x2_add, sub: Simd.f64x2_sub, mul: Simd.f64x2_mul, div: Simd.f64x2_div,
    min: Simd.f64x2_min, max: Simd.f64x2_max, pmin: F64X2_PMIN, pmax: F64X2_PMAX,
    lt: Simd.f64x2_lt, le: Simd.f64x2_le, ge: Simd.f64x2_ge, neg: Simd.f64x2_neg, abs: Simd.f64x2_abs,
    splat: Simd.f64x2_splat, loadSplat: Simd.v128_load64_splat, extract: Simd.f64x2_extract_lane, store: Op.f64_store,
  },
} as const;

function shuffle(c: Code, lanes: readonly number[]): void {
  c.simd(I8X16_SHUFFLE);
  for (const l of lanes) c.bytes.push(l);
}

/** Pushes a splat of the f64 param `p` (demoted for f32: callers check it is exact). */
function splatParam(c: Code, k: Kind, p: number): void {
  c.get(p);
  if (k === 'f32') c.op(Op.f32_demote_f64);
  c.simd(V[k].splat);
}

/**
 * Pushes round-half-even of local u keeping the sign of zero, as js's `rne`: f32x4.nearest for
 * f32 (exact there), and for f64 js's own (u + 1.5·2⁵²) − 1.5·2⁵² with u's sign bit or-ed in
 * (a nonzero result already has u's sign; a zero one takes it, as rne's −0 rule).
 */
function rne(c: Code, k: Kind, u: number): void {
  if (k === 'f32') {
    c.get(u).simd(Simd.f32x4_nearest);
    return;
  }
  c.get(u).f64(6755399441055744).simd(Simd.f64x2_splat).simd(Simd.f64x2_add);
  c.f64(6755399441055744).simd(Simd.f64x2_splat).simd(Simd.f64x2_sub);
  c.get(u).f64(-0).simd(Simd.f64x2_splat).simd(Simd.v128_and).simd(Simd.v128_or);
}

/**
 * Pushes an f32x4 computed lane-wise in f64 from f32x4 locals: `body` pushes one f64x2 result
 * from the f64x2 locals it is given (low or high halves). This is js's double arithmetic
 * followed by one Math.fround where an operand is not a float32 (grad factor, bound − z).
 */
function viaF64(c: Code, srcs: readonly number[], body: (wide: readonly number[]) => void): void {
  const wide = srcs.map(() => c.local(ValType.v128));
  const lo = c.local(ValType.v128);
  for (const half of [0, 1]) {
    srcs.forEach((s, i) => {
      c.get(s);
      if (half) {
        c.get(s);
        shuffle(c, [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7]);
      }
      c.simd(Simd.f64x2_promote_low_f32x4).set(wide[i]!);
    });
    body(wide);
    c.simd(Simd.f32x4_demote_f64x2_zero);
    if (!half) c.set(lo);
  }
  c.set(wide[0]!).get(lo).get(wide[0]!);
  shuffle(c, [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]);
}

interface Locals {
  x: number;
  s: number;
  z: number;
  g: number;
  qmin: number;
  qmax: number;
  gf: number;
  /** i32: 1 while the scale is one value along the row (step 0); then `invRow` holds its 1/s. */
  sRow: number;
  invRow: number;
}

/**
 * Pushes nothing; sets `inv`, `zu` (the zero point used) and `q` (unclamped code) from the
 * x/s/z locals, in the same operation order as js's fastForward/fastBackward.
 */
function codeOf(c: Code, k: Kind, mode: Mode, L: Locals, inv: number, zu: number, q: number): void {
  const v = V[k];
  const u = c.local(ValType.v128);
  // 1/s (rounded to the lane type, as js's inv): once per row when the scale is one value along it
  c.get(L.sRow).if();
  c.get(L.invRow).set(inv);
  c.op(Op.else);
  c.f64(1);
  if (k === 'f32') c.op(Op.f32_demote_f64);
  c.simd(v.splat).get(L.s).simd(v.div).set(inv);
  c.end();
  if (mode === 0) {
    c.get(L.x).get(inv).simd(v.mul).get(L.z).simd(v.add).set(u);
    rne(c, k, u);
    c.set(q).get(L.z).set(zu);
  } else if (mode === 1) {
    // z = clamp(rne(z), qmin, qmax) with Math.min/max semantics (NaN and ±0 as wasm min/max)
    rne(c, k, L.z);
    c.get(L.qmin).simd(v.max).get(L.qmax).simd(v.min).set(zu);
    c.get(L.x).get(inv).simd(v.mul).set(u);
    rne(c, k, u);
    c.get(zu).simd(v.add).set(q);
  } else {
    c.get(L.x).get(L.z).simd(v.sub).get(inv).simd(v.mul).set(u);
    rne(c, k, u);
    c.set(q).get(L.z).set(zu);
  }
}

/** Pushes the dequantized value of code local q (decode in js). */
function decode(c: Code, k: Kind, mode: Mode, q: number, s: number, zu: number): void {
  const v = V[k];
  if (mode === 2) c.get(q).get(s).simd(v.mul).get(zu).simd(v.add);
  else c.get(q).get(zu).simd(v.sub).get(s).simd(v.mul);
}

/** Forward body: pushes y for the locals. */
function forwardBody(c: Code, k: Kind, mode: Mode, L: Locals): void {
  const v = V[k];
  const [inv, zu, q] = [c.local(ValType.v128), c.local(ValType.v128), c.local(ValType.v128)];
  codeOf(c, k, mode, L, inv, zu, q);
  // js's `q < qmin ? qmin : q > qmax ? qmax : q` is pmax then pmin (NaN and −0 pass through)
  c.get(q).get(L.qmin).simd(v.pmax).get(L.qmax).simd(v.pmin).set(q);
  decode(c, k, mode, q, L.s, zu);
}

/**
 * Forward body for a row whose scale and zero point are one value each along it (per token, per
 * group, per tensor): the same operations as forwardBody lane for lane, with the per-row parts
 * (1/s in `inv`, the zero point used in `zu`, computed by rowParts) read from locals instead of
 * being redone per vector. Pushes y for local x.
 */
function forwardRowConst(c: Code, k: Kind, mode: Mode, L: Locals, inv: number, zu: number): void {
  const v = V[k];
  const [u, q] = [c.local(ValType.v128), c.local(ValType.v128)];
  if (mode === 0) c.get(L.x).get(inv).simd(v.mul).get(zu).simd(v.add).set(u);
  else if (mode === 1) c.get(L.x).get(inv).simd(v.mul).set(u);
  else c.get(L.x).get(zu).simd(v.sub).get(inv).simd(v.mul).set(u);
  rne(c, k, u);
  if (mode === 1) c.get(zu).simd(v.add);
  c.set(q);
  c.get(q).get(L.qmin).simd(v.pmax).get(L.qmax).simd(v.pmin).set(q);
  decode(c, k, mode, q, L.s, zu);
}

/** Sets `zu` to the zero point codeOf uses, from the z local (once per row for forwardRowConst). */
function rowParts(c: Code, k: Kind, mode: Mode, L: Locals, zu: number): void {
  const v = V[k];
  if (mode === 1) {
    rne(c, k, L.z);
    c.get(L.qmin).simd(v.max).get(L.qmax).simd(v.min).set(zu);
  } else c.get(L.z).set(zu);
}

/** Backward body: sets dx, ds, dz (ds and dz multiplied by the grad factor as js does, unless `unscaled`: row sums scale their total). */
function backwardBody(c: Code, k: Kind, mode: Mode, gfExact: boolean, L: Locals, dx: number, ds: number, dz: number, unscaled = false): void {
  const v = V[k];
  const [inv, zu, q, inside, bound, t] = [0, 0, 0, 0, 0, 0].map(() => c.local(ValType.v128)) as [number, number, number, number, number, number];
  codeOf(c, k, mode, L, inv, zu, q);
  c.get(q).get(L.qmin).simd(v.ge).get(q).get(L.qmax).simd(v.le).simd(Simd.v128_and).set(inside);
  // inside: ds = (g·(x̂ − x))·inv
  decode(c, k, mode, q, L.s, zu);
  c.get(L.x).simd(v.sub).set(t);
  c.get(L.g).get(t).simd(v.mul).get(inv).simd(v.mul).set(ds);
  // clamped: ds = g·(bound − z) (beta: g·bound), dz = (−g)·s (beta: g)
  c.get(L.qmin).get(L.qmax).get(q).get(L.qmin).simd(v.lt).simd(Simd.v128_bitselect).set(bound);
  if (mode === 2) c.get(L.g).get(bound).simd(v.mul);
  else if (mode === 1 || k === 'f64') c.get(L.g).get(bound).get(zu).simd(v.sub).simd(v.mul);
  // f32 with a real z: js forms bound − z in double, so do this product in f64
  else viaF64(c, [L.g, bound, zu], ([g, b, z]) => void c.get(g!).get(b!).get(z!).simd(Simd.f64x2_sub).simd(Simd.f64x2_mul));
  c.set(t);
  c.get(ds).get(t).get(inside).simd(Simd.v128_bitselect).set(ds);
  if (mode === 2) c.get(L.g);
  else c.get(L.g).simd(v.neg).get(L.s).simd(v.mul);
  c.set(t);
  c.i32(0).simd(Simd.i32x4_splat).get(t).get(inside).simd(Simd.v128_bitselect).set(dz);
  // dx = g·1 or g·0 (−0 and NaN as torch's dy·mask)
  c.get(L.g);
  c.f64(1);
  if (k === 'f32') c.op(Op.f32_demote_f64);
  c.simd(v.splat).i32(0).simd(Simd.i32x4_splat).get(inside).simd(Simd.v128_bitselect).simd(v.mul).set(dx);
  if (unscaled) return;
  for (const d of [ds, dz]) {
    if (k === 'f64' || gfExact) c.get(d).get(L.gf).simd(v.mul).set(d);
    else {
      // gf is a double: js rounds d·gf once from double
      viaF64(c, [d], ([w]) => void c.get(w!).get(L.gf).simd(Simd.f64x2_mul));
      c.set(d);
    }
  }
}

/**
 * An operand walked by rows: at each row its pointer is base + rows[r]·e, or base + r·rowStride·e
 * when rowStride ≥ 0 (per-group, per-token and per-tensor operands and a contiguous grad: no
 * table to build in js and copy in); with step 0 its value is splatted into a 16-byte slot so the
 * inner loop loads every operand the same way.
 */
function kernelName(k: Kind, mode: Mode, backward: boolean, gfExact: boolean, rowSums: boolean, absmax = false): string {
  if (rowSums) return `fqBwdRows_${mode}_${k}`;
  if (absmax) return `fqFwdAbsmax_${mode}_${k}`;
  return `${backward ? 'fqBwd' : 'fqFwd'}_${mode}_${k}${backward && k === 'f32' && gfExact ? '_gfexact' : ''}`;
}

/**
 * With `rowSums` (backward only) the kernel writes dx alone at out and, per row, the sums of the
 * unscaled ds and dz lanes (js's rowSum order: lane-wise running sums, lanes combined, then the
 * tail) times gf at sums + r·e and sums + (R + r)·e.
 */
function emitKernel(mb: ModuleBuilder, k: Kind, mode: Mode, backward: boolean, gfExact: boolean, rowSums = false, absmax = false): void {
  const P = ValType.i32;
  const v = V[k];
  const S = k === 'f32' ? ValType.f32 : ValType.f64;
  const nOps = backward ? 3 : 2; // s, z(, g)
  // params: out, x, R, L, n, tmp, qmin, qmax, gf, then (base, rows, step, rowStride) per operand(, sums)(, divisor, min)
  const params: ValType[] = [P, P, P, P, P, P, ValType.f64, ValType.f64, ValType.f64];
  for (let i = 0; i < nOps; i++) params.push(P, P, P, P);
  if (rowSums) params.push(P);
  if (absmax) params.push(ValType.f64, ValType.f64);
  const name = kernelName(k, mode, backward, gfExact, rowSums, absmax);
  mb.func(params, [], (c) => {
    const [out, x, R, Lp, n, tmp, qminP, qmaxP, gfP] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
    const opBase = (i: number) => 9 + 4 * i;
    const [r, i, px, po] = [c.local(P), c.local(P), c.local(P), c.local(P)];
    const ptr = Array.from({ length: nOps }, () => c.local(P));
    const incV = Array.from({ length: nOps }, () => c.local(P));
    const incS = Array.from({ length: nOps }, () => c.local(P));
    const vec = Array.from({ length: nOps }, () => c.local(ValType.v128));
    const xv = c.local(ValType.v128);
    const [dx, ds, dz] = [c.local(ValType.v128), c.local(ValType.v128), c.local(ValType.v128)];
    const L: Locals = {
      x: xv, s: vec[0]!, z: vec[1]!, g: vec[2] ?? 0, qmin: c.local(ValType.v128), qmax: c.local(ValType.v128), gf: c.local(ValType.v128),
      sRow: c.local(P), invRow: c.local(ValType.v128),
    };
    splatParam(c, k, qminP);
    c.set(L.qmin);
    splatParam(c, k, qmaxP);
    c.set(L.qmax);
    // gf in the lane type, or for f32 when it is no float32 as an f64x2 (backwardBody widens)
    if (k === 'f64' || gfExact) splatParam(c, k, gfP);
    else c.get(gfP).simd(Simd.f64x2_splat);
    c.set(L.gf);
    c.get(x).set(px);
    c.get(out).set(po);
    const compute = () => {
      if (backward) backwardBody(c, k, mode, gfExact, L, dx, ds, dz, rowSums);
      else forwardBody(c, k, mode, L);
    };
    const sumsP = 9 + 4 * nOps;
    const [accS, accZ] = [c.local(ValType.v128), c.local(ValType.v128)];
    const [sumS, sumZ] = [c.local(S), c.local(S)];
    const addS = k === 'f32' ? Op.f32_add : Op.f64_add;
    /** Pushes (a0 + a2) + (a1 + a3) of an f32x4 local, or a0 + a1 of an f64x2 one. */
    const combine = (acc: number) => {
      if (k === 'f32') {
        c.get(acc).lane(v.extract, 0).get(acc).lane(v.extract, 2).op(addS);
        c.get(acc).lane(v.extract, 1).get(acc).lane(v.extract, 3).op(addS).op(addS);
      } else c.get(acc).lane(v.extract, 0).get(acc).lane(v.extract, 1).op(addS);
    };
    /** Stores sum·gf (rounded once from double) at sums + (row + off)·e. */
    const storeSum = (sum: number, off: number) => {
      c.get(sumsP).get(r);
      if (off) c.get(R).op(Op.i32_add);
      c.i32(v.e).op(Op.i32_mul).op(Op.i32_add);
      c.get(sum);
      if (k === 'f32') c.op(Op.f64_promote_f32);
      c.get(gfP).op(Op.f64_mul);
      if (k === 'f32') c.op(Op.f32_demote_f64);
      c.mem(v.store, k === 'f32' ? 2 : 3);
    };
    const [mS, absAcc, rowZu] = [c.local(S), c.local(ValType.v128), c.local(ValType.v128)];
    const [loadS, absS, maxS, divS, demote] = k === 'f32'
      ? [Op.f32_load, Op.f32_abs, Op.f32_max, Op.f32_div, true]
      : [Op.f64_load, Op.f64_abs, Op.f64_max, Op.f64_div, false];
    /** Pushes the f64 param `i` in the lane type. */
    const param = (i: number) => {
      c.get(i);
      if (demote) c.op(Op.f32_demote_f64);
    };
    c.for(r, () => c.i32(0), () => c.get(R), 1, () => {
      if (absmax) {
        // the row's scale first (js absmaxScales): m = max|x| (max propagates NaN; every |x| ≥ +0),
        // s = max(m, min)/divisor, stored at the scale operand's row (evenly spaced: run checks)
        c.i32(0).simd(Simd.i32x4_splat).set(absAcc);
        c.i32(0).set(i);
        c.while(() => c.get(i).i32(v.lanes).op(Op.i32_add).get(Lp).op(Op.i32_le_s), () => {
          c.get(absAcc).get(px).get(i).i32(v.e).op(Op.i32_mul).op(Op.i32_add).simdMem(Simd.v128_load, 0);
          // f32: |x| as bits (sign cleared) orders as the floats do, with every NaN above +∞, so
          // an integer max (one instruction, unlike f32x4.max's NaN fix-ups on the loop's
          // dependency chain) is the NaN-propagating max
          if (k === 'f32') c.i32(0x7fffffff).simd(Simd.i32x4_splat).simd(Simd.v128_and).simd(Simd.i32x4_max_s);
          else c.simd(v.abs).simd(v.max);
          c.set(absAcc);
          c.get(i).i32(v.lanes).op(Op.i32_add).set(i);
        });
        c.get(absAcc).lane(v.extract, 0).get(absAcc).lane(v.extract, 1).op(maxS);
        if (k === 'f32') c.get(absAcc).lane(v.extract, 2).get(absAcc).lane(v.extract, 3).op(maxS).op(maxS);
        c.set(mS);
        c.while(() => c.get(i).get(Lp).op(Op.i32_lt_s), () => {
          c.get(mS).get(px).get(i).i32(v.e).op(Op.i32_mul).op(Op.i32_add).mem(loadS, k === 'f32' ? 2 : 3).op(absS).op(maxS).set(mS);
          c.get(i).i32(1).op(Op.i32_add).set(i);
        });
        const [base, rowStride] = [opBase(0), opBase(0) + 3];
        c.get(base).get(r).get(rowStride).op(Op.i32_mul).i32(v.e).op(Op.i32_mul).op(Op.i32_add);
        c.get(mS);
        param(9 + 4 * nOps + 1);
        c.op(maxS);
        param(9 + 4 * nOps);
        c.op(divS).mem(v.store, k === 'f32' ? 2 : 3);
      }
      for (let j = 0; j < nOps; j++) {
        const [base, rows, step, rowStride] = [opBase(j), opBase(j) + 1, opBase(j) + 2, opBase(j) + 3];
        // ptr = base + rows[r]·e, or base + r·rowStride·e
        c.get(rowStride).i32(0).op(Op.i32_ge_s).if();
        c.get(base).get(r).get(rowStride).op(Op.i32_mul).i32(v.e).op(Op.i32_mul).op(Op.i32_add).set(ptr[j]!);
        c.op(Op.else);
        c.get(base).get(rows).get(r).i32(4).op(Op.i32_mul).op(Op.i32_add).mem(Op.i32_load, 2).i32(v.e).op(Op.i32_mul).op(Op.i32_add).set(ptr[j]!);
        c.end();
        c.get(step).if();
        c.i32(16).set(incV[j]!).i32(v.e).set(incS[j]!);
        c.op(Op.else);
        c.get(tmp).i32(16 * j).op(Op.i32_add).get(ptr[j]!).simdMem(v.loadSplat, 0).simdMem(Simd.v128_store, 0);
        c.get(tmp).i32(16 * j).op(Op.i32_add).set(ptr[j]!);
        c.i32(0).set(incV[j]!).i32(0).set(incS[j]!);
        c.end();
      }
      // a scale with step 0 along the row: its 1/s once, here
      c.get(opBase(0) + 2).op(Op.i32_eqz).set(L.sRow);
      c.get(L.sRow).if();
      c.f64(1);
      if (k === 'f32') c.op(Op.f32_demote_f64);
      c.simd(v.splat).get(ptr[0]!).simdMem(Simd.v128_load, 0).simd(v.div).set(L.invRow);
      c.end();
      const store = (scalar: boolean, o: number, off: number) => {
        c.get(po);
        c.get(o);
        if (scalar) c.lane(v.extract, 0).mem(v.store, k === 'f32' ? 2 : 3, off);
        else c.simdMem(Simd.v128_store, 0, off);
      };
      const body = (scalar: boolean) => {
        const load = scalar ? v.loadSplat : Simd.v128_load;
        c.get(px).simdMem(load, 0).set(xv);
        for (let j = 0; j < nOps; j++) c.get(ptr[j]!).simdMem(load, 0).set(vec[j]!);
        if (rowSums) {
          compute();
          store(scalar, dx, 0);
          if (scalar) {
            c.get(sumS).get(ds).lane(v.extract, 0).op(addS).set(sumS);
            c.get(sumZ).get(dz).lane(v.extract, 0).op(addS).set(sumZ);
          } else {
            c.get(accS).get(ds).simd(v.add).set(accS);
            c.get(accZ).get(dz).simd(v.add).set(accZ);
          }
        } else if (backward) {
          compute();
          // dx, ds, dz at out, out + n, out + 2n; offsets are dynamic, so bump po around them
          store(scalar, dx, 0);
          for (const d of [ds, dz]) {
            c.get(po).get(n).i32(v.e).op(Op.i32_mul).op(Op.i32_add).set(po);
            store(scalar, d, 0);
          }
          c.get(po).get(n).i32(2 * v.e).op(Op.i32_mul).op(Op.i32_sub).set(po);
        } else {
          c.get(po);
          compute();
          if (scalar) c.lane(v.extract, 0).mem(v.store, k === 'f32' ? 2 : 3);
          else c.simdMem(Simd.v128_store, 0);
        }
        const adv = scalar ? v.e : 16;
        c.get(px).i32(adv).op(Op.i32_add).set(px);
        c.get(po).i32(adv).op(Op.i32_add).set(po);
        for (let j = 0; j < nOps; j++) c.get(ptr[j]!).get(scalar ? incS[j]! : incV[j]!).op(Op.i32_add).set(ptr[j]!);
        c.get(i).i32(scalar ? 1 : v.lanes).op(Op.i32_add).set(i);
      };
      c.i32(0).set(i);
      if (rowSums) {
        c.i32(0).simd(Simd.i32x4_splat).set(accS);
        c.i32(0).simd(Simd.i32x4_splat).set(accZ);
      }
      if (!backward) {
        // scale and zero point constant along the row (step 0 both: per-token activations,
        // per-group weights): their per-row parts once, and a loop that only streams x. The
        // generic loop below then has no vectors left; its scalar tail reads the same splats.
        c.get(opBase(0) + 2).op(Op.i32_eqz).get(opBase(1) + 2).op(Op.i32_eqz).op(Op.i32_and).if();
        c.get(ptr[0]!).simdMem(Simd.v128_load, 0).set(L.s);
        c.get(ptr[1]!).simdMem(Simd.v128_load, 0).set(L.z);
        rowParts(c, k, mode, L, rowZu);
        c.while(() => c.get(i).i32(v.lanes).op(Op.i32_add).get(Lp).op(Op.i32_le_s), () => {
          c.get(px).simdMem(Simd.v128_load, 0).set(xv);
          c.get(po);
          forwardRowConst(c, k, mode, L, L.invRow, rowZu);
          c.simdMem(Simd.v128_store, 0);
          c.get(px).i32(16).op(Op.i32_add).set(px);
          c.get(po).i32(16).op(Op.i32_add).set(po);
          c.get(i).i32(v.lanes).op(Op.i32_add).set(i);
        });
        c.end();
      }
      c.while(() => c.get(i).i32(v.lanes).op(Op.i32_add).get(Lp).op(Op.i32_le_s), () => body(false));
      if (rowSums) {
        combine(accS);
        c.set(sumS);
        combine(accZ);
        c.set(sumZ);
      }
      c.while(() => c.get(i).get(Lp).op(Op.i32_lt_s), () => body(true));
      if (rowSums) {
        storeSum(sumS, 0);
        storeSum(sumZ, 1);
      }
    });
  }, name);
}

export function emitQuant(mb: ModuleBuilder): void {
  for (const mode of [0, 1, 2] as const) {
    for (const k of ['f32', 'f64'] as const) {
      emitKernel(mb, k, mode, false, false);
      emitKernel(mb, k, mode, false, false, false, true);
      emitKernel(mb, k, mode, true, true);
      if (k === 'f32') emitKernel(mb, k, mode, true, false);
      emitKernel(mb, k, mode, true, false, true);
    }
  }
}

/** Bounds whose float32 clamp and compares equal js's double ones (and whose differences are exact). */
const boundOk32 = (v: number, finite: boolean) => (!finite && Math.abs(v) === Infinity) || (Number.isInteger(v) && Math.abs(v) <= 2 ** 23);

interface Walk {
  /** Offset of each row's start, or null when it is offset + r·rowStride. */
  rows: Int32Array | null;
  rowStride: number;
  offset: number;
  step: 0 | 1;
}

/**
 * js's rowWalk, restricted to step 0 or 1 along the last dim (null otherwise). Rows whose starts
 * are evenly spaced (offset + r·rowStride, rowStride ≥ 0: a scale per group, token or tensor, a
 * contiguous grad) need no table; the others get one.
 */
function walk(a: Arg, shape: readonly number[]): Walk | null {
  const last = shape.length - 1;
  if (last < 0) return { rows: null, rowStride: 0, offset: a.offset, step: 0 };
  const step = shape[last] === 1 ? 0 : a.strides[last]!;
  if (step !== 0 && step !== 1) return null;
  // evenly spaced: every leading dim of size > 1 has stride rowStride·(rows below it)
  let rowStride = -1;
  let below = 1;
  let even = true;
  for (let d = last - 1; d >= 0 && even; d--) {
    const n = shape[d]!;
    if (n === 1) continue;
    const st = a.strides[d]!;
    if (rowStride < 0) {
      if (st % below !== 0 || st < 0) even = false;
      else rowStride = st / below;
    } else if (st !== rowStride * below) even = false;
    below *= n;
  }
  if (even) return { rows: null, rowStride: Math.max(rowStride, 0), offset: a.offset, step };
  return { rows: offsets({ shape: shape.slice(0, last), strides: a.strides.slice(0, last), offset: a.offset }), rowStride: -1, offset: a.offset, step };
}

function run(engine: Engine, inputs: readonly Arg[], out: Arg, p: FakeQuantizeParams & { gradFactor?: number; rowSums?: boolean; absmaxScale?: { divisor: number; min: number } }, backward: boolean): boolean {
  const rowSums = backward && p.rowSums === true;
  const absmax = backward ? undefined : p.absmaxScale;
  const [x, s, z, g, fifth] = inputs as Arg[];
  const sums = rowSums ? fifth : undefined;
  const nOps = backward ? 3 : 2;
  if ((fifth && !rowSums) || inputs.length !== nOps + 1 + (rowSums ? 1 : 0) || p.rounding !== 'halfEven') return false;
  const dtype = out.dtype;
  if (dtype !== 'float32' && dtype !== 'float64') return false;
  if (!inputs.every((a) => a.dtype === dtype)) return false;
  const k: Kind = dtype === 'float32' ? 'f32' : 'f64';
  const mode: Mode = p.offset === 'beta' ? 2 : p.offset === 'roundedZeroPoint' ? 1 : 0;
  const gf = p.gradFactor ?? 1;
  if (k === 'f32' && !(boundOk32(p.qmin, mode === 1) && boundOk32(p.qmax, mode === 1))) return false;
  const shape = backward && !rowSums ? out.shape.slice(1) : out.shape;
  if (!isContiguous(x!.shape, x!.strides) || !isContiguous(out.shape, out.strides)) return false;
  if (sums && !isContiguous(sums.shape, sums.strides)) return false;
  const n = numel(shape);
  if (n < QUANT_MIN_ELEMENTS) return false;
  let L = shape.length ? shape[shape.length - 1]! : 1;
  const ops = [s!, z!, g].slice(0, nOps) as Arg[];
  if (ops.some((a) => a.strides.length !== shape.length)) return false;
  let R = n / L;
  let ws: Walk[];
  // per-tensor operands and contiguous ones (a grad): one row of n, classified from the strides
  // alone, so short last dims still vectorize and no per-row offsets are built
  const flat = ops.map((a) => (shape.every((d, i) => d === 1 || a.strides[i] === 0) ? 0 : isContiguous(shape, a.strides) ? 1 : null));
  // (row sums and absmax scales keep their rows)
  if (!rowSums && !absmax && flat.every((f) => f !== null)) {
    ws = ops.map((a, j) => ({ rows: null, rowStride: 0, offset: a.offset, step: flat[j]! }));
    L = n;
    R = 1;
  } else {
    const walks = ops.map((a) => walk(a, shape));
    if (walks.some((w) => w === null)) return false;
    ws = walks as Walk[];
  }
  // the written scales: one per row, evenly spaced
  if (absmax && (ws[0]!.rows || ws[0]!.step !== 0 || (R > 1 && ws[0]!.rowStride === 0))) return false;
  const e = k === 'f32' ? 4 : 8;
  const spans = ops.map((a, j) => {
    let lo = Infinity;
    let hi = -Infinity;
    const w = ws[j]!;
    const rows = w.rows;
    if (rows) {
      for (let r = 0; r < rows.length; r++) {
        const o = rows[r]!;
        if (o < lo) lo = o;
        if (o > hi) hi = o;
      }
    } else [lo, hi] = [w.offset, w.offset + (R - 1) * w.rowStride];
    if (w.step) hi += L - 1;
    return [lo, hi + 1] as const;
  });
  const align = (b: number) => Math.ceil(b / 16) * 16;
  const tmp = engine.scratch;
  let ptr = tmp + 16 * nOps;
  // operands in wasm memory are read and written in place (an input overlapping out is staged)
  const direct = engine.addressOf(out);
  const within = direct >= 0 ? out : undefined;
  const xIn = engine.inPlace(x!, within);
  const opIn = ops.map((a) => engine.inPlace(a, within));
  const outPtr = direct >= 0 ? direct : ptr;
  const planes = backward && !rowSums ? 3 : 1;
  ptr = align(ptr + planes * n * e);
  // row sums are written where they live, or staged out after
  const sumsDirect = sums ? engine.addressOf(sums) : -1;
  const sumsPtr = sumsDirect >= 0 ? sumsDirect : ptr;
  if (sums && sumsDirect < 0) ptr = align(ptr + 2 * R * e);
  const xPtr = ptr;
  ptr = align(ptr + n * e);
  const opPtrs = spans.map(([lo, hi]) => {
    const at = ptr;
    ptr = align(ptr + (hi - lo) * e);
    return at;
  });
  const rowPtrs = ws.map((w) => {
    const at = ptr;
    if (w.rows) ptr = align(ptr + w.rows.length * 4);
    return at;
  });
  if (!engine.reserve(ptr - engine.scratch + 16)) return false;
  const view = k === 'f32' ? engine.f32 : engine.f64;
  if (xIn < 0) engine.stageIn(x!.data, x!.offset, x!.offset + n, view, xPtr);
  ops.forEach((a, j) => {
    const [lo, hi] = spans[j]!;
    // the rows table holds offsets from the span's start: in place, its address is element lo's
    if (opIn[j]! >= 0) opPtrs[j] = opIn[j]! + (lo - a.offset) * e;
    else engine.stageIn(a.data, lo, hi, view, opPtrs[j]!);
    const rows = ws[j]!.rows;
    if (!rows) return;
    const i32 = engine.i32;
    const at = rowPtrs[j]! / 4;
    for (let r = 0; r < rows.length; r++) i32[at + r] = rows[r]! - lo;
  });
  const gfExact = k === 'f64' || Math.fround(gf) === gf;
  const args: number[] = [outPtr, xIn >= 0 ? xIn : xPtr, R, L, n, tmp, p.qmin, p.qmax, gf];
  ops.forEach((_, j) => args.push(opPtrs[j]!, rowPtrs[j]!, ws[j]!.step, ws[j]!.rows ? -1 : ws[j]!.rowStride));
  if (sums) args.push(sumsPtr);
  if (absmax) args.push(absmax.divisor, absmax.min);
  engine.call(kernelName(k, mode, backward, gfExact, rowSums, absmax !== undefined), ...args);
  if (direct < 0) engine.stageOut(out, view, outPtr, planes * n);
  // the scales it wrote, back to where they live when staged
  if (absmax && opIn[0]! < 0) {
    const [lo, hi] = spans[0]!;
    s!.data.set(view.subarray(opPtrs[0]! / e, opPtrs[0]! / e + hi - lo) as never, lo);
  }
  if (sums && sumsDirect < 0) engine.stageOut(sums, view, sumsPtr, 2 * R);
  return true;
}

export function fakeQuantizeWasm(engine: Engine, inputs: readonly Arg[], out: Arg, p: FakeQuantizeParams & { absmaxScale?: { divisor: number; min: number } }): boolean {
  return run(engine, inputs, out, p, false);
}

export function fakeQuantizeBackwardWasm(engine: Engine, inputs: readonly Arg[], out: Arg, p: FakeQuantizeParams & { gradFactor: number; rowSums?: boolean }): boolean {
  return run(engine, inputs, out, p, true);
}
