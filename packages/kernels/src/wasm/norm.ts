/**
 * @file wasm fused row kernels (f32x4): softmax / log-softmax along the last axis and their
 * backward, RMS / layer normalisation over the last axis and their backward. One task handles a
 * run of whole rows, so the thread count never changes a result. Sums accumulate in f32 lanes
 * (rows are short); float64, strided inputs and other axes stay on js.
 */
import type { KernelArg } from '../backend.js';
import { isContiguous, numel, offsets } from '../layout.js';
import { stageContiguous } from './elementwise.js';
import { stage } from './operands.js';
import type { NormParams, SoftmaxParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { ARGS, MAX_HEAP_BYTES, type Engine } from './runtime.js';
import { expF32x4 } from './simd-math.js';

type Arg = KernelArg<TypedArray>;

/** Argument words of a row job (i32 slots at ARGS; eps as f32 bits). */
const enum W { x, g, out, n, rows, perTask, flag, stats, eps, period, weight, acc, rowTable, outTable }

/** Below this many elements the copies and the call cost more than the js loop saves. */
const MIN_ELEMENTS = 1024;
/**
 * Elements from which a job is split over the thread pool — softmax only, whose exponentials make
 * it compute-bound. Measured 1 vs 2 threads (interleaved, float32): softmax 1M 3.0 → 2.0 ms, but
 * softmax backward 1M 0.70 → 1.10, RMS norm 256K 0.10 → 0.20, its backward 0.22 → 0.31, rope 256K
 * 0.11 → 0.15–0.22: the cheap row kernels are bound by the copies on the calling thread, and a
 * worker reading rows that thread just wrote pays cross-core cache traffic.
 */
const PARALLEL_MIN = 1 << 16;
const POOLED = new Set(['softmax_f32', 'softmax_bias_f32']);

const P = ValType.i32;
const F = ValType.f32;
const V = ValType.v128;

/** Emission context of one row: `simd` picks f32x4 or scalar f32 forms of each step. */
interface Row {
  c: Code;
  /** Element index local. */
  i: number;
  simd: boolean;
  /** Scratch v128 local for transcendental calls. */
  tmp: number;
}

/** Pushes x[i] (a vector of 4 from i, or one scalar) from the row that starts at local `base`. */
function ld(r: Row, base: number): void {
  r.c.get(base).get(r.i).i32(2).op(Op.i32_shl).op(Op.i32_add);
  if (r.simd) r.c.simdMem(Simd.v128_load, 0);
  else r.c.mem(Op.f32_load, 2);
}

/** Pushes the f32 local `s` (splatted in the vector form). */
function sc(r: Row, s: number): void {
  r.c.get(s);
  if (r.simd) r.c.simd(Simd.f32x4_splat);
}

type Bin = 'add' | 'sub' | 'mul' | 'max';
const VEC: Record<Bin, number> = { add: Simd.f32x4_add, sub: Simd.f32x4_sub, mul: Simd.f32x4_mul, max: Simd.f32x4_max };
const SCA: Record<Bin, number> = { add: Op.f32_add, sub: Op.f32_sub, mul: Op.f32_mul, max: Op.f32_max };
function bin(r: Row, op: Bin): void {
  if (r.simd) r.c.simd(VEC[op]);
  else r.c.op(SCA[op]);
}

/** exp of the value on the stack (the scalar form goes through lane 0, so both forms agree). */
function exp(r: Row): void {
  if (!r.simd) r.c.simd(Simd.f32x4_splat);
  r.c.set(r.tmp);
  expF32x4(r.c, r.tmp);
  if (!r.simd) r.c.lane(Simd.f32x4_extract_lane, 0);
}

/** Runs body over the row: vector steps of 4 while they fit, then scalar steps. */
function each(c: Code, i: number, n: number, tmp: number, body: (r: Row) => void): void {
  c.i32(0).set(i);
  c.while(() => c.get(i).i32(4).op(Op.i32_add).get(n).op(Op.i32_le_s), () => {
    body({ c, i, simd: true, tmp });
    c.get(i).i32(4).op(Op.i32_add).set(i);
  });
  c.while(() => c.get(i).get(n).op(Op.i32_lt_s), () => {
    body({ c, i, simd: false, tmp });
    c.get(i).i32(1).op(Op.i32_add).set(i);
  });
}

/** Sets f32 local `dst` to the sum (or max) over the row of the term `term` pushes. */
function reduceRow(c: Code, i: number, n: number, tmp: number, op: 'add' | 'max', dst: number, term: (r: Row) => void): void {
  const acc = c.local(V);
  const init = op === 'add' ? 0 : -Infinity;
  c.f32(init).simd(Simd.f32x4_splat).set(acc);
  c.f32(init).set(dst);
  each(c, i, n, tmp, (r) => {
    c.get(r.simd ? acc : dst);
    term(r);
    bin(r, op);
    c.set(r.simd ? acc : dst);
  });
  // (l0 ∘ l1) ∘ (l2 ∘ l3), then the scalar tail
  const s = SCA[op];
  c.get(acc).lane(Simd.f32x4_extract_lane, 0).get(acc).lane(Simd.f32x4_extract_lane, 1).op(s);
  c.get(acc).lane(Simd.f32x4_extract_lane, 2).get(acc).lane(Simd.f32x4_extract_lane, 3).op(s).op(s);
  c.get(dst).op(s).set(dst);
}

/** Stores the value `value` pushes into the row at local `base`. */
function mapRow(c: Code, i: number, n: number, tmp: number, base: number, value: (r: Row) => void): void {
  each(c, i, n, tmp, (r) => {
    c.get(base).get(i).i32(2).op(Op.i32_shl).op(Op.i32_add);
    value(r);
    if (r.simd) c.simdMem(Simd.v128_store, 0);
    else c.mem(Op.f32_store, 2);
  });
}

interface RowCtx {
  c: Code;
  n: number;
  i: number;
  tmp: number;
  flag: number;
  eps: number;
  stats: number;
  row: number;
  px: number;
  pg: number;
  po: number;
  /** Pushes argument word `w`. */
  word: (w: W) => void;
}

/** A task export `name(arg, t)` running `body` on rows [t·perTask, min(rows, (t+1)·perTask)). */
function emitRowTask(mb: ModuleBuilder, name: string, body: (k: RowCtx) => void): void {
  mb.func([P, P], [], (c) => {
    const [arg, t] = [0, 1];
    const [n, rows, end, row, i, flag, stats, px, pg, po, rowBytes] = Array.from({ length: 11 }, () => c.local(P));
    const eps = c.local(F);
    const tmp = c.local(V);
    const word = (w: W) => c.get(arg).mem(Op.i32_load, 2, w * 4);
    word(W.n).set(n);
    word(W.rows).set(rows);
    word(W.flag).set(flag);
    word(W.stats).set(stats);
    c.get(arg).mem(Op.f32_load, 2, W.eps * 4).set(eps);
    c.get(t);
    word(W.perTask).op(Op.i32_mul).set(row);
    c.get(row);
    word(W.perTask).op(Op.i32_add).set(end);
    c.get(end).get(rows).op(Op.i32_gt_s).if().get(rows).set(end).end();
    c.get(n).i32(2).op(Op.i32_shl).set(rowBytes);
    c.while(() => c.get(row).get(end).op(Op.i32_lt_s), () => {
      const at = (w: W, dst: number) => {
        word(w);
        c.get(row).get(rowBytes).op(Op.i32_mul).op(Op.i32_add).set(dst);
      };
      at(W.x, px);
      at(W.g, pg);
      at(W.out, po);
      body({ c, n, i, tmp, flag, eps, stats, row, px, pg, po, word });
      c.get(row).i32(1).op(Op.i32_add).set(row);
    });
  }, name);
}

export function emitNorm(mb: ModuleBuilder): void {
  // softmax: out = exp(x − m)/Σ; log (flag): stats[2·row] = m, stats[2·row + 1] = Σ, out untouched
  // softmax_bias adds a bias row (rows repeating with period W.period, base W.g) to x first, and
  // has no log form
  for (const withBias of [false, true]) {
    emitRowTask(mb, withBias ? 'softmax_bias_f32' : 'softmax_f32', ({ c, n, i, tmp, flag, stats, row, px, po, word }) => {
      const [m, s, inv, pb] = [c.local(F), c.local(F), c.local(F), c.local(P)];
      if (withBias) {
        word(W.g);
        c.get(row);
        word(W.period);
        c.op(Op.i32_rem_u).get(n).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(pb);
      }
      /** x (+ bias) at the current element(s). */
      const val = (r: Row) => {
        ld(r, px);
        if (withBias) {
          ld(r, pb);
          bin(r, 'add');
        }
      };
      reduceRow(c, i, n, tmp, 'max', m, val);
      if (!withBias) {
        c.get(flag).if();
        reduceRow(c, i, n, tmp, 'add', s, (r) => {
          val(r);
          sc(r, m);
          bin(r, 'sub');
          exp(r);
        });
        c.get(stats).get(row).i32(3).op(Op.i32_shl).op(Op.i32_add).get(m).mem(Op.f32_store, 2);
        c.get(stats).get(row).i32(3).op(Op.i32_shl).op(Op.i32_add).get(s).mem(Op.f32_store, 2, 4);
        c.op(Op.else);
      }
      // write the exponentials while summing them, then scale the row in place
      const acc = c.local(V);
      c.f32(0).simd(Simd.f32x4_splat).set(acc);
      c.f32(0).set(s);
      // a mask's −∞ lanes (x + bias = −∞) have exp(−∞ − m) = +0 whenever m > −∞ (m = −∞ or NaN
      // makes them NaN): four such lanes store +0 and add nothing, without the exponential —
      // a causal mask's upper half (same bits: +0 added to the sum's lanes leaves them as they were)
      const [finiteMax, vx] = [c.local(P), c.local(V)];
      if (withBias) c.get(m).f32(-Infinity).op(Op.f32_gt).set(finiteMax);
      each(c, i, n, tmp, (r) => {
        if (withBias && r.simd) {
          val(r);
          c.set(vx);
          c.get(finiteMax).get(vx).f32(-Infinity).simd(Simd.f32x4_splat).simd(Simd.f32x4_ne).simd(Simd.v128_any_true).op(Op.i32_eqz).op(Op.i32_and).if();
          c.get(po).get(i).i32(2).op(Op.i32_shl).op(Op.i32_add).f32(0).simd(Simd.f32x4_splat).simdMem(Simd.v128_store, 0);
          c.op(Op.else);
        }
        c.get(po).get(i).i32(2).op(Op.i32_shl).op(Op.i32_add);
        if (withBias && r.simd) c.get(vx);
        else val(r);
        sc(r, m);
        bin(r, 'sub');
        exp(r);
        const e = r.simd ? c.local(V) : c.local(F);
        c.tee(e);
        if (r.simd) c.simdMem(Simd.v128_store, 0);
        else c.mem(Op.f32_store, 2);
        c.get(r.simd ? acc : s).get(e);
        bin(r, 'add');
        c.set(r.simd ? acc : s);
        if (withBias && r.simd) c.end();
      });
      c.get(acc).lane(Simd.f32x4_extract_lane, 0).get(acc).lane(Simd.f32x4_extract_lane, 1).op(Op.f32_add);
      c.get(acc).lane(Simd.f32x4_extract_lane, 2).get(acc).lane(Simd.f32x4_extract_lane, 3).op(Op.f32_add).op(Op.f32_add);
      c.get(s).op(Op.f32_add).set(s);
      c.f32(1).get(s).op(Op.f32_div).set(inv);
      mapRow(c, i, n, tmp, po, (r) => {
        ld(r, po);
        sc(r, inv);
        bin(r, 'mul');
      });
      if (!withBias) c.end();
    });
  }
  // log-softmax's second pass: out = x − stats[row] (the row's max + log Σ, computed in JS)
  emitRowTask(mb, 'rowshift_f32', ({ c, n, i, tmp, stats, row, px, po }) => {
    const k = c.local(F);
    c.get(stats).get(row).i32(2).op(Op.i32_shl).op(Op.i32_add).mem(Op.f32_load, 2).set(k);
    mapRow(c, i, n, tmp, po, (r) => {
      ld(r, px);
      sc(r, k);
      bin(r, 'sub');
    });
  });
  // softmax backward (y in x, g): dx = y·(g − Σ g·y); log: dx = g − exp(y)·Σ g
  emitRowTask(mb, 'softmax_bwd_f32', ({ c, n, i, tmp, flag, px, pg, po }) => {
    const s = c.local(F);
    c.get(flag).if();
    reduceRow(c, i, n, tmp, 'add', s, (r) => ld(r, pg));
    mapRow(c, i, n, tmp, po, (r) => {
      ld(r, pg);
      ld(r, px);
      exp(r);
      sc(r, s);
      bin(r, 'mul');
      bin(r, 'sub');
    });
    c.op(Op.else);
    reduceRow(c, i, n, tmp, 'add', s, (r) => {
      ld(r, pg);
      ld(r, px);
      bin(r, 'mul');
    });
    mapRow(c, i, n, tmp, po, (r) => {
      ld(r, px);
      ld(r, pg);
      sc(r, s);
      bin(r, 'sub');
      bin(r, 'mul');
    });
    c.end();
  });
  /** Sets mu (0 unless layer) and rstd = 1/√(mean((x − mu)²) + eps) of the row. */
  const stats = ({ c, n, i, tmp, flag, eps, px }: RowCtx, mu: number, rstd: number) => {
    const v = c.local(F);
    c.f32(0).set(mu);
    c.get(flag).if();
    reduceRow(c, i, n, tmp, 'add', mu, (r) => ld(r, px));
    c.get(mu).get(n).op(0xb2 /* f32.convert_i32_s */).op(Op.f32_div).set(mu);
    c.end();
    reduceRow(c, i, n, tmp, 'add', v, (r) => {
      ld(r, px);
      sc(r, mu);
      bin(r, 'sub');
      const d = r.simd ? c.local(V) : c.local(F);
      c.tee(d).get(d);
      bin(r, 'mul');
    });
    c.f32(1).get(v).get(n).op(0xb2).op(Op.f32_div).get(eps).op(Op.f32_add).op(Op.f32_sqrt).op(Op.f32_div).set(rstd);
  };
  // norm: out = (x − mu)·rstd (flag: layer); norm_w: that rounded, times the weight row at
  // W.weight (the affine mul map's product, fused)
  for (const weighted of [false, true]) {
    emitRowTask(mb, weighted ? 'norm_w_f32' : 'norm_f32', (k) => {
      const { c, n, i, tmp, px, po, word } = k;
      const [mu, rstd, pw] = [c.local(F), c.local(F), c.local(P)];
      if (weighted) {
        word(W.weight);
        c.set(pw);
      }
      stats(k, mu, rstd);
      mapRow(c, i, n, tmp, po, (r) => {
        ld(r, px);
        sc(r, mu);
        bin(r, 'sub');
        sc(r, rstd);
        bin(r, 'mul');
        if (weighted) {
          ld(r, pw);
          bin(r, 'mul');
        }
      });
    });
  }
  // norm backward (x, g): dx = rstd·(g − mean(g) − y·mean(g·y)), y = (x − mu)·rstd; rms has no mean(g).
  // norm_bwd_w: the gradient arriving at the affine output, g·w (rounded as the mul map rounds it)
  // takes g's place, and each row adds g·y (rounded) into the f64 accumulators at W.acc, in row
  // order: the weight gradient as the mul map then the column sum formed it (one task, no pool)
  for (const weighted of [false, true]) {
    emitRowTask(mb, weighted ? 'norm_bwd_w_f32' : 'norm_bwd_f32', (k) => {
      const { c, n, i, tmp, flag, px, pg, po, word } = k;
      const [mu, rstd, sg, sgy, pw, pacc] = [c.local(F), c.local(F), c.local(F), c.local(F), c.local(P), c.local(P)];
      if (weighted) {
        word(W.weight);
        c.set(pw);
        word(W.acc);
        c.set(pacc);
      }
      stats(k, mu, rstd);
      const y = (r: Row) => {
        ld(r, px);
        sc(r, mu);
        bin(r, 'sub');
        sc(r, rstd);
        bin(r, 'mul');
      };
      /** The incoming gradient of the normalised row: g, or g·w. */
      const gy = (r: Row) => {
        ld(r, pg);
        if (weighted) {
          ld(r, pw);
          bin(r, 'mul');
        }
      };
      c.f32(0).set(sg);
      c.get(flag).if();
      reduceRow(c, i, n, tmp, 'add', sg, gy);
      c.get(sg).get(n).op(0xb2).op(Op.f32_div).set(sg);
      c.end();
      reduceRow(c, i, n, tmp, 'add', sgy, (r) => {
        gy(r);
        y(r);
        bin(r, 'mul');
      });
      c.get(sgy).get(n).op(0xb2).op(Op.f32_div).set(sgy);
      mapRow(c, i, n, tmp, po, (r) => {
        gy(r);
        sc(r, sg);
        bin(r, 'sub');
        y(r);
        sc(r, sgy);
        bin(r, 'mul');
        bin(r, 'sub');
        sc(r, rstd);
        bin(r, 'mul');
      });
      if (!weighted) return;
      const [v, pa] = [c.local(V), c.local(P)];
      each(c, i, n, tmp, (r) => {
        ld(r, pg);
        y(r);
        bin(r, 'mul');
        c.get(pacc).get(i).i32(3).op(Op.i32_shl).op(Op.i32_add).set(pa);
        if (r.simd) {
          c.set(v);
          for (const [half, lanes] of [[0, [0, 1, 2, 3]], [16, [2, 3, 0, 1]]] as const) {
            c.get(pa).get(pa).simdMem(Simd.v128_load, 3, half);
            c.get(v);
            if (half) c.get(v).shuffle32(lanes);
            c.simd(Simd.f64x2_promote_low_f32x4).simd(Simd.f64x2_add).simdMem(Simd.v128_store, 3, half);
          }
        } else {
          c.op(Op.f64_promote_f32);
          const t = c.local(ValType.f64);
          c.set(t);
          c.get(pa).get(pa).mem(Op.f64_load, 3).get(t).op(Op.f64_add).mem(Op.f64_store, 3);
        }
      });
    });
  }
  // rope (flag: adjoint): rows of x; table rows repeat with period W.period (x's T dim), cos at
  // W.g and sin at W.stats. Halves h = n/2 are a multiple of 4 (the caller checks).
  // A strided x (heads split off a projection: rows of n floats, in another order) is read in place
  // through W.rowTable, each row's element offset from x, instead of being copied in row order first;
  // a strided out (a gradient in such an x's layout) is written through W.outTable alike.
  // The scale (W.eps) multiplies the rotated vectors (forward) or x (adjoint): 1 leaves them as they are.
  emitRowTask(mb, 'rope_f32', ({ c, n, flag, eps, row, px, po, word }) => {
    const [h, tb, pc, ps, j] = [c.local(P), c.local(P), c.local(P), c.local(P), c.local(P)];
    const [x1, x2, c1, c2, s1, s2, k] = Array.from({ length: 7 }, () => c.local(V));
    c.get(eps).simd(Simd.f32x4_splat).set(k);
    for (const [table, base, dst] of [[W.rowTable, W.x, px], [W.outTable, W.out, po]] as const) {
      word(table);
      c.if();
      word(base);
      word(table);
      c.get(row).i32(2).op(Op.i32_shl).op(Op.i32_add).mem(Op.i32_load, 2).i32(2).op(Op.i32_shl).op(Op.i32_add).set(dst);
      c.end();
    }
    c.get(n).i32(1).op(Op.i32_shr_u).set(h);
    c.get(row);
    word(W.period);
    c.op(Op.i32_rem_u).get(n).op(Op.i32_mul).i32(2).op(Op.i32_shl).set(tb);
    word(W.g);
    c.get(tb).op(Op.i32_add).set(pc);
    word(W.stats);
    c.get(tb).op(Op.i32_add).set(ps);
    const at = (base: number, second: boolean) => {
      c.get(base).get(j).op(Op.i32_add);
      if (second) c.get(h).i32(2).op(Op.i32_shl).op(Op.i32_add);
    };
    c.for(j, () => c.i32(0), () => c.get(h).i32(2).op(Op.i32_shl), 16, () => {
      for (const [dst, base, second] of [[x1, px, false], [x2, px, true], [c1, pc, false], [c2, pc, true], [s1, ps, false], [s2, ps, true]] as const) {
        at(base, second);
        c.simdMem(Simd.v128_load, 0).set(dst);
      }
      // forward: [x₁c₁ − x₂s₁, x₂c₂ + x₁s₂]·k; adjoint of that: x ← x·k, then [x₁c₁ + x₂s₂, x₂c₂ − x₁s₁]
      c.get(flag).if();
      for (const v of [x1, x2]) c.get(v).get(k).simd(Simd.f32x4_mul).set(v);
      at(po, false);
      c.get(x1).get(c1).simd(Simd.f32x4_mul).get(x2).get(s2).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).simdMem(Simd.v128_store, 0);
      at(po, true);
      c.get(x2).get(c2).simd(Simd.f32x4_mul).get(x1).get(s1).simd(Simd.f32x4_mul).simd(Simd.f32x4_sub).simdMem(Simd.v128_store, 0);
      c.op(Op.else);
      at(po, false);
      c.get(x1).get(c1).simd(Simd.f32x4_mul).get(x2).get(s1).simd(Simd.f32x4_mul).simd(Simd.f32x4_sub).get(k).simd(Simd.f32x4_mul).simdMem(Simd.v128_store, 0);
      at(po, true);
      c.get(x2).get(c2).simd(Simd.f32x4_mul).get(x1).get(s2).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).get(k).simd(Simd.f32x4_mul).simdMem(Simd.v128_store, 0);
      c.end();
    });
  });
}

/** Argument words of one row job. */
interface RowJob {
  x: number;
  g?: number;
  out: number;
  n: number;
  rows: number;
  flag?: number;
  stats?: number;
  eps?: number;
  period?: number;
  /** The affine weight row (norm_w, norm_bwd_w). */
  weight?: number;
  /** The weight gradient's f64 accumulators (norm_bwd_w). */
  acc?: number;
  /** Each row's element offset from x, for an x whose rows are not in order (rope_f32). */
  rowTable?: number;
  /** The same for out (rope_f32). */
  outTable?: number;
}

/**
 * Writes a row job's argument words and runs task export `name` over runs of whole rows (on the
 * pool for large jobs); the partition never changes a row's result.
 */
function runRowJob(engine: Engine, name: string, job: RowJob): void {
  const total = job.rows * job.n;
  const threaded = engine.threads > 1 && total >= PARALLEL_MIN && POOLED.has(name);
  const perTask = Math.ceil(job.rows / (threaded ? Math.min(job.rows, engine.threads * 4) : 1));
  const words = engine.i32;
  const w = ARGS / 4;
  words[w + W.x] = job.x;
  words[w + W.g] = job.g ?? 0;
  words[w + W.out] = job.out;
  words[w + W.n] = job.n;
  words[w + W.rows] = job.rows;
  words[w + W.perTask] = perTask;
  words[w + W.flag] = job.flag ?? 0;
  words[w + W.stats] = job.stats ?? 0;
  engine.f32[w + W.eps] = job.eps ?? 0;
  words[w + W.period] = job.period ?? 1;
  words[w + W.weight] = job.weight ?? 0;
  words[w + W.acc] = job.acc ?? 0;
  words[w + W.rowTable] = job.rowTable ?? 0;
  words[w + W.outTable] = job.outTable ?? 0;
  engine.parallel(name, ARGS, Math.ceil(job.rows / perTask), threaded);
}

/**
 * Copies the float32 operands into the heap, runs `name` over rows of the last axis (on the pool
 * when large) and copies the result out. `then` may run further passes before the copy-out.
 */
function runRows(engine: Engine, name: string, inputs: readonly Arg[], out: Arg, flag: number, eps: number, then?: (job: RowJob) => void): boolean {
  if (out.dtype !== 'float32' || inputs.some((x) => x.dtype !== 'float32' || !isContiguous(x.shape, x.strides))) return false;
  const total = numel(out.shape);
  if (total < MIN_ELEMENTS) return false;
  const n = out.shape[out.shape.length - 1]!;
  const rows = total / n;
  const bytes = total * 4;
  const slot = Math.ceil(bytes / 16) * 16;
  const need = slot * 3 + rows * 8 + 16;
  if (need > MAX_HEAP_BYTES || !engine.reserve(need)) return false;
  const slots = [engine.scratch, engine.scratch + slot];
  const scratchOut = engine.scratch + 2 * slot;
  const statsPtr = scratchOut + slot;
  const f32 = engine.f32;
  // operands in wasm memory are read and written in place (an input overlapping out is staged)
  const direct = engine.addressOf(out);
  const ptrs = inputs.map((x, j) => {
    const p = engine.inPlace(x, direct >= 0 ? out : undefined);
    if (p >= 0) return p;
    engine.stageIn(x.data, x.offset, x.offset + total, f32, slots[j]!);
    return slots[j]!;
  });
  const outPtr = direct >= 0 ? direct : scratchOut;
  const job: RowJob = { x: ptrs[0]!, g: ptrs[1], out: outPtr, n, rows, flag, stats: statsPtr, eps };
  runRowJob(engine, name, job);
  then?.(job);
  if (direct < 0) engine.stageOut(out, engine.f32, outPtr, total);
  return true;
}

export function softmaxWasm(engine: Engine, inputs: readonly Arg[], out: Arg, { axis, log }: SoftmaxParams): boolean {
  if (axis !== out.shape.length - 1) return false;
  if (inputs.length === 2) return !log && softmaxBiasWasm(engine, inputs[0]!, inputs[1]!, out);
  return runRows(engine, 'softmax_f32', inputs, out, log ? 1 : 0, 0, log ? (job) => {
    // out = x − (max + log Σ): the log of each row's sum is one call per row, done here in f64
    const f32 = engine.f32;
    const s = job.stats! / 4;
    for (let r = 0; r < job.rows; r++) f32[s + r] = f32[s + 2 * r]! + Math.log(f32[s + 2 * r + 1]!);
    runRowJob(engine, 'rowshift_f32', job);
  } : undefined);
}

export function softmaxBackwardWasm(engine: Engine, inputs: readonly Arg[], out: Arg, { axis, log }: SoftmaxParams): boolean {
  return axis === out.shape.length - 1 && runRows(engine, 'softmax_bwd_f32', inputs, out, log ? 1 : 0, 0);
}

export function normWasm(engine: Engine, inputs: readonly Arg[], out: Arg, { kind, eps }: NormParams): boolean {
  const flag = kind === 'layer' ? 1 : 0;
  if (inputs.length === 2) return runNormWeighted(engine, inputs[0]!, null, inputs[1]!, out, flag, eps);
  return runRows(engine, 'norm_f32', inputs, out, flag, eps);
}

export function normBackwardWasm(engine: Engine, inputs: readonly Arg[], out: Arg, { kind, eps }: NormParams): boolean {
  const flag = kind === 'layer' ? 1 : 0;
  if (inputs.length === 3) return runNormWeighted(engine, inputs[0]!, inputs[1]!, inputs[2]!, out, flag, eps);
  return runRows(engine, 'norm_bwd_f32', inputs, out, flag, eps);
}

/**
 * The affine forms: norm_w (x, weight) and norm_bwd_w (x, g, weight), whose out is [rows + 1, n]:
 * dx, then the weight gradient, summed in f64 accumulators in scratch (zeroed here) and rounded
 * into out's last row. Contiguous float32 operands only; one task (the row order of the sum).
 */
function runNormWeighted(engine: Engine, x: Arg, g: Arg | null, w: Arg, out: Arg, flag: number, eps: number): boolean {
  const ins = g ? [x, g] : [x];
  if (out.dtype !== 'float32' || [...ins, w].some((a) => a.dtype !== 'float32' || !isContiguous(a.shape, a.strides))) return false;
  const n = x.shape[x.shape.length - 1]!;
  const total = numel(x.shape);
  if (total < MIN_ELEMENTS || numel(w.shape) !== n) return false;
  const rows = total / n;
  const slot = Math.ceil((total * 4) / 16) * 16;
  const wBytes = Math.ceil((n * 4) / 16) * 16;
  const need = slot * 3 + wBytes + n * 8;
  if (need > MAX_HEAP_BYTES || !engine.reserve(need)) return false;
  const [scratchOut, wAt, accAt] = [engine.scratch + 2 * slot, engine.scratch + 3 * slot, engine.scratch + 3 * slot + wBytes];
  const f32 = engine.f32;
  const direct = engine.addressOf(out);
  const ptrs = [...ins, w].map((a, j) => {
    const p = engine.inPlace(a, direct >= 0 ? out : undefined);
    if (p >= 0) return p;
    const at = j < ins.length ? engine.scratch + j * slot : wAt;
    engine.stageIn(a.data, a.offset, a.offset + numel(a.shape), f32, at);
    return at;
  });
  const outPtr = direct >= 0 ? direct : scratchOut;
  const acc = g ? accAt : undefined;
  if (acc !== undefined) engine.f64.fill(0, acc / 8, acc / 8 + n);
  runRowJob(engine, g ? 'norm_bwd_w_f32' : 'norm_w_f32', { x: ptrs[0]!, g: g ? ptrs[1] : undefined, out: outPtr, n, rows, flag, eps, weight: ptrs[ins.length]!, acc });
  if (direct < 0) engine.stageOut(out, engine.f32, outPtr, total);
  if (acc !== undefined) {
    const [a, o] = [engine.f64, out.data];
    // a float32 store rounds the f64 sum to nearest, as the column reduce's f32.demote_f64 does
    for (let q = 0; q < n; q++) o[out.offset + total + q] = a[acc / 8 + q]!;
  }
  return true;
}

/**
 * How many distinct rows a table broadcast to [..., T, n] has: T when it holds one contiguous row
 * per position, 1 when one row serves all; null for any other layout (leading dims must be
 * broadcast). Row r of a contiguous x then reads table row r mod period.
 */
function rowPeriod(a: Arg, t: number): number | null {
  const r = a.shape.length;
  const n = a.shape[r - 1]!;
  if (a.strides[r - 1] !== 1 || a.strides.slice(0, r - 2).some((s) => s !== 0)) return null;
  return a.strides[r - 2] === n ? t : a.strides[r - 2] === 0 ? 1 : null;
}

/**
 * Rotary embedding of a contiguous float32 x [..., T, D] with cos/sin tables broadcast from
 * [T, D] (or [1, D]) rows; other layouts, odd halves and float64 run on js.
 */
export function ropeWasm(engine: Engine, [x, cos, sin]: readonly Arg[], out: Arg, { transpose, scale = 1 }: { transpose: boolean; scale?: number }): boolean {
  const r = out.shape.length;
  if (r < 2 || out.dtype !== 'float32' || [x!, cos!, sin!].some((t) => t.dtype !== 'float32')) return false;
  const n = out.shape[r - 1]!;
  const t = out.shape[r - 2]!;
  const total = numel(out.shape);
  if (n % 8 || total < MIN_ELEMENTS) return false;
  // (heads split off a projection arrive transposed: runTabled puts them in row order first)
  // each table: stride 0 on the leading dims, rows of n contiguous floats, one row per position or one for all
  const period = rowPeriod(cos!, t);
  return period !== null && rowPeriod(sin!, t) === period && runTabled(engine, 'rope_f32', x!, [cos!, sin!], out, period, transpose ? 1 : 0, scale);
}

/** softmax(x + bias) for a bias of [T, n] (or [1, n]) rows broadcast over x [..., T, n]. */
function softmaxBiasWasm(engine: Engine, x: Arg, bias: Arg, out: Arg): boolean {
  const r = out.shape.length;
  if (r < 2 || out.dtype !== 'float32' || x.dtype !== 'float32' || bias.dtype !== 'float32' || !isContiguous(x.shape, x.strides)) return false;
  const n = out.shape[r - 1]!;
  const t = out.shape[r - 2]!;
  const total = numel(out.shape);
  if (total < MIN_ELEMENTS) return false;
  const period = rowPeriod(bias, t);
  return period !== null && runTabled(engine, 'softmax_bias_f32', x, [bias], out, period, 0);
}

/**
 * Runs row task `name` on a float32 x [..., T, n] with one or two tables of `period` rows (see
 * rowPeriod) passed as the job's g and stats pointers: stages x (a strided x in row order, by the
 * wasm copy) and the tables' rows, writes the result at the heap's start and copies it out.
 * `eps` is the job's f32 word (rope's scale).
 */
function runTabled(engine: Engine, name: string, x: Arg, tables: Arg[], out: Arg, period: number, flag: number, eps = 0): boolean {
  const total = numel(out.shape);
  const n = out.shape[out.shape.length - 1]!;
  const slot = Math.ceil((total * 4) / 16) * 16;
  const strided = !isContiguous(x.shape, x.strides);
  // rope reads a strided x in wasm memory in place, row by row through a table of row offsets
  const table = strided && name === 'rope_f32' && x.strides[x.strides.length - 1] === 1 && engine.addressOf(x) >= 0 ? rowOffsets(x) : null;
  if (table) {
    if (!engine.reserve(slot + table.length * 4)) return false;
    engine.i32.set(table, (engine.scratch + slot) / 4);
  } else if (strided && !stageContiguous(engine, x, engine.scratch + slot)) return false;
  const views = strided ? tables : [x, ...tables];
  const direct = engine.addressOf(out);
  // rope writes a strided out in wasm memory (rows of n contiguous floats) through its row offsets,
  // kept where out's scratch copy would go; any other strided out is js's
  const outTable = isContiguous(out.shape, out.strides) ? null : name === 'rope_f32' && direct >= 0 && out.strides[out.strides.length - 1] === 1 ? rowOffsets(out) : undefined;
  if (outTable === undefined) return false;
  if (outTable) {
    if (!engine.reserve(Math.max(slot, table ? slot + table.length * 4 : 0))) return false;
    engine.i32.set(outTable, engine.scratch / 4);
  }
  const ptrs = stage(engine, engine.scratch + (strided ? 2 : 1) * slot, views, views.map(() => 4), direct >= 0 ? out : undefined);
  if (ptrs === null) return false;
  if (strided) ptrs.unshift(table ? engine.addressOf(x) : engine.scratch + slot);
  const outPtr = direct >= 0 ? direct : engine.scratch;
  runRowJob(engine, name, { x: ptrs[0]!, g: ptrs[1], stats: ptrs[2], out: outPtr, n, rows: total / n, flag, period, eps, rowTable: table ? engine.scratch + slot : 0, outTable: outTable ? engine.scratch : 0 });
  if (direct < 0) engine.stageOut(out, engine.f32, outPtr, total);
  return true;
}

/** The last row-offset tables made (a step's few layouts recur every step), keyed by shape and strides. */
const rowTables = new Map<string, Int32Array>();

/** Element offset from x's element 0 of each row of x (its last dim contiguous), in row-major order. */
function rowOffsets(x: Arg): Int32Array {
  const r = x.shape.length;
  const k = `${x.shape.join()}|${x.strides.join()}`;
  let t = rowTables.get(k);
  if (!t) {
    t = offsets({ shape: x.shape.slice(0, r - 1), strides: x.strides.slice(0, r - 1), offset: 0 });
    if (rowTables.size >= 16) rowTables.clear();
    rowTables.set(k, t);
  }
  return t;
}
