/**
 * @file wasm `fpRound` (f32x4 / f64x2): rounding onto a minifloat grid by exponent-bit arithmetic,
 * no log or pow, bit-identical to the js kernel (js/fp-round.ts), rows split over the thread pool.
 * Scales per tensor or per row (constant along the last dim) run here; other broadcasts go to js.
 */
import type { KernelArg } from '../backend.js';
import { isContiguous, numel, offsets } from '../layout.js';
import type { FpRoundParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { ARGS, type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;
type Kind = 'f32' | 'f64';
type Rounding = FpRoundParams['rounding'];

/** Below this many elements a call costs more than the js loop. */
const MIN_ELEMENTS = 1024;

/**
 * Elements from which rows are split over the pool, when nothing is copied on the calling thread
 * (as elementwise.ts's cheap maps: copies made there are what a worker would wait on). Not tuned:
 * fpRound of [n/256, 256] float32, 1 vs 2 threads, median µs of 41 calls, two runs each, on the
 * 2-vCPU machine at load average 13: 2¹⁷ 39–40 vs 28–40, 2¹⁹ 144–155 vs 131–163, 2²⁰ 282–299 vs
 * 257–324; per-row scaled 2²⁰ 463–489 vs 509–567. Measure again on an idle machine.
 */
const PARALLEL_MIN = 1 << 17;

// SIMD opcodes the assembler's table lacks
const I64X2_ADD = 0xce;
const I64X2_SUB = 0xd1;

/** The vector ops of one lane type; `iadd`/`isub` act on the same lanes as integers (the bit patterns). */
const V = {
  f32: {
    e: 4, lanes: 4, mul: Simd.f32x4_mul, div: Simd.f32x4_div, sub: Simd.f32x4_sub, add: Simd.f32x4_add, abs: Simd.f32x4_abs,
    neg: Simd.f32x4_neg, ge: Simd.f32x4_ge, lt: Simd.f32x4_lt, pmin: Simd.f32x4_pmin, pmax: Simd.f32x4_pmax,
    nearest: Simd.f32x4_nearest, floor: Simd.f32x4_floor, trunc: Simd.f32x4_trunc, iadd: Simd.i32x4_add, isub: Simd.i32x4_sub,
    splat: Simd.f32x4_splat, loadSplat: Simd.v128_load32_splat, extract: Simd.f32x4_extract_lane, store: Op.f32_store, align: 2,
  },
  f64: {
    e: 8, lanes: 2, mul: Simd.f64x2_mul, div: Simd.f64x2_div, sub: Simd.f64x2_sub, add: Simd.f64x2_add, abs: Simd.f64x2_abs,
    neg: Simd.f64x2_neg, ge: Simd.f64x2_ge, lt: Simd.f64x2_lt, pmin: 0xf6, pmax: 0xf7,
    nearest: Simd.f64x2_nearest, floor: Simd.f64x2_floor, trunc: Simd.f64x2_trunc, iadd: I64X2_ADD, isub: I64X2_SUB,
    splat: Simd.f64x2_splat, loadSplat: Simd.v128_load64_splat, extract: Simd.f64x2_extract_lane, store: Op.f64_store, align: 3,
  },
} as const;

/** i32 words of a call's argument block at ARGS; its f64 scalars follow at byte F64_AT. */
const enum W { x, out, scales, n, rowLength, rows, rowsPerTask }
const enum D { lo, hi, pow2M, invPow2M, max }
const F64_AT = 32;

/** Pushes a splat of the constant v in the lane type (every constant used is exact in float32). */
function splat(c: Code, k: Kind, v: number): void {
  if (k === 'f32') c.f32(v);
  else c.f64(v);
  c.simd(V[k].splat);
}

/** Pushes a splat of f64 scalar `d` of the argument block (demoted for f32: callers check it is exact). */
function splatArg(c: Code, k: Kind, arg: number, d: D): void {
  c.get(arg).mem(Op.f64_load, 3, F64_AT + 8 * d);
  if (k === 'f32') c.op(Op.f32_demote_f64);
  c.simd(V[k].splat);
}

interface Consts {
  lo: number;
  hi: number;
  /** bits(2^M) + bits(1) as integer lanes: minus bits(2^e) it is bits(2^(M − e)). */
  k: number;
  invPow2M: number;
  max: number;
  negMax: number;
}

/**
 * Sets `y` to the grid value of local `v`: p = 2^e with e = clamp(⌊log2|v|⌋, emin, cap), read off
 * v's exponent field (|v| masked by +∞'s bits: 0 for zero and subnormals, +∞ for ∞ and NaN, so
 * never NaN itself); u = v·2^(M − e) and y = R(u)·(p·2^−M), both products exact; then y is clamped
 * to ±max keeping NaN (pmax then pmin). cap = ⌊log2 max⌋ + 1 keeps 2^(M − e) a normal number for
 * ±∞ too, and changes nothing else: every |v| ≥ 2^cap > max saturates either way.
 */
function roundBody(c: Code, k: Kind, rounding: Rounding, C: Consts, v: number, y: number, t: readonly number[]): void {
  const o = V[k];
  const [p, u, r, a] = t as [number, number, number, number];
  c.get(v);
  splat(c, k, Infinity);
  c.simd(Simd.v128_and).get(C.lo).simd(o.pmax).get(C.hi).simd(o.pmin).set(p);
  c.get(v).get(C.k).get(p).simd(o.isub).simd(o.mul).set(u);
  if (rounding === 'halfEven') c.get(u).simd(o.nearest).set(r);
  else if (rounding === 'floor') c.get(u).simd(o.floor).set(r);
  else {
    // js's roundHalfAway: on |u|, t = trunc|u| + (|u| − trunc|u| ≥ ½), then −t where u < 0 (so −0 → +0 as there)
    c.get(u).simd(o.abs).tee(a).simd(o.trunc).set(r);
    c.get(r);
    splat(c, k, 1);
    c.simd(o.add).get(r).get(a).get(r).simd(o.sub);
    splat(c, k, 0.5);
    c.simd(o.ge).simd(Simd.v128_bitselect).set(r);
    c.get(r).simd(o.neg).get(r).get(u);
    splat(c, k, 0);
    c.simd(o.lt).simd(Simd.v128_bitselect).set(r);
  }
  c.get(r).get(p).get(C.invPow2M).simd(o.mul).simd(o.mul);
  c.get(C.negMax).simd(o.pmax).get(C.max).simd(o.pmin).set(y);
}

/**
 * Task export fpRound_<k>_<rounding>[_s](arg, t): rows [t·rowsPerTask, …) of the call at arg, row r
 * being elements [r·rowLength, min(n, (r + 1)·rowLength)) of x and out; with `_s` every element of
 * row r is divided by scales[r] first. Elementwise, so any split gives the same bits.
 */
function emitKernel(mb: ModuleBuilder, k: Kind, rounding: Rounding, scaled: boolean): void {
  const P = ValType.i32;
  const o = V[k];
  mb.func([P, P], [], (c) => {
    const [arg, task] = [0, 1];
    const [r, rEnd, j, jEnd, px, po] = [0, 0, 0, 0, 0, 0].map(() => c.local(P)) as [number, number, number, number, number, number];
    const local = () => c.local(ValType.v128);
    const C: Consts = { lo: local(), hi: local(), k: local(), invPow2M: local(), max: local(), negMax: local() };
    const [s, v, y] = [local(), local(), local()];
    const tmp = [local(), local(), local(), local()];
    const word = (w: W) => c.get(arg).mem(Op.i32_load, 2, 4 * w);
    splatArg(c, k, arg, D.lo);
    c.set(C.lo);
    splatArg(c, k, arg, D.hi);
    c.set(C.hi);
    splatArg(c, k, arg, D.pow2M);
    splat(c, k, 1);
    c.simd(o.iadd).set(C.k);
    splatArg(c, k, arg, D.invPow2M);
    c.set(C.invPow2M);
    splatArg(c, k, arg, D.max);
    c.tee(C.max).simd(o.neg).set(C.negMax);
    c.get(task);
    word(W.rowsPerTask);
    c.op(Op.i32_mul).set(r);
    // rEnd = min(rows, r + rowsPerTask)
    c.get(r);
    word(W.rowsPerTask);
    c.op(Op.i32_add).set(rEnd);
    word(W.rows);
    c.get(rEnd);
    word(W.rows);
    c.get(rEnd).op(Op.i32_lt_s).op(Op.select).set(rEnd);
    c.while(() => c.get(r).get(rEnd).op(Op.i32_lt_s), () => {
      c.get(r);
      word(W.rowLength);
      c.op(Op.i32_mul).set(j);
      c.get(j);
      word(W.rowLength);
      c.op(Op.i32_add).set(jEnd);
      word(W.n);
      c.get(jEnd);
      word(W.n);
      c.get(jEnd).op(Op.i32_lt_s).op(Op.select).set(jEnd);
      if (scaled) {
        word(W.scales);
        c.get(r).i32(o.e).op(Op.i32_mul).op(Op.i32_add).simdMem(o.loadSplat, o.align).set(s);
      }
      word(W.x);
      c.get(j).i32(o.e).op(Op.i32_mul).op(Op.i32_add).set(px);
      word(W.out);
      c.get(j).i32(o.e).op(Op.i32_mul).op(Op.i32_add).set(po);
      const body = (scalar: boolean) => {
        c.get(px).simdMem(scalar ? o.loadSplat : Simd.v128_load, 0);
        if (scaled) c.get(s).simd(o.div);
        c.set(v);
        roundBody(c, k, rounding, C, v, y, tmp);
        c.get(po).get(y);
        if (scalar) c.lane(o.extract, 0).mem(o.store, o.align);
        else c.simdMem(Simd.v128_store, 0);
        const adv = scalar ? o.e : 16;
        c.get(px).i32(adv).op(Op.i32_add).set(px);
        c.get(po).i32(adv).op(Op.i32_add).set(po);
        c.get(j).i32(scalar ? 1 : o.lanes).op(Op.i32_add).set(j);
      };
      c.while(() => c.get(j).i32(o.lanes).op(Op.i32_add).get(jEnd).op(Op.i32_le_s), () => body(false));
      c.while(() => c.get(j).get(jEnd).op(Op.i32_lt_s), () => body(true));
      c.get(r).i32(1).op(Op.i32_add).set(r);
    });
  }, exportName(k, rounding, scaled));
}

const exportName = (k: Kind, rounding: Rounding, scaled: boolean) => `fpRound_${k}_${rounding}${scaled ? '_s' : ''}`;

export function emitFpRound(mb: ModuleBuilder): void {
  for (const k of ['f32', 'f64'] as const) {
    for (const rounding of ['halfEven', 'halfAway', 'floor'] as const) {
      for (const scaled of [false, true]) emitKernel(mb, k, rounding, scaled);
    }
  }
}

/** ⌊log2 a⌋ for a > 0, exactly. */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  return e;
}

/**
 * The bounds of p = 2^e, or null where a power of two the kernel forms would leave the dtype's
 * normal range (then js runs it): 2^emin, 2^cap, 2^(M − e) for e in [emin, cap], and 2^±M.
 */
function exponentRange(k: Kind, p: FpRoundParams): { lo: number; hi: number } | null {
  const [minE, maxE] = k === 'f32' ? [-126, 127] : [-1022, 1023];
  const { mantissaBits: M, minExponent: emin } = p;
  const cap = Math.max(exponentOf(p.max) + 1, emin);
  const ok = (e: number) => Number.isInteger(e) && e >= minE && e <= maxE;
  if (!(ok(emin) && ok(cap) && ok(M) && ok(-M) && ok(M - emin) && ok(M - cap))) return null;
  if (k === 'f32' && Math.fround(p.max) !== p.max) return null;
  return { lo: 2 ** emin, hi: 2 ** cap };
}

/**
 * The rows of the call: with a scale, per tensor (any row split) or per row of the last dim (rows
 * of that length, each row's scale read through `at`); null for a scale varying along the last dim.
 */
function rowsOf(s: Arg | undefined, shape: readonly number[], n: number, split: number): { rowLength: number; scaleAt: ((r: number) => number) | null } | null {
  const perTensor = !s || shape.every((d, i) => d === 1 || s.strides[i] === 0);
  if (perTensor) {
    // contiguous runs of about n / split elements, whole vectors but for the last
    const rowLength = split > 1 ? Math.ceil(n / split / 4) * 4 : Math.max(n, 1);
    return { rowLength, scaleAt: s ? () => s.offset : null };
  }
  const last = shape.length - 1;
  if (shape[last] !== 1 && s.strides[last] !== 0) return null;
  const rowOffsets = offsets({ shape: shape.slice(0, last), strides: s.strides.slice(0, last), offset: s.offset });
  return { rowLength: shape[last]!, scaleAt: (r) => rowOffsets[r]! };
}

export function fpRoundWasm(engine: Engine, inputs: readonly Arg[], out: Arg, p: FpRoundParams): boolean {
  const [x, s] = inputs as [Arg, Arg | undefined];
  const dtype = out.dtype;
  if (dtype !== 'float32' && dtype !== 'float64') return false;
  if (!inputs.every((a) => a.dtype === dtype) || inputs.length !== (p.scale ? 2 : 1)) return false;
  const k: Kind = dtype === 'float32' ? 'f32' : 'f64';
  const range = exponentRange(k, p);
  const n = numel(out.shape);
  if (!range || n < MIN_ELEMENTS) return false;
  const e = V[k].e;
  const direct = engine.addressOf(out);
  const contiguous = isContiguous(x.shape, x.strides);
  const xIn = contiguous ? engine.inPlace(x, direct >= 0 ? out : undefined) : -1;
  const threaded = engine.threads > 1 && n >= PARALLEL_MIN && direct >= 0 && xIn >= 0;
  const rows = rowsOf(s, out.shape, n, threaded ? 4 * engine.threads : 1);
  if (!rows) return false;
  const R = Math.ceil(n / rows.rowLength);
  // scratch: the rows' scales, then x when it is copied in, then out when it is copied out
  const align = (b: number) => Math.ceil(b / 16) * 16;
  const scalesAt = engine.scratch;
  const xAt = scalesAt + align((rows.scaleAt ? R : 0) * e);
  const outAt = xAt + (xIn >= 0 ? 0 : align(n * e));
  if (!engine.reserve(outAt + (direct >= 0 ? 0 : n * e) - engine.scratch)) return false;
  const view = k === 'f32' ? engine.f32 : engine.f64;
  if (rows.scaleAt) for (let r = 0; r < R; r++) view[scalesAt / e + r] = s!.data[rows.scaleAt(r)]!;
  if (xIn < 0) {
    if (contiguous) engine.stageIn(x.data, x.offset, x.offset + n, view, xAt);
    else {
      const ix = offsets(x);
      for (let i = 0; i < n; i++) view[xAt / e + i] = x.data[ix[i]!]!;
      if (!engine.heap.resident(x.data)) engine.stagedIn += n * e;
    }
  }
  const rowsPerTask = threaded ? Math.ceil(R / (4 * engine.threads)) : R;
  const words = engine.i32;
  const w = ARGS / 4;
  words[w + W.x] = xIn >= 0 ? xIn : xAt;
  words[w + W.out] = direct >= 0 ? direct : outAt;
  words[w + W.scales] = scalesAt;
  words[w + W.n] = n;
  words[w + W.rowLength] = rows.rowLength;
  words[w + W.rows] = R;
  words[w + W.rowsPerTask] = rowsPerTask;
  const M = p.mantissaBits;
  engine.f64.set([range.lo, range.hi, 2 ** M, 2 ** -M, p.max], (ARGS + F64_AT) / 8);
  engine.parallel(exportName(k, p.rounding, rows.scaleAt !== null), ARGS, Math.ceil(R / rowsPerTask), threaded);
  if (direct < 0) engine.stageOut(out, view, outAt, n);
  return true;
}
