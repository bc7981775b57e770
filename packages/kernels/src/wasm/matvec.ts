/**
 * @file wasm float32 matvec: x·Wᵀ with a few rows of x and W row-major [N, K], read where W lives
 * (SIMD dot products along K, four rows of W at a time). matmul.ts hands it the products it fits;
 * the general packed matmul is simd-matmul.ts.
 *
 * Why a path of its own: the general matmul packs its B operand on every call, and for x·Wᵀ that
 * is a transposing pass over all of W, as long as the product itself when x has one row. Here each
 * element of W is read once, in place, in the order it is stored: one row of x, 1 thread, CPU time
 * per linear() call (medians of 5 × 5 rounds): 4096 × 4096 11.0 → 4.4 ms (~15–19 GB/s of W,
 * the memory's pace here), 384 × 128 25.7 → 12.2 µs, 128 × 384 20.1 → 7.2 µs.
 *
 * Each output is Σ over k in steps of four (one f32x4 accumulator a row, lanes (a0 + a2) + (a1 +
 * a3)), then the K mod 4 tail in scalars: the same for a row whichever task or block of rows runs
 * it, so results never depend on the thread count.
 */
import type { KernelArg } from '../backend.js';
import type { TypedArray } from '../names.js';
import { type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { horizontalSum } from './packed.js';
import { ARGS, type Engine, type Flavor } from './runtime.js';

type Arg = KernelArg<TypedArray>;

/** Rows of x up to which a product x·Wᵀ runs here (each further row reads W again, from cache or memory). */
export const MATVEC_MAX_ROWS = 4;
/** Multiply-adds from which rows of W are split over the pool (as packedMatmul: waking it costs tens of µs). */
const PARALLEL_MIN_MACS = 1 << 18;

/** Words of the argument block (i32 at ARGS; pointers and row strides in bytes). */
const enum W {
  x, xRow, m, w, wRow, n, k, out, outRow, rowsPerTask,
}

/** Task export `matvec_f32(arg, t)`: outputs [t·rowsPerTask, …) (rows of W) for every row of x. */
export function emitMatvec(mb: ModuleBuilder, flavor: Flavor): void {
  const P = ValType.i32;
  const V = ValType.v128;
  mb.func([P, P], [], (c) => {
    const [arg, task] = [0, 1];
    const [x, xRow, M, w, wRow, N, K, out, outRow, j, j1, m, xp, xEnd, k4] = Array.from({ length: 15 }, () => c.local(P));
    const wp = Array.from({ length: 4 }, () => c.local(P));
    const acc = Array.from({ length: 4 }, () => c.local(V));
    const t = Array.from({ length: 4 }, () => c.local(ValType.f32));
    const xv = c.local(V);
    const xs = c.local(ValType.f32);
    const word = (k: W) => c.get(arg).mem(Op.i32_load, 2, k * 4);
    const pairs: [number, W][] = [[x, W.x], [xRow, W.xRow], [M, W.m], [w, W.w], [wRow, W.wRow], [N, W.n], [K, W.k], [out, W.out], [outRow, W.outRow]];
    for (const [l, k] of pairs) word(k).set(l);
    c.get(task);
    word(W.rowsPerTask).op(Op.i32_mul).set(j);
    c.get(j);
    word(W.rowsPerTask).op(Op.i32_add).set(j1);
    c.get(j1).get(N).get(j1).get(N).op(Op.i32_lt_u).op(Op.select).set(j1);
    c.get(K).i32(-4).op(Op.i32_and).set(k4);

    /** Outputs j … j + R − 1 of every row of x, then j += R. */
    const rows = (R: number) => {
      c.for(m, () => c.i32(0), () => c.get(M), 1, () => {
        c.get(x).get(m).get(xRow).op(Op.i32_mul).op(Op.i32_add).set(xp);
        c.get(xp).get(k4).i32(2).op(Op.i32_shl).op(Op.i32_add).set(xEnd);
        for (let r = 0; r < R; r++) {
          c.get(w).get(j).i32(r).op(Op.i32_add).get(wRow).op(Op.i32_mul).op(Op.i32_add).set(wp[r]!);
          c.i32(0).simd(Simd.i32x4_splat).set(acc[r]!);
        }
        c.while(() => c.get(xp).get(xEnd).op(Op.i32_lt_u), () => {
          c.get(xp).simdMem(Simd.v128_load, 0).set(xv);
          for (let r = 0; r < R; r++) {
            const a = acc[r]!;
            if (flavor.relaxed) c.get(wp[r]!).simdMem(Simd.v128_load, 0).get(xv).get(a).simd(Simd.f32x4_relaxed_madd).set(a);
            else c.get(a).get(wp[r]!).simdMem(Simd.v128_load, 0).get(xv).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).set(a);
            c.get(wp[r]!).i32(16).op(Op.i32_add).set(wp[r]!);
          }
          c.get(xp).i32(16).op(Op.i32_add).set(xp);
        });
        for (let r = 0; r < R; r++) c.f32(0).set(t[r]!);
        c.get(xEnd).get(K).get(k4).op(Op.i32_sub).i32(2).op(Op.i32_shl).op(Op.i32_add).set(xEnd);
        c.while(() => c.get(xp).get(xEnd).op(Op.i32_lt_u), () => {
          c.get(xp).mem(Op.f32_load, 2).set(xs);
          for (let r = 0; r < R; r++) {
            c.get(t[r]!).get(xs).get(wp[r]!).mem(Op.f32_load, 2).op(Op.f32_mul).op(Op.f32_add).set(t[r]!);
            c.get(wp[r]!).i32(4).op(Op.i32_add).set(wp[r]!);
          }
          c.get(xp).i32(4).op(Op.i32_add).set(xp);
        });
        for (let r = 0; r < R; r++) {
          c.get(out).get(m).get(outRow).op(Op.i32_mul).op(Op.i32_add).get(j).i32(r).op(Op.i32_add).i32(2).op(Op.i32_shl).op(Op.i32_add);
          horizontalSum(c, acc[r]!);
          c.get(t[r]!).op(Op.f32_add).mem(Op.f32_store, 2);
        }
      });
      c.get(j).i32(R).op(Op.i32_add).set(j);
    };
    c.while(() => c.get(j).i32(4).op(Op.i32_add).get(j1).op(Op.i32_le_u), () => rows(4));
    c.while(() => c.get(j).get(j1).op(Op.i32_lt_u), () => rows(1));
  }, 'matvec_f32');
}

/**
 * Runs out = a·b on matvec_f32 when it fits: float32, a [M ≤ 4, K] with contiguous rows, b = Wᵀ
 * of a row-major W [N, K] that lives in wasm memory (b's k stride 1). False otherwise (matmul.ts
 * goes on with its general path). a is staged into scratch unless it lives in wasm memory too.
 */
export function matvecWasm(engine: Engine, a: Arg, b: Arg, out: Arg, M: number, N: number, K: number): boolean {
  if (out.dtype !== 'float32' || M > MATVEC_MAX_ROWS) return false;
  const [sam, sak] = [a.strides[a.strides.length - 2]!, a.strides[a.strides.length - 1]!];
  const [sbk, sbn] = [b.strides[b.strides.length - 2]!, b.strides[b.strides.length - 1]!];
  const wAt = engine.addressOf(b);
  if (wAt < 0 || sbk !== 1 || sbn < 0 || sak !== 1 || sam < 0) return false;
  const outAt = engine.addressOf(out);
  const overlaps = (x: Arg) => engine.addressOf(x) >= 0 && engine.inPlace(x, out) < 0;
  const direct = outAt >= 0 && !overlaps(b);
  const xIn = overlaps(a) ? -1 : engine.addressOf(a);
  const xBytes = xIn >= 0 ? 0 : Math.ceil((M * K * 4) / 64) * 64;
  if (!engine.reserve(xBytes + (direct ? 0 : M * N * 4))) return false;
  const xAt = xIn >= 0 ? xIn : engine.scratch;
  if (xIn < 0) for (let m = 0; m < M; m++) engine.stageIn(a.data, a.offset + m * sam, a.offset + m * sam + K, engine.f32, xAt + m * K * 4);
  const outPtr = direct ? outAt : engine.scratch + xBytes;
  const threaded = engine.threads > 1 && M * N * K >= PARALLEL_MIN_MACS;
  // blocks of four rows, eight tasks a thread for balance; the split never changes a result
  const rowsPerTask = threaded ? Math.max(4, Math.ceil(N / (engine.threads * 8) / 4) * 4) : N;
  const args = engine.i32;
  const words: [W, number][] = [
    [W.x, xAt], [W.xRow, (xIn >= 0 ? sam : K) * 4], [W.m, M], [W.w, wAt], [W.wRow, sbn * 4], [W.n, N], [W.k, K],
    [W.out, outPtr], [W.outRow, N * 4], [W.rowsPerTask, rowsPerTask],
  ];
  for (const [k, v] of words) args[ARGS / 4 + k] = v;
  engine.parallel('matvec_f32', ARGS, Math.ceil(N / rowsPerTask), threaded);
  if (!direct) engine.stageOut(out, engine.f32, outPtr, M * N);
  return true;
}
