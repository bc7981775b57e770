/**
 * @file wasm `int8Matmul`: int8 · int8 products accumulated in int32 with `i32x4.dot_i16x8_s`
 * (pmaddwd on x64: eight multiply-adds per instruction, where f32x4 FMA does four). Both operands
 * are packed, sign-extended to int16 (float32 operands quantized on the way with their lines'
 * scales), into the panels the float micro-kernel reads, with two
 * consecutive k of a row or column side by side in each 32-bit slot: a broadcast A pair dotted
 * with a B vector of four column pairs is four columns' worth of two k steps. The float driver and
 * micro-kernel (simd-matmul.ts) run unchanged over k pairs; an epilogue turns each finished tile
 * into out (int32 as is, or float32 scaled per row and column). The js oracle and the operand
 * checks are js/int8-matmul.ts.
 *
 * Why not relaxed SIMD's i32x4.relaxed_dot_i8x16_i7x16_add_s (16 multiply-adds): on Node 20
 * (V8 11.3) it validates only behind --experimental-wasm-relaxed-simd (checked: without the flag
 * `WebAssembly.validate` refuses opcode 0x113), and its second operand must fit 7 bits (x64
 * without VNNI runs it as pmaddubsw, unsigned × signed, saturating), which a full int8 grid
 * does not; exact integer results on every path matter more here.
 */
import type { KernelArg } from '../backend.js';
import { int8MatmulOperands } from '../js/int8-matmul.js';
import type { TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { kBlock } from './matmul.js';
import { ARGS, span, type Engine } from './runtime.js';
import { emitDriver, emitMicro, type Lanes, MatmulArg, type MicroShape, type TileLocals, transpose4 } from './simd-matmul.js';

type Arg = KernelArg<TypedArray>;

/** int16 pairs in 32-bit slots: splat a pair, dot with a vector of four column pairs, add. */
const I16_PAIRS: Lanes = { bytes: 4, lanes: 4, splat: Simd.v128_load32_splat, add: Simd.i32x4_add, mul: Simd.i32x4_dot_i16x8_s, madd: -1 };

/** 4×8 as for float32 (8 accumulators, 2 B vectors, the A broadcast and the dot's result). */
export const I8_TILE: MicroShape = { mr: 4, nr: 8 };

/**
 * Words after the matmul job's (MatmulArg) that the epilogue reads; `scaled` is 0 for an int32
 * out (the accumulator), 1 for float32, f32(acc)·(sᵢ·tⱼ). A plain object: a const enum initialised
 * from another module's is not a constant to esbuild (tsx), which left these NaN.
 */
const EpiArg = { scaleA: MatmulArg.count, scaleB: MatmulArg.count + 1, out: MatmulArg.count + 2, m: MatmulArg.count + 3, n: MatmulArg.count + 4, scaled: MatmulArg.count + 5 } as const;
type EpiWord = (typeof EpiArg)[keyof typeof EpiArg];

/** The packing job's argument block sits after the product's. */
const PACK_ARGS = ARGS + 256;
/** Words of the packing job; strides in bytes, pointers to element (0, 0); scales of the lines (float operands). */
const enum PackI8 {
  rawA, sam, sak, rawB, sbk, sbn, m, n, k, kc, panelsA, panelsB, dstA, dstB, mp, np, scaleA, scaleB,
}

/** Multiply-adds from which the pool is woken (as the float matmul's 128³). */
const PARALLEL_MIN_MACS = 128 ** 3;
const MC_TARGET = 96;
const NC_TARGET = 512;

const roundUp = (x: number, m: number) => Math.ceil(x / m) * m;
const align = (bytes: number) => roundUp(bytes, 64);
const range = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));

/** Bytes 0–7 of a and b interleaved (a0 b0 a1 b1 …): row k and row k + 1 into k pairs. */
const INTERLEAVE = range(16, (i) => (i >> 1) + (i & 1) * 16);

function min(c: Code, a: () => void, b: () => void): void {
  a();
  b();
  a();
  b();
  c.op(Op.i32_lt_s).op(Op.select);
}

/**
 * Pushes the int8 codes of the f32x4 on the stack with the scale vector in local s, as i32x4:
 * clamp(nearest(x / s), −127, 127), NaN → 0 (trunc_sat), the oracle's `int8Code`.
 */
function quantize4(c: Code, s: number, bound: number, negBound: number): void {
  c.get(s).simd(Simd.f32x4_div).simd(Simd.f32x4_nearest);
  c.get(negBound).simd(Simd.f32x4_max).get(bound).simd(Simd.f32x4_min).simd(Simd.i32x4_trunc_sat_f32x4_s);
}

/**
 * Task export `pack_i8(arg, t)` (int8 operands) or `pack_f32q(arg, t)` (float32 operands quantized
 * here with their lines' scales): the t-th 4-row panel of A (t < panelsA), else an 8-column panel
 * of B, as int16 k pairs, per k block [line 0 pair, line 1 pair, …] per pair, zero-padded past the
 * last line and past K. Whole panels take vector paths when k is contiguous (eight k of four lines
 * widened, then a 4×4 transpose of 32-bit pairs) or lines are (rows k and k + 1 interleaved,
 * then widened); the rest goes element by element.
 */
function emitPack(mb: ModuleBuilder, float: boolean): void {
  const P = ValType.i32;
  const e = float ? 4 : 1;
  mb.func([P, P], [], (c) => {
    const [arg, task] = [0, 1];
    const [src, ls, ks, lines, padded, dst, panel, valid, K, kc, pairs, p0, kcb, d, q, l, v, at, sc] = range(19, () => c.local(P));
    const [sv, bound, negBound] = range(3, () => c.local(ValType.v128));
    if (float) {
      c.f32(127).simd(Simd.f32x4_splat).set(bound);
      c.f32(-127).simd(Simd.f32x4_splat).set(negBound);
    }
    /** Pushes the splat scale of line (panel + extra) into sv. */
    const lineScale = (line: () => void) => {
      c.get(sc);
      line();
      c.i32(2).op(Op.i32_shl).op(Op.i32_add).simdMem(Simd.v128_load32_splat, 2).set(sv);
    };
    const quad = range(4, () => c.local(ValType.v128));
    const tmp = range(4, () => c.local(ValType.v128));
    const get = (w: PackI8) => c.get(arg).mem(Op.i32_load, 2, w * 4);
    get(PackI8.k).set(K);
    get(PackI8.kc).set(kc);
    c.get(K).i32(1).op(Op.i32_add).i32(1).op(Op.i32_shr_u).set(pairs);

    /** Pushes the address of element (line, k) from pushers of both. */
    const element = (line: () => void, k: () => void) => {
      c.get(src);
      line();
      c.get(ls).op(Op.i32_mul).op(Op.i32_add);
      k();
      c.get(ks).op(Op.i32_mul).op(Op.i32_add);
    };

    const body = (L: number) => {
      // the vector paths are written for panels of 4 or 8 lines (one or two 4-line groups, 8 bytes per row)
      if (L !== 4 && L !== 8) throw new Error(`int8Matmul: packing emits panels of 4 or 8 lines, not ${L}`);
      min(c, () => c.i32(L), () => c.get(lines).get(panel).op(Op.i32_sub));
      c.set(valid);
      c.i32(0).set(p0);
      c.while(() => c.get(p0).get(pairs).op(Op.i32_lt_s), () => {
        min(c, () => c.get(kc), () => c.get(pairs).get(p0).op(Op.i32_sub));
        c.set(kcb);
        c.get(dst).get(p0).get(padded).op(Op.i32_mul).get(panel).get(kcb).op(Op.i32_mul).op(Op.i32_add).i32(4).op(Op.i32_mul).op(Op.i32_add).set(d);
        c.i32(0).set(q);
        /** Pushes k = 2·(p0 + q) + extra. */
        const kOf = (extra: number) => c.get(p0).get(q).op(Op.i32_add).i32(1).op(Op.i32_shl).i32(extra).op(Op.i32_add);
        c.get(valid).i32(L).op(Op.i32_eq).if();
        {
          c.get(ks).i32(e).op(Op.i32_eq).if();
          // four pairs (eight k) of each line: widen (or quantize and narrow), then transpose 4 lines × 4 pairs
          c.while(() => {
            kOf(8).get(K).op(Op.i32_le_s).get(q).i32(4).op(Op.i32_add).get(kcb).op(Op.i32_le_s).op(Op.i32_and);
          }, () => {
            for (let g = 0; g < L / 4; g++) {
              for (let r = 0; r < 4; r++) {
                element(() => c.get(panel).i32(4 * g + r).op(Op.i32_add), () => kOf(0));
                if (float) {
                  c.set(at);
                  lineScale(() => c.get(panel).i32(4 * g + r).op(Op.i32_add));
                  c.get(at).simdMem(Simd.v128_load, 0);
                  quantize4(c, sv, bound, negBound);
                  c.get(at).simdMem(Simd.v128_load, 0, 16);
                  quantize4(c, sv, bound, negBound);
                  c.simd(Simd.i16x8_narrow_i32x4_s).set(quad[r]!);
                } else c.simdMem(Simd.v128_load8x8_s, 0).set(quad[r]!);
              }
              transpose4(c, quad, tmp);
              for (let p = 0; p < 4; p++) {
                c.get(d).get(q).i32(p).op(Op.i32_add).i32(L * 4).op(Op.i32_mul).op(Op.i32_add);
                c.get(quad[p]!).simdMem(Simd.v128_store, 0, 16 * g);
              }
            }
            c.get(q).i32(4).op(Op.i32_add).set(q);
          });
          c.op(Op.else);
          c.get(ls).i32(e).op(Op.i32_eq).if();
          // one pair of every line: rows k and k + 1 interleaved, widened (float: four lines at a
          // time quantized with their four scales, narrowed, 16-bit lanes interleaved)
          c.while(() => {
            kOf(2).get(K).op(Op.i32_le_s).get(q).get(kcb).op(Op.i32_lt_s).op(Op.i32_and);
          }, () => {
            element(() => c.get(panel), () => kOf(0));
            c.set(at);
            if (float) {
              for (let g = 0; g < L / 4; g++) {
                c.get(sc).get(panel).i32(2).op(Op.i32_shl).op(Op.i32_add).simdMem(Simd.v128_load, 0, 16 * g).set(sv);
                c.get(at).simdMem(Simd.v128_load, 0, 16 * g);
                quantize4(c, sv, bound, negBound);
                c.get(at).get(ks).op(Op.i32_add).simdMem(Simd.v128_load, 0, 16 * g);
                quantize4(c, sv, bound, negBound);
                c.simd(Simd.i16x8_narrow_i32x4_s);
                c.set(quad[0]!);
                c.get(d).get(q).i32(L * 4).op(Op.i32_mul).op(Op.i32_add);
                c.get(quad[0]!).get(quad[0]!);
                c.simd(Simd.i8x16_shuffle);
                for (const lane of [0, 4, 1, 5, 2, 6, 3, 7]) c.bytes.push(2 * lane, 2 * lane + 1);
                c.simdMem(Simd.v128_store, 0, 16 * g);
              }
              c.get(q).i32(1).op(Op.i32_add).set(q);
              return;
            }
            const load = L === 8 ? Simd.v128_load64_zero : Simd.v128_load32_zero;
            c.get(at).simdMem(load, 0).get(at).get(ks).op(Op.i32_add).simdMem(load, 0);
            c.simd(Simd.i8x16_shuffle);
            for (const b of INTERLEAVE) c.bytes.push(b);
            c.set(quad[0]!);
            c.get(d).get(q).i32(L * 4).op(Op.i32_mul).op(Op.i32_add).set(at);
            c.get(at).get(quad[0]!).simd(Simd.i16x8_extend_low_i8x16_s).simdMem(Simd.v128_store, 0);
            if (L === 8) c.get(at).get(quad[0]!).simd(Simd.i16x8_extend_high_i8x16_s).simdMem(Simd.v128_store, 0, 16);
            c.get(q).i32(1).op(Op.i32_add).set(q);
          });
          c.end();
          c.end();
        }
        c.end();
        // whatever is left (edges, odd K, other strides), element by element
        c.while(() => c.get(q).get(kcb).op(Op.i32_lt_s), () => {
          c.for(l, () => c.i32(0), () => c.i32(L), 1, () => {
            for (const half of [0, 1]) {
              c.i32(0).set(v);
              c.get(l).get(valid).op(Op.i32_lt_s);
              kOf(half).get(K).op(Op.i32_lt_s).op(Op.i32_and).if();
              element(() => c.get(panel).get(l).op(Op.i32_add), () => kOf(half));
              if (float) {
                c.mem(Op.f32_load, 2).simd(Simd.f32x4_splat);
                lineScale(() => c.get(panel).get(l).op(Op.i32_add));
                quantize4(c, sv, bound, negBound);
                c.lane(Simd.i32x4_extract_lane, 0).set(v);
              } else c.mem(Op.i32_load8_s, 0).set(v);
              c.end();
              c.get(d).get(q).i32(L).op(Op.i32_mul).get(l).op(Op.i32_add).i32(4).op(Op.i32_mul).op(Op.i32_add);
              c.get(v).mem(Op.i32_store16, 1, 2 * half);
            }
          });
          c.get(q).i32(1).op(Op.i32_add).set(q);
        });
        c.get(p0).get(kcb).op(Op.i32_add).set(p0);
      });
    };

    c.get(task);
    get(PackI8.panelsA).op(Op.i32_lt_u).if();
    get(PackI8.rawA).set(src);
    get(PackI8.sam).set(ls);
    get(PackI8.sak).set(ks);
    get(PackI8.m).set(lines);
    get(PackI8.mp).set(padded);
    get(PackI8.dstA).set(dst);
    get(PackI8.scaleA).set(sc);
    c.get(task).i32(I8_TILE.mr).op(Op.i32_mul).set(panel);
    body(I8_TILE.mr);
    c.op(Op.else);
    get(PackI8.rawB).set(src);
    get(PackI8.sbn).set(ls);
    get(PackI8.sbk).set(ks);
    get(PackI8.n).set(lines);
    get(PackI8.np).set(padded);
    get(PackI8.dstB).set(dst);
    get(PackI8.scaleB).set(sc);
    c.get(task);
    get(PackI8.panelsA).op(Op.i32_sub).i32(I8_TILE.nr).op(Op.i32_mul).set(panel);
    body(I8_TILE.nr);
    c.end();
  }, float ? 'pack_f32q' : 'pack_i8');
}

/** Writes the finished int32 tile's rows < M and columns < N into out, scaled or not. */
function epilogue(c: Code, t: TileLocals): void {
  const P = ValType.i32;
  const [M, N, out, sa, sb, i, j, mEnd, nEnd, crow, orow] = range(11, () => c.local(P));
  const sv = c.local(ValType.v128);
  const s = c.local(ValType.f32);
  const word = (w: EpiWord) => c.get(t.arg).mem(Op.i32_load, 2, w * 4);
  word(EpiArg.m).set(M);
  word(EpiArg.n).set(N);
  word(EpiArg.out).set(out);
  word(EpiArg.scaleA).set(sa);
  word(EpiArg.scaleB).set(sb);
  min(c, () => c.get(t.m1), () => c.get(M));
  c.set(mEnd);
  min(c, () => c.get(t.n1), () => c.get(N));
  c.set(nEnd);
  const rows = (scaled: boolean) => {
    c.for(i, () => c.get(t.m0), () => c.get(mEnd), 1, () => {
      c.get(t.c).get(i).get(t.np).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(crow);
      c.get(out).get(i).get(N).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(orow);
      if (scaled) c.get(sa).get(i).i32(2).op(Op.i32_shl).op(Op.i32_add).mem(Op.f32_load, 2).tee(s).simd(Simd.f32x4_splat).set(sv);
      const at = (base: number) => c.get(base).get(j).i32(2).op(Op.i32_shl).op(Op.i32_add);
      c.get(t.n0).set(j);
      c.while(() => c.get(j).i32(4).op(Op.i32_add).get(nEnd).op(Op.i32_le_s), () => {
        at(orow);
        at(crow).simdMem(Simd.v128_load, 0);
        if (scaled) {
          c.simd(Simd.f32x4_convert_i32x4_s);
          c.get(sv);
          at(sb).simdMem(Simd.v128_load, 0);
          c.simd(Simd.f32x4_mul).simd(Simd.f32x4_mul);
        }
        c.simdMem(Simd.v128_store, 0);
        c.get(j).i32(4).op(Op.i32_add).set(j);
      });
      c.while(() => c.get(j).get(nEnd).op(Op.i32_lt_s), () => {
        at(orow);
        at(crow).mem(Op.i32_load, 2);
        if (scaled) {
          c.op(Op.f32_convert_i32_s);
          c.get(s);
          at(sb).mem(Op.f32_load, 2);
          c.op(Op.f32_mul).op(Op.f32_mul).mem(Op.f32_store, 2);
        } else c.mem(Op.i32_store, 2);
        c.get(j).i32(1).op(Op.i32_add).set(j);
      });
    });
  };
  word(EpiArg.scaled).if();
  rows(true);
  c.op(Op.else);
  rows(false);
  c.end();
}

/** Adds the `pack_i8`, `pack_f32q` and `matmul_i8` task exports. */
export function emitInt8Matmul(mb: ModuleBuilder): void {
  emitPack(mb, false);
  emitPack(mb, true);
  emitDriver(mb, I16_PAIRS, I8_TILE, emitMicro(mb, I16_PAIRS, I8_TILE, false), 'matmul_i8', epilogue);
}

/**
 * Runs `int8Matmul` in wasm; false (the js oracle runs instead) for a float64 out, K = 0, or
 * scratch beyond the memory limit. Bad operands throw from the shared checks first.
 */
export function int8MatmulWasm(engine: Engine, inputs: readonly Arg[], out: Arg): boolean {
  const { a, b, scaleA, scaleB, M, K, N } = int8MatmulOperands(inputs, out);
  if (out.dtype === 'float64' || K === 0) return false;
  if (M === 0 || N === 0) return true;
  const { mr, nr } = I8_TILE;
  const pairs = (K + 1) >> 1;
  const kc = kBlock(pairs);
  const Mp = roundUp(M, mr);
  const Np = roundUp(N, nr);
  // operands in wasm memory are packed where they are (packing ends before any tile is written);
  // others are copied in by span
  let at = engine.scratch;
  const float = a.dtype === 'float32';
  const e = float ? 4 : 1;
  const raw = (x: Arg): { ptr: number; stage: (() => void) | null } => {
    const p = engine.addressOf(x);
    if (p >= 0) return { ptr: p, stage: null };
    const [lo, hi] = span(x);
    const here = at;
    at = align(at + (hi - lo) * e);
    return { ptr: here + (x.offset - lo) * e, stage: () => engine.stageIn(x.data, lo, hi, float ? engine.f32 : engine.u8, here) };
  };
  const scales = (s: Arg | null, n: number): { ptr: number; stage: (() => void) | null } => {
    if (!s) return { ptr: 0, stage: null };
    const p = s.strides[0] === 1 || n === 1 ? engine.inPlace(s, out) : -1;
    if (p >= 0) return { ptr: p, stage: null };
    const here = at;
    at = align(at + 4 * n);
    return {
      ptr: here,
      stage: () => {
        const f = engine.f32;
        for (let i = 0; i < n; i++) f[here / 4 + i] = s.data[s.offset + i * s.strides[0]!]!;
        if (!engine.heap.resident(s.data)) engine.stagedIn += 4 * n;
      },
    };
  };
  const places = [raw(a), raw(b), scales(scaleA, M), scales(scaleB, N)];
  const aPack = at;
  const bPack = aPack + align(Mp * pairs * 4);
  const cPtr = bPack + align(Np * pairs * 4);
  at = cPtr + align(Mp * Np * 4);
  const outAt = engine.addressOf(out);
  const outPtr = outAt >= 0 ? outAt : at;
  if (outAt < 0) at += align(M * N * 4);
  if (!engine.reserve(at - engine.scratch)) return false;
  for (const p of places) p.stage?.();

  const threaded = engine.threads > 1 && M * N * K >= PARALLEL_MIN_MACS;
  let mc = Math.min(Mp, roundUp(MC_TARGET, mr));
  let nc = Math.min(Np, roundUp(NC_TARGET, nr));
  while (threaded && Math.ceil(Mp / mc) * Math.ceil(Np / nc) < engine.threads * 8) {
    if (nc > 4 * nr && (nc >= 2 * mc || mc <= 2 * mr)) nc = roundUp(nc / 2, nr);
    else if (mc > 2 * mr) mc = roundUp(mc / 2, mr);
    else break;
  }
  const tilesM = Math.ceil(Mp / mc);
  const tilesN = Math.ceil(Np / nc);
  const args = engine.i32;
  const w = ARGS / 4;
  const product: [number, number][] = [
    [MatmulArg.a, aPack], [MatmulArg.b, bPack], [MatmulArg.c, cPtr], [MatmulArg.aBatch, 0], [MatmulArg.bBatch, 0], [MatmulArg.cBatch, 0],
    [MatmulArg.mp, Mp], [MatmulArg.np, Np], [MatmulArg.k, pairs], [MatmulArg.kc, kc], [MatmulArg.tilesM, tilesM], [MatmulArg.tilesN, tilesN],
    [MatmulArg.mc, mc], [MatmulArg.nc, nc],
    [EpiArg.scaleA, places[2]!.ptr], [EpiArg.scaleB, places[3]!.ptr], [EpiArg.out, outPtr], [EpiArg.m, M], [EpiArg.n, N], [EpiArg.scaled, scaleA ? 1 : 0],
  ];
  for (const [word, value] of product) args[w + word] = value;
  const pw = PACK_ARGS / 4;
  const pack: [PackI8, number][] = [
    [PackI8.rawA, places[0]!.ptr], [PackI8.sam, a.strides[0]! * e], [PackI8.sak, a.strides[1]! * e],
    [PackI8.rawB, places[1]!.ptr], [PackI8.sbk, b.strides[0]! * e], [PackI8.sbn, b.strides[1]! * e],
    [PackI8.m, M], [PackI8.n, N], [PackI8.k, K], [PackI8.kc, kc], [PackI8.panelsA, Mp / mr], [PackI8.panelsB, Np / nr],
    [PackI8.dstA, aPack], [PackI8.dstB, bPack], [PackI8.mp, Mp], [PackI8.np, Np], [PackI8.scaleA, places[2]!.ptr], [PackI8.scaleB, places[3]!.ptr],
  ];
  for (const [word, value] of pack) args[pw + word] = value;
  engine.parallel(float ? 'pack_f32q' : 'pack_i8', PACK_ARGS, Mp / mr + Np / nr, threaded, { name: 'matmul_i8', arg: ARGS, n: tilesM * tilesN });
  if (outAt < 0) engine.stageOut(out, out.dtype === 'int32' ? engine.i32 : engine.f32, outPtr, M * N);
  return true;
}
