/**
 * @file wasm `sparse24Matmul` (float32): x [N, K] times a 2:4 weight read in its compressed form
 * (kept values [O, K/2], 2-bit positions), f32x4. Wasm SIMD has no gather, so each index byte (the
 * positions of four kept values: two groups of four inputs) selects a 16-byte `i8x16.swizzle`
 * mask from a 256-entry table, and the four x values the kept weights meet are picked out of the
 * two groups' x vectors by two swizzles and a shuffle; then one multiply-add with the four values.
 * The masks' indices are all < 16, so relaxed SIMD's swizzle (a bare pshufb on x64, where the
 * plain one also fixes up indices ≥ 16: measured 3× slower per chunk here) gives the same bytes.
 * Weight rows are split over the thread pool. float64 runs on the js oracle (js/sparse24.ts, which
 * also holds the operand checks).
 *
 * Equality with the oracle: the oracle sums in float64 and rounds once; this kernel sums in
 * float32 (two f32x4 accumulators over alternate chunks, lanes folded as (a0 + a2) + (a1 + a3),
 * then the scalar tail and the bias), so it agrees within float32 summation error,
 * |Δ| ≤ (K/2 + 4)·2⁻²⁴·(Σ|v·x| + |b|), not bit for bit. The order is fixed per output: neither
 * the thread count nor the other rows of x change a result (a batched row equals that row alone).
 */
import type { KernelArg } from '../backend.js';
import { sparse24Operands } from '../js/sparse24.js';
import type { Sparse24MatmulParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { align16, horizontalSum, PARALLEL_MIN_MACS, placeOperands, range, stageOperands } from './packed.js';
import { ARGS, type Engine, type Flavor } from './runtime.js';
import { transpose4 } from './simd-matmul.js';

type Arg = KernelArg<TypedArray>;

/** Words of the argument block (i32 at ARGS; pointers in bytes). */
const enum W {
  x, values, indices, masks, bias, out, n, k, o, rowsPerTask, hasBias,
  /** Whole panels of PANEL rows of x (0: every row takes the gather path) and where they are packed. */
  panels, packed,
}

/** Rows of x a weight row is dotted with at once on the gather path (its mask and values loaded once for all). */
const ROWS = 4;
/** Rows of x in a packed panel: two f32x4 per input, one lane per row. */
const PANEL = 8;

/**
 * The swizzle masks, 16 bytes for each index byte b: lane l takes bytes 4·p … 4·p + 3 (float p)
 * of a group's x vector, p = (b >> 2l) & 3. Both groups' vectors are swizzled with the same mask
 * and lanes 0–1 of the first joined to lanes 2–3 of the second by a shuffle.
 */
const MASKS = (() => {
  const m = new Uint8Array(256 * 16);
  for (let b = 0; b < 256; b++) {
    for (let l = 0; l < 4; l++) {
      const p = (b >> (2 * l)) & 3;
      for (let i = 0; i < 4; i++) m[16 * b + 4 * l + i] = 4 * p + i;
    }
  }
  return m;
})();

/**
 * Task export `sparse24_pack(arg, t)`: rows 8t … 8t + 7 of x into panel t, input-major: input k
 * is 32 bytes at packed + (t·K + k)·32, row r in lane r % 4 of vector r / 4 (4×4 transposes).
 */
function emitPack(mb: ModuleBuilder): void {
  const P = ValType.i32;
  mb.func([P, P], [], (c: Code) => {
    const [arg, task] = [0, 1];
    const [src, dst, K, k] = range(4, () => c.local(P));
    const q = range(4, () => c.local(ValType.v128));
    const t = range(4, () => c.local(ValType.v128));
    const word = (w: W) => c.get(arg).mem(Op.i32_load, 2, w * 4);
    word(W.k).set(K);
    word(W.x).get(task).i32(PANEL).op(Op.i32_mul).get(K).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(src);
    word(W.packed).get(task).get(K).op(Op.i32_mul).i32(5).op(Op.i32_shl).op(Op.i32_add).set(dst);
    c.for(k, () => c.i32(0), () => c.get(K), 4, () => {
      for (const half of [0, 1]) {
        for (let r = 0; r < 4; r++) c.get(src).get(K).i32(4 * half + r).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).simdMem(Simd.v128_load, 0).set(q[r]!);
        transpose4(c, q, t);
        for (let i = 0; i < 4; i++) c.get(dst).get(q[i]!).simdMem(Simd.v128_store, 0, 32 * i + 16 * half);
      }
      c.get(src).i32(16).op(Op.i32_add).set(src);
      c.get(dst).i32(128).op(Op.i32_add).set(dst);
    });
  }, 'sparse24_pack');
}

/**
 * Task export `sparse24_f32(arg, t)`: output columns [t·rowsPerTask, …) (weight rows), first for
 * the packed panels (eight rows of x per weight row: each kept value splat once and multiplied
 * into two vectors of its input's eight x values, addressed from its 2-bit position), then for the
 * rows past them (ROWS rows of x at a time, then one: x gathered by swizzles). Both paths add the
 * same products in the same order into each output (kept value j of a chunk of four into lane or
 * accumulator j, chunks in order, folded (0 + 2) + (1 + 3), then the K ≡ 4 mod 8 tail and the bias),
 * so a row's result does not depend on the path, the batch or the thread count.
 */
function emitTask(mb: ModuleBuilder, relaxed: boolean): void {
  const fma = relaxed;
  const P = ValType.i32;
  const V = ValType.v128;
  mb.func([P, P], [], (c: Code) => {
    const [arg, task] = [0, 1];
    const [x, values, indices, masks, bias, out, N, K, O, hasBias, panels, packed] = range(12, () => c.local(P));
    const [o, o1, o0, half, chunks, e0, ib, shifted, vrow, n, ci, ip, vp, e, pp, b, blk] = range(17, () => c.local(P));
    const xps = range(ROWS, () => c.local(P));
    const [m, w] = range(2, () => c.local(V));
    // every mask index is < 16, where relaxed swizzle (one pshufb on x64) is exact
    const swizzle = relaxed ? Simd.i8x16_relaxed_swizzle : Simd.i8x16_swizzle;
    const acc = range(2 * ROWS, () => c.local(V));
    const ts = range(ROWS, () => c.local(ValType.f32));
    const word = (k: W) => c.get(arg).mem(Op.i32_load, 2, k * 4);
    const pairs: [number, W][] = [[x, W.x], [values, W.values], [indices, W.indices], [masks, W.masks], [bias, W.bias], [out, W.out], [N, W.n], [K, W.k], [O, W.o], [hasBias, W.hasBias], [panels, W.panels], [packed, W.packed]];
    for (const [l, k] of pairs) word(k).set(l);
    c.get(K).i32(1).op(Op.i32_shr_u).set(half);
    c.get(K).i32(3).op(Op.i32_shr_u).set(chunks);
    c.get(task);
    word(W.rowsPerTask).op(Op.i32_mul).tee(o0);
    word(W.rowsPerTask).op(Op.i32_add).set(o1);
    c.get(o1).get(O).get(o1).get(O).op(Op.i32_lt_u).op(Op.select).set(o1);

    /** acc ⊕= a·b for two pushers (a·b + acc with relaxed FMA, else acc + a·b: the same products either way). */
    const madd = (q: number, a: () => void, bv: () => void) => {
      if (!fma) c.get(q);
      a();
      bv();
      if (fma) c.get(q).simd(Simd.f32x4_relaxed_madd).set(q);
      else c.simd(Simd.f32x4_mul).simd(Simd.f32x4_add).set(q);
    };
    /** Pushes the index byte of the chunk at ip: four 2-bit positions (a row starting mid-byte straddles two bytes). */
    const indexByte = (straddles: boolean) => {
      c.get(ip).mem(Op.i32_load8_u, 0);
      if (!straddles) return;
      c.i32(4).op(Op.i32_shr_u);
      c.get(ip).mem(Op.i32_load8_u, 0, 1).i32(4).op(Op.i32_shl).i32(0xf0).op(Op.i32_and).op(Op.i32_or);
    };
    /** For the weight row o: its first kept value e0, index bytes ib, whether they start mid-byte, values vrow. */
    const rowStart = () => {
      c.get(o).get(half).op(Op.i32_mul).set(e0);
      c.get(indices).get(e0).i32(2).op(Op.i32_shr_u).op(Op.i32_add).set(ib);
      // half is even, so a row starts at bit 0 or bit 4 of its first byte
      c.get(e0).i32(2).op(Op.i32_and).set(shifted);
      c.get(values).get(e0).i32(2).op(Op.i32_shl).op(Op.i32_add).set(vrow);
    };
    /** Every whole chunk of the row, for both alignments of its index bytes. */
    const allChunks = (chunk: (straddles: boolean) => void) => {
      c.get(ib).set(ip);
      c.get(vrow).set(vp);
      c.get(shifted).if();
      c.for(ci, () => c.i32(0), () => c.get(chunks), 1, () => chunk(true));
      c.op(Op.else);
      c.for(ci, () => c.i32(0), () => c.get(chunks), 1, () => chunk(false));
      c.end();
    };
    /** K ≡ 4 (mod 8): the last group keeps its two values past the whole chunks; `add(j, pos4)` takes value j at byte offset pos·4 of its group. */
    const tail = (add: (j: number, pos4: number) => void) => {
      c.get(half).i32(2).op(Op.i32_and).if();
      for (const j of [0, 1]) {
        c.get(e0).get(chunks).i32(2).op(Op.i32_shl).op(Op.i32_add).i32(j).op(Op.i32_add).set(e);
        // e's position: 2 bits at bit 2·(e & 3) of byte e >> 2, times 4 bytes
        c.get(indices).get(e).i32(2).op(Op.i32_shr_u).op(Op.i32_add).mem(Op.i32_load8_u, 0);
        c.get(e).i32(3).op(Op.i32_and).i32(1).op(Op.i32_shl).op(Op.i32_shr_u).i32(3).op(Op.i32_and).i32(2).op(Op.i32_shl).set(ci);
        add(j, ci);
      }
      c.end();
    };

    // ---- packed panels: accumulators acc[2j], acc[2j + 1] hold kept value j of each chunk times rows 0–3, 4–7
    const [splat, tl, th] = [m, w, c.local(V)];
    const panelRow = () => {
      for (const q of acc) c.i32(0).simd(Simd.i32x4_splat).set(q);
      c.get(packed).get(blk).get(K).op(Op.i32_mul).i32(5).op(Op.i32_shl).op(Op.i32_add).set(pp);
      allChunks((straddles) => {
        indexByte(straddles);
        c.set(b);
        for (let j = 0; j < 4; j++) {
          // input 4·(group) + position: byte offset 32·pos (+ 128 for the chunk's second group)
          c.get(pp).get(b);
          if (j) c.i32(2 * j).op(Op.i32_shr_u);
          c.i32(3).op(Op.i32_and).i32(5).op(Op.i32_shl).op(Op.i32_add).set(e);
          c.get(vp).simdMem(Simd.v128_load32_splat, 2, 4 * j).set(splat);
          const off = j >= 2 ? 128 : 0;
          madd(acc[2 * j]!, () => c.get(splat), () => c.get(e).simdMem(Simd.v128_load, 0, off));
          madd(acc[2 * j + 1]!, () => c.get(splat), () => c.get(e).simdMem(Simd.v128_load, 0, off + 16));
        }
        c.get(ip).i32(1).op(Op.i32_add).set(ip);
        c.get(vp).i32(16).op(Op.i32_add).set(vp);
        c.get(pp).i32(256).op(Op.i32_add).set(pp);
      });
      for (const h of [0, 1]) {
        // (a0 + a2) + (a1 + a3), as the gather path's horizontal sum
        c.get(acc[h]!).get(acc[4 + h]!).simd(Simd.f32x4_add).get(acc[2 + h]!).get(acc[6 + h]!).simd(Simd.f32x4_add).simd(Simd.f32x4_add).set(acc[h]!);
      }
      // the tail as the gather path adds it: t = (0 + v0·x0) + v1·x1, then s + t
      c.i32(0).simd(Simd.i32x4_splat).set(tl);
      c.i32(0).simd(Simd.i32x4_splat).set(th);
      tail((j, pos4) => {
        c.get(vp).simdMem(Simd.v128_load32_splat, 2, 4 * j).set(splat);
        // pos4 = 4·pos; the panel holds 32 bytes per input
        c.get(pp).get(pos4).i32(3).op(Op.i32_shl).op(Op.i32_add).set(e);
        c.get(tl).get(splat).get(e).simdMem(Simd.v128_load, 0).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).set(tl);
        c.get(th).get(splat).get(e).simdMem(Simd.v128_load, 0, 16).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).set(th);
      });
      c.get(acc[0]!).get(tl).simd(Simd.f32x4_add).set(acc[0]!);
      c.get(acc[1]!).get(th).simd(Simd.f32x4_add).set(acc[1]!);
      c.get(hasBias).if();
      c.get(bias).get(o).i32(2).op(Op.i32_shl).op(Op.i32_add).simdMem(Simd.v128_load32_splat, 2).set(splat);
      c.get(acc[0]!).get(splat).simd(Simd.f32x4_add).set(acc[0]!);
      c.get(acc[1]!).get(splat).simd(Simd.f32x4_add).set(acc[1]!);
      c.end();
      for (let r = 0; r < PANEL; r++) {
        c.get(out).get(blk).i32(PANEL).op(Op.i32_mul).i32(r).op(Op.i32_add).get(O).op(Op.i32_mul).get(o).op(Op.i32_add).i32(2).op(Op.i32_shl).op(Op.i32_add);
        c.get(acc[r >> 2]!).lane(Simd.f32x4_extract_lane, r & 3).mem(Op.f32_store, 2);
      }
    };
    // panel outermost: its 32·K bytes stay in L1 while the task's weight rows stream past
    c.for(blk, () => c.i32(0), () => c.get(panels), 1, () => {
      c.get(o0).set(o);
      c.while(() => c.get(o).get(o1).op(Op.i32_lt_u), () => {
        rowStart();
        panelRow();
        c.get(o).i32(1).op(Op.i32_add).set(o);
      });
    });

    // ---- gather path for the rows past the panels: acc[r] holds kept value j of each chunk in lane j
    /** One chunk (four kept values, eight inputs) for R rows of x. */
    const chunk = (R: number, straddles: boolean) => {
      c.get(masks);
      indexByte(straddles);
      c.i32(4).op(Op.i32_shl).op(Op.i32_add).simdMem(Simd.v128_load, 0).set(m);
      c.get(vp).simdMem(Simd.v128_load, 0).set(w);
      for (let r = 0; r < R; r++) {
        madd(acc[r]!, () => {
          c.get(xps[r]!).simdMem(Simd.v128_load, 0).get(m).simd(swizzle);
          c.get(xps[r]!).simdMem(Simd.v128_load, 0, 16).get(m).simd(swizzle);
          c.shuffle32([0, 1, 6, 7]);
        }, () => c.get(w));
        c.get(xps[r]!).i32(32).op(Op.i32_add).set(xps[r]!);
      }
      c.get(ip).i32(1).op(Op.i32_add).set(ip);
      c.get(vp).i32(16).op(Op.i32_add).set(vp);
    };
    /** Outputs (n + r, o) for r < R. */
    const rows = (R: number) => {
      for (let r = 0; r < R; r++) {
        c.get(x).get(n).i32(r).op(Op.i32_add).get(K).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(xps[r]!);
        c.i32(0).simd(Simd.i32x4_splat).set(acc[r]!);
        c.f32(0).set(ts[r]!);
      }
      allChunks((straddles) => chunk(R, straddles));
      tail((j, pos4) => {
        for (let r = 0; r < R; r++) {
          c.get(ts[r]!).get(vp).mem(Op.f32_load, 2, 4 * j).get(xps[r]!).get(pos4).op(Op.i32_add).mem(Op.f32_load, 2).op(Op.f32_mul).op(Op.f32_add).set(ts[r]!);
        }
      });
      for (let r = 0; r < R; r++) {
        const a = acc[r]!;
        c.get(out).get(n).i32(r).op(Op.i32_add).get(O).op(Op.i32_mul).get(o).op(Op.i32_add).i32(2).op(Op.i32_shl).op(Op.i32_add);
        horizontalSum(c, a);
        c.get(ts[r]!).op(Op.f32_add).set(ts[r]!);
        c.get(hasBias).if();
        c.get(ts[r]!).get(bias).get(o).i32(2).op(Op.i32_shl).op(Op.i32_add).mem(Op.f32_load, 2).op(Op.f32_add).set(ts[r]!);
        c.end();
        c.get(ts[r]!).mem(Op.f32_store, 2);
      }
    };
    /** Every weight row of the task against rows n … n + R − 1 of x. */
    const weightRows = (R: number) => {
      c.get(o0).set(o);
      c.while(() => c.get(o).get(o1).op(Op.i32_lt_u), () => {
        rowStart();
        rows(R);
        c.get(o).i32(1).op(Op.i32_add).set(o);
      });
    };
    // rows of x outermost: a block of x stays in L1 while the task's weight rows stream past it
    // (weight rows outermost re-read all of x once per weight row: 5× slower at 2048 rows)
    c.get(panels).i32(PANEL).op(Op.i32_mul).set(n);
    c.while(() => c.get(n).i32(ROWS).op(Op.i32_add).get(N).op(Op.i32_le_s), () => {
      weightRows(ROWS);
      c.get(n).i32(ROWS).op(Op.i32_add).set(n);
    });
    c.while(() => c.get(n).get(N).op(Op.i32_lt_s), () => {
      weightRows(1);
      c.get(n).i32(1).op(Op.i32_add).set(n);
    });
  }, 'sparse24_f32');
}

/** Adds the `sparse24_pack` and `sparse24_f32` task exports. */
export function emitSparse24(mb: ModuleBuilder, flavor: Flavor): void {
  emitPack(mb);
  emitTask(mb, flavor.relaxed);
}

/**
 * Runs `sparse24Matmul` in wasm; false (the js oracle runs instead) for float64 or a strided x.
 * Bad operands throw from the shared checks first.
 */
export function sparse24MatmulWasm(engine: Engine, inputs: readonly Arg[], out: Arg, params: Sparse24MatmulParams): boolean {
  const { x, values, indices, bias, N, K, O } = sparse24Operands(inputs, out, params);
  if (x.dtype !== 'float32') return false;
  if (x.strides[1] !== 1 || (N > 1 && x.strides[0] !== K)) return false;
  if (N === 0 || O === 0) return true;
  const half = K / 2;
  const threaded = engine.threads > 1 && N * O * half >= PARALLEL_MIN_MACS;
  const tasks = threaded ? Math.min(O, engine.threads * 4) : 1;
  const rowsPerTask = Math.ceil(O / tasks);
  const nTasks = Math.ceil(O / rowsPerTask);
  const sizes: [Arg | null, number][] = [[x, N * K], [values, O * half], [indices, Math.ceil((O * half) / 4)], [bias, O]];
  const { place, outAt, outPtr, at } = placeOperands(engine, sizes, out, N * O);
  const masks = align16(at);
  // eight rows of x or more: whole panels of eight packed input-major (the rest gathered)
  const panels = Math.floor(N / PANEL);
  const packed = masks + MASKS.length;
  if (!engine.reserve(packed + panels * PANEL * K * 4 - engine.scratch)) return false;
  stageOperands(engine, place);
  engine.u8.set(MASKS, masks);
  const args = engine.i32;
  const word = (k: W, value: number) => (args[ARGS / 4 + k] = value);
  const [px, pv, pi, pb] = place.map((q) => q.addr) as [number, number, number, number];
  word(W.x, px);
  word(W.values, pv);
  word(W.indices, pi);
  word(W.masks, masks);
  word(W.bias, pb);
  word(W.out, outPtr);
  word(W.n, N);
  word(W.k, K);
  word(W.o, O);
  word(W.rowsPerTask, rowsPerTask);
  word(W.hasBias, bias ? 1 : 0);
  word(W.panels, panels);
  word(W.packed, packed);
  if (panels > 0) engine.parallel('sparse24_pack', ARGS, panels, threaded, { name: 'sparse24_f32', arg: ARGS, n: nTasks });
  else engine.parallel('sparse24_f32', ARGS, nTasks, threaded);
  if (outAt < 0) engine.stageOut(out, engine.f32, outPtr, N * O);
  return true;
}
