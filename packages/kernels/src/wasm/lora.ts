/**
 * @file wasm `loraBackward`: a LoRA adapter's two weight gradients in one pass over the
 * activations. Per block of T tokens, with that block of x and g brought into cache first (one
 * load a cache line, in address order): hs = x·Aᵀ and gb = g·B (T × r), then dB += gᵀ·hs and
 * dA += gbᵀ·x, all four on matmul's strided micro-kernel (simd-matmul.ts) reading x and g where
 * they live. The four separate products read x and g from memory twice each. Layout of the work
 * and summation order in `loraBackwardWasm`.
 */
import type { KernelArg } from '../backend.js';
import { packedGatherOperands } from '../js/packed.js';
import { numel } from '../layout.js';
import type { KernelParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { stage } from './operands.js';
import { ARGS, MAX_HEAP_BYTES, type Engine, type Flavor } from './runtime.js';
import { emitMicroStrided, F32, F32_TILE, F64, F64_TILE, type Lanes, type MicroShape } from './simd-matmul.js';

type Arg = KernelArg<TypedArray>;

/**
 * Tokens per block: x and g of 64 tokens of a 384-wide layer (96 KiB each) stay in L2 between the
 * block's first products (which read them) and its last (which read them again). Tiny-Llama
 * shapes, n 2048, r 8, operands evicted before each call, 1 thread: 16 / 32 / 64 / 128 tokens
 * 30–31 / 27–33 / 33–36 / 36–38 GFLOP/s (loaded machine; the four matmuls 24–28).
 */
const BLOCK = 64;
/** Tokens per task (at least; a multiple of BLOCK): each task sums its own dA and dB. */
const CHUNK = 1024;
/** Multiply-adds from which the tasks go to the pool. */
const PARALLEL_MIN_MACS = 1 << 21;

/** i32 words of a call's argument block (pointers and row steps in bytes). */
const enum LoraArg {
  x, g, xRow, gRow, at, bp, main, chunk, inF, outF, rp, rm, ip, op, work, workBytes, xTail, gTail, tail, tasks,
  a, aRow, aCol, b, bRow, bCol, r, da, db, count,
}
/** Byte offset in the argument block of s (an f64). */
const SCALE_AT = 8 * 16;

/**
 * Task export `lora_backward_*(arg, t)`: tokens [t·chunk, min((t + 1)·chunk, main)) in blocks of
 * BLOCK (then, on the last task, the staged tail group of MR tokens), summed into task t's
 * dB [op, rp] and dA [rm, ip] (the task's first block stores them). Per block of tb tokens at xp, gp:
 *   hs = x·Aᵀ, gb = g·B           (A and B packed as Aᵀ [in, rp], B [out, rp], zero-padded to rp)
 *   dB += gᵀ·hs, dA += gbᵀ·x      (over the block's tokens, in token order)
 * Rows of gᵀ past out and columns of x past in read neighbouring elements (the tail is staged with
 * slack, so nothing is read past the operands): they land only in dB's padded rows and dA's padded
 * columns, which the caller drops.
 */
function emitLora(mb: ModuleBuilder, t: Lanes, s: MicroShape, micro: number, name: string): void {
  const P = ValType.i32;
  const e = t.bytes;
  mb.func([P, P], [], (c) => {
    const [arg, task] = [0, 1];
    const L = () => c.local(P);
    const [x, g, xRow, gRow, at, bp, main, inF, outF, rp, rm, ip, op, hs, gb, db, da, t0, t1, tb, xp, gp, i, j, acc, p, end, sink] = Array.from({ length: 28 }, L);
    const get = (w: LoraArg) => c.get(arg).mem(Op.i32_load, 2, w * 4);
    const words: [number, LoraArg][] = [[x, LoraArg.x], [g, LoraArg.g], [xRow, LoraArg.xRow], [gRow, LoraArg.gRow], [at, LoraArg.at], [bp, LoraArg.bp], [main, LoraArg.main], [inF, LoraArg.inF], [outF, LoraArg.outF], [rp, LoraArg.rp], [rm, LoraArg.rm], [ip, LoraArg.ip], [op, LoraArg.op]];
    for (const [local, w] of words) get(w).set(local);
    // this task's work: hs, gb [BLOCK, rp], dB [op, rp], dA [rm, ip]
    get(LoraArg.work).get(task);
    get(LoraArg.workBytes).op(Op.i32_mul).op(Op.i32_add).set(hs);
    c.get(hs).get(rp).i32(BLOCK * e).op(Op.i32_mul).op(Op.i32_add).set(gb);
    c.get(gb).get(rp).i32(BLOCK * e).op(Op.i32_mul).op(Op.i32_add).set(db);
    c.get(db).get(rp).get(op).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(da);
    const rpBytes = () => c.get(rp).i32(e).op(Op.i32_mul);
    /** One block of tb tokens (a multiple of MR) whose x rows start at xp and g rows at gp. */
    const block = (code: Code) => {
      // hs = x·Aᵀ and gb = g·B, MR tokens × NR adapter columns a tile
      code.for(i, () => code.i32(0), () => code.get(tb), s.mr, () => {
        code.for(j, () => code.i32(0), () => code.get(rp), s.nr, () => {
          const tile = (src: number, srcRow: number, packed: number, dst: number, k: number) => {
            code.get(src).get(i).get(srcRow).op(Op.i32_mul).op(Op.i32_add);
            code.get(packed).get(j).i32(e).op(Op.i32_mul).op(Op.i32_add);
            code.get(dst).get(i).get(rp).op(Op.i32_mul).get(j).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add);
            code.get(k);
            rpBytes();
            code.i32(0).get(srcRow).i32(e);
            rpBytes();
            code.call(micro);
          };
          tile(xp, xRow, at, hs, inF);
          tile(gp, gRow, bp, gb, outF);
        });
      });
      // dB += gᵀ·hs: MR outputs (g's columns, read in place) × NR adapter columns, tb steps
      code.for(i, () => code.i32(0), () => code.get(op), s.mr, () => {
        code.for(j, () => code.i32(0), () => code.get(rp), s.nr, () => {
          code.get(gp).get(i).i32(e).op(Op.i32_mul).op(Op.i32_add);
          code.get(hs).get(j).i32(e).op(Op.i32_mul).op(Op.i32_add);
          code.get(db).get(i).get(rp).op(Op.i32_mul).get(j).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add);
          code.get(tb);
          rpBytes();
          code.get(acc).i32(e).get(gRow);
          rpBytes();
          code.call(micro);
        });
      });
      // dA += gbᵀ·x: MR adapter rows × NR inputs (x's columns, read in place), tb steps
      code.for(j, () => code.i32(0), () => code.get(rm), s.mr, () => {
        code.for(i, () => code.i32(0), () => code.get(ip), s.nr, () => {
          code.get(gb).get(j).i32(e).op(Op.i32_mul).op(Op.i32_add);
          code.get(xp).get(i).i32(e).op(Op.i32_mul).op(Op.i32_add);
          code.get(da).get(j).get(ip).op(Op.i32_mul).get(i).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add);
          code.get(tb).get(ip).i32(e).op(Op.i32_mul).get(acc).i32(e);
          rpBytes();
          code.get(xRow).call(micro);
        });
      });
    };
    // tokens [t0, t1) of the main part, BLOCK at a time
    c.get(task);
    get(LoraArg.chunk).op(Op.i32_mul).set(t0);
    c.get(t0);
    get(LoraArg.chunk).op(Op.i32_add).tee(t1).get(main).get(t1).get(main).op(Op.i32_lt_s).op(Op.select).set(t1);
    c.while(() => c.get(t0).get(t1).op(Op.i32_lt_s), () => {
      c.get(t1).get(t0).op(Op.i32_sub).tee(tb).i32(BLOCK).get(tb).i32(BLOCK).op(Op.i32_lt_s).op(Op.select).set(tb);
      c.get(x).get(t0).get(xRow).op(Op.i32_mul).op(Op.i32_add).set(xp);
      c.get(g).get(t0).get(gRow).op(Op.i32_mul).op(Op.i32_add).set(gp);
      // one load per 64 bytes of the block's rows of x, then of g, before its products read them:
      // x comes back from the forward long evicted, and the products read it four rows at a time,
      // which the hardware's prefetchers follow badly; a burst of loads in address order fetches it
      // faster. A step's worth of tiny-Llama calls, 1 thread: x evicted to memory and g in cache
      // 22.2 → 18.7 ms, both in L3 20.0 → 17.8; a QLoRA step 2–5 ms less (alternating steps)
      const touch = (from: number, row: number, width: number) => {
        c.get(from).set(p);
        c.get(from).get(tb).i32(1).op(Op.i32_sub).get(row).op(Op.i32_mul).op(Op.i32_add).get(width).i32(e).op(Op.i32_mul).op(Op.i32_add).set(end);
        c.while(() => c.get(p).get(end).op(Op.i32_lt_u), () => {
          c.get(sink).get(p).mem(Op.i32_load, 2).op(Op.i32_xor).set(sink);
          c.get(p).i32(64).op(Op.i32_add).set(p);
        });
      };
      touch(xp, xRow, inF);
      touch(gp, gRow, outF);
      block(c);
      c.i32(1).set(acc);
      c.get(t0).get(tb).op(Op.i32_add).set(t0);
    });
    // the staged tail group (zero rows past n add nothing)
    get(LoraArg.tail).get(task).i32(1).op(Op.i32_add);
    get(LoraArg.tasks).op(Op.i32_eq).op(Op.i32_and).if();
    get(LoraArg.xTail).set(xp);
    get(LoraArg.gTail).set(gp);
    // the staged rows are packed
    c.get(inF).i32(e).op(Op.i32_mul).set(xRow);
    c.get(outF).i32(e).op(Op.i32_mul).set(gRow);
    c.i32(s.mr).set(tb);
    block(c);
    c.end();
    // the touched words go to this task's scratch (its hs, no longer read), so the loads stay
    c.get(hs).get(sink).mem(Op.i32_store, 2);
  }, name);
}

/**
 * `lora_pack_*(arg)`: Aᵀ [in, rp] and B [out, rp] into the call's panels, zero past column r (A and
 * B read through their strides, in bytes).
 */
function emitPack(mb: ModuleBuilder, t: Lanes, name: string): void {
  const P = ValType.i32;
  const e = t.bytes;
  const [load, store] = e === 4 ? [Op.f32_load, Op.f32_store] : [Op.f64_load, Op.f64_store];
  const al = e === 4 ? 2 : 3;
  mb.func([P], [], (c) => {
    const arg = 0;
    const get = (w: LoraArg) => c.get(arg).mem(Op.i32_load, 2, w * 4);
    const [dst, src, rows, rowStep, colStep, r, rp, i, j, d] = Array.from({ length: 10 }, () => c.local(P));
    get(LoraArg.r).set(r);
    get(LoraArg.rp).set(rp);
    /** dst[i, j] = src[i·rowStep + j·colStep] for j < r, 0 for r ≤ j < rp. */
    const panel = () => {
      c.for(i, () => c.i32(0), () => c.get(rows), 1, () => {
        c.get(dst).get(i).get(rp).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(d);
        c.for(j, () => c.i32(0), () => c.get(rp), 1, () => {
          const at = () => c.get(d).get(j).i32(e).op(Op.i32_mul).op(Op.i32_add);
          c.get(j).get(r).op(Op.i32_lt_s).if();
          at();
          c.get(src).get(i).get(rowStep).op(Op.i32_mul).op(Op.i32_add).get(j).get(colStep).op(Op.i32_mul).op(Op.i32_add).mem(load, al).mem(store, al);
          c.op(Op.else);
          at();
          if (e === 4) c.f32(0);
          else c.f64(0);
          c.mem(store, al);
          c.end();
        });
      });
    };
    /** The panel at word `to` from the matrix at word `from`, `n` rows of it, each `row` bytes apart, its elements `col` apart. */
    const pack = (to: LoraArg, from: LoraArg, n: LoraArg, row: LoraArg, col: LoraArg) => {
      for (const [local, w] of [[dst, to], [src, from], [rows, n], [rowStep, row], [colStep, col]] as const) get(w).set(local);
      panel();
    };
    // Aᵀ: row i of the panel is column i of A
    pack(LoraArg.at, LoraArg.a, LoraArg.inF, LoraArg.aCol, LoraArg.aRow);
    pack(LoraArg.bp, LoraArg.b, LoraArg.outF, LoraArg.bRow, LoraArg.bCol);
  }, name);
}

/**
 * `lora_finish_*(arg)`: dA[j, i] = s·Σ_t dA_t[j, i] and dB[o, j] = s·Σ_t dB_t[o, j] over the
 * tasks in order, from their padded sums into dA [r, in] and dB [out, r].
 */
function emitFinish(mb: ModuleBuilder, t: Lanes, name: string): void {
  const P = ValType.i32;
  const e = t.bytes;
  const F = e === 4 ? ValType.f32 : ValType.f64;
  const [load, store, add, mul] = e === 4 ? [Op.f32_load, Op.f32_store, Op.f32_add, Op.f32_mul] : [Op.f64_load, Op.f64_store, Op.f64_add, Op.f64_mul];
  const al = e === 4 ? 2 : 3;
  mb.func([P], [], (c) => {
    const arg = 0;
    const get = (w: LoraArg) => c.get(arg).mem(Op.i32_load, 2, w * 4);
    const [work, step, tasks, rows, cols, ld, from, to, i, j, k, p] = Array.from({ length: 12 }, () => c.local(P));
    const [v, sc] = [c.local(F), c.local(F)];
    c.get(arg).mem(Op.f64_load, 3, SCALE_AT);
    if (e === 4) c.op(Op.f32_demote_f64);
    c.set(sc);
    get(LoraArg.work).set(work);
    get(LoraArg.workBytes).set(step);
    get(LoraArg.tasks).set(tasks);
    /** to[i, j] (rows × cols, contiguous) = s·Σ_k sums_k[i, j] (row length ld, at `from` in each task's work). */
    const reduce = () => {
      c.for(i, () => c.i32(0), () => c.get(rows), 1, () => {
        c.for(j, () => c.i32(0), () => c.get(cols), 1, () => {
          c.get(from).get(i).get(ld).op(Op.i32_mul).get(j).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).tee(p).mem(load, al).set(v);
          c.for(k, () => c.i32(1), () => c.get(tasks), 1, () => {
            c.get(p).get(step).op(Op.i32_add).tee(p).mem(load, al).get(v).op(add).set(v);
          });
          c.get(to).get(i).get(cols).op(Op.i32_mul).get(j).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add);
          c.get(v).get(sc).op(mul).mem(store, al);
        });
      });
    };
    // dA from [rm, ip] at 2·BLOCK·rp + op·rp, dB from [op, rp] at 2·BLOCK·rp
    get(LoraArg.rp).i32(2 * BLOCK).op(Op.i32_mul).i32(e).op(Op.i32_mul).get(work).op(Op.i32_add).set(from);
    get(LoraArg.db).set(to);
    get(LoraArg.outF).set(rows);
    get(LoraArg.r).set(cols);
    get(LoraArg.rp).set(ld);
    reduce();
    get(LoraArg.op);
    get(LoraArg.rp).op(Op.i32_mul).i32(e).op(Op.i32_mul).get(from).op(Op.i32_add).set(from);
    get(LoraArg.da).set(to);
    get(LoraArg.r).set(rows);
    get(LoraArg.inF).set(cols);
    get(LoraArg.ip).set(ld);
    reduce();
  }, name);
}

/** i32 words of a loraMerge call's argument block (pointers and row steps in bytes). */
const enum MergeArg {
  b, as, c, w0, w0Row, out, outF, inF, r, op, ip, count,
}

/**
 * One strip of B·(s·A) on the micro-kernel: the tiles i of rows o … o + MR − 1, B [op, r] and
 * s·A [r, ip] packed; `cAt` pushes tile i's address in C (the merge keeps all of C, the packed
 * merge one strip). Locals hold byte pointers b, as and counts r, ip, o, i.
 */
function stripProducts(c: Code, s: MicroShape, e: number, micro: number, v: { b: number; as: number; r: number; ip: number; o: number; i: number }, cAt: () => void): void {
  const bytes = (x: number) => c.get(x).i32(e).op(Op.i32_mul);
  c.for(v.i, () => c.i32(0), () => c.get(v.ip), s.nr, () => {
    c.get(v.b).get(v.o).get(v.r).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add);
    c.get(v.as).get(v.i).i32(e).op(Op.i32_mul).op(Op.i32_add);
    cAt();
    c.get(v.r);
    bytes(v.ip);
    c.i32(0);
    bytes(v.r);
    c.i32(e);
    bytes(v.ip);
    c.call(micro);
  });
}

/**
 * `lora_merge_*(arg)`: C [op, ip] = B [op, r] · (s·A) [r, ip] (both packed, zero-padded) on the
 * micro-kernel, then out[o, i] = w0[o, i] + C[o, i] for the out × in that exist.
 */
function emitMerge(mb: ModuleBuilder, t: Lanes, s: MicroShape, micro: number, name: string): void {
  const P = ValType.i32;
  const e = t.bytes;
  const [load, store, add] = e === 4 ? [Op.f32_load, Op.f32_store, Op.f32_add] : [Op.f64_load, Op.f64_store, Op.f64_add];
  const addV = e === 4 ? Simd.f32x4_add : Simd.f64x2_add;
  mb.func([P], [], (c) => {
    const arg = 0;
    const [b, as, cc, w0, w0Row, out, outF, inF, r, op, ip, o, i, pw, pc, po, end, vend] = Array.from({ length: 18 }, () => c.local(P));
    const words: [number, MergeArg][] = [[b, MergeArg.b], [as, MergeArg.as], [cc, MergeArg.c], [w0, MergeArg.w0], [w0Row, MergeArg.w0Row], [out, MergeArg.out], [outF, MergeArg.outF], [inF, MergeArg.inF], [r, MergeArg.r], [op, MergeArg.op], [ip, MergeArg.ip]];
    for (const [local, w] of words) c.get(arg).mem(Op.i32_load, 2, w * 4).set(local);
    const bytes = (v: number) => c.get(v).i32(e).op(Op.i32_mul);
    c.for(o, () => c.i32(0), () => c.get(op), s.mr, () => {
      stripProducts(c, s, e, micro, { b, as, r, ip, o, i }, () => c.get(cc).get(o).get(ip).op(Op.i32_mul).get(i).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add));
    });
    c.for(o, () => c.i32(0), () => c.get(outF), 1, () => {
      c.get(w0).get(o).get(w0Row).op(Op.i32_mul).op(Op.i32_add).set(pw);
      c.get(cc).get(o).get(ip).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(pc);
      c.get(out).get(o).get(inF).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).tee(po);
      bytes(inF);
      c.op(Op.i32_add).tee(end).i32(15).op(Op.i32_sub).set(vend);
      const step = (p: number, n: number) => c.get(p).i32(n).op(Op.i32_add).set(p);
      c.while(() => c.get(po).get(vend).op(Op.i32_lt_u), () => {
        c.get(po).get(pw).simdMem(Simd.v128_load, 0).get(pc).simdMem(Simd.v128_load, 4).simd(addV).simdMem(Simd.v128_store, 0);
        step(po, 16);
        step(pw, 16);
        step(pc, 16);
      });
      c.while(() => c.get(po).get(end).op(Op.i32_lt_u), () => {
        const al = e === 4 ? 2 : 3;
        c.get(po).get(pw).mem(load, al).get(pc).mem(load, al).op(add).mem(store, al);
        step(po, e);
        step(pw, e);
        step(pc, e);
      });
    });
  }, name);
}

/** i32 words of a loraMergePacked call's argument block (pointers and steps in bytes); s (an f64) at SCALE_AT. */
const enum PackedArg {
  b, as, c, out, rows, D, r, op, ip, codes, table, scale, zero, gs, bits, mode, planes, fast, a, aRow, aCol, bSrc, bRow, bCol, count,
}

/**
 * `lora_merge_packed_pack_*(arg)`: s·A [r, ip] into the panel at `as` (s rounded to the dtype, each
 * product rounded once, as mul(a, s) rounds it; a vector at a time along contiguous rows), zero
 * past D; and B [op, r] at `b` (zero rows past out) unless `b` already is B itself (bSrc = b).
 */
function emitMergePackedPack(mb: ModuleBuilder, t: Lanes, name: string): void {
  const P = ValType.i32;
  const e = t.bytes;
  const [load, store, mul] = e === 4 ? [Op.f32_load, Op.f32_store, Op.f32_mul] : [Op.f64_load, Op.f64_store, Op.f64_mul];
  const [splat, vmul] = e === 4 ? [Simd.f32x4_splat, Simd.f32x4_mul] : [Simd.f64x2_splat, Simd.f64x2_mul];
  const al = e === 4 ? 2 : 3;
  const zero = (c: Code) => (e === 4 ? c.f32(0) : c.f64(0));
  mb.func([P], [], (c) => {
    const arg = 0;
    const get = (w: PackedArg) => c.get(arg).mem(Op.i32_load, 2, w * 4);
    const [a, aRow, aCol, b, bRow, bCol, as, bp, D, rows, r, op, ip, i, j, d, sp, end] = Array.from({ length: 18 }, () => c.local(P));
    const sc = c.local(e === 4 ? ValType.f32 : ValType.f64);
    const sv = c.local(ValType.v128);
    const words: [number, PackedArg][] = [[a, PackedArg.a], [aRow, PackedArg.aRow], [aCol, PackedArg.aCol], [b, PackedArg.bSrc], [bRow, PackedArg.bRow], [bCol, PackedArg.bCol], [as, PackedArg.as], [bp, PackedArg.b], [D, PackedArg.D], [rows, PackedArg.rows], [r, PackedArg.r], [op, PackedArg.op], [ip, PackedArg.ip]];
    for (const [local, w] of words) get(w).set(local);
    c.get(arg).mem(Op.f64_load, 3, SCALE_AT);
    if (e === 4) c.op(Op.f32_demote_f64);
    c.tee(sc).simd(splat).set(sv);
    const zeroTo = (limit: number) => c.while(() => c.get(d).get(limit).op(Op.i32_lt_u), () => {
      c.get(d);
      zero(c);
      c.mem(store, al);
      c.get(d).i32(e).op(Op.i32_add).set(d);
    });
    c.for(j, () => c.i32(0), () => c.get(r), 1, () => {
      c.get(as).get(j).get(ip).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(d);
      c.get(a).get(j).get(aRow).op(Op.i32_mul).op(Op.i32_add).set(sp);
      c.get(aCol).i32(e).op(Op.i32_eq).if();
      c.get(d).get(D).i32(e).op(Op.i32_mul).op(Op.i32_add).i32(15).op(Op.i32_sub).set(end);
      c.while(() => c.get(d).get(end).op(Op.i32_lt_s), () => {
        c.get(d).get(sp).simdMem(Simd.v128_load, 0).get(sv).simd(vmul).simdMem(Simd.v128_store, 0);
        c.get(d).i32(16).op(Op.i32_add).set(d);
        c.get(sp).i32(16).op(Op.i32_add).set(sp);
      });
      c.end();
      c.get(as).get(j).get(ip).op(Op.i32_mul).get(D).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(end);
      c.while(() => c.get(d).get(end).op(Op.i32_lt_u), () => {
        c.get(d).get(sc).get(sp).mem(load, al).op(mul).mem(store, al);
        c.get(d).i32(e).op(Op.i32_add).set(d);
        c.get(sp).get(aCol).op(Op.i32_add).set(sp);
      });
      c.get(as).get(j).i32(1).op(Op.i32_add).get(ip).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(end);
      zeroTo(end);
    });
    c.get(b).get(bp).op(Op.i32_ne).if();
    c.for(i, () => c.i32(0), () => c.get(rows), 1, () => {
      c.get(bp).get(i).get(r).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(d);
      c.get(b).get(i).get(bRow).op(Op.i32_mul).op(Op.i32_add).set(sp);
      c.for(j, () => c.i32(0), () => c.get(r), 1, () => {
        c.get(d).get(sp).mem(load, al).mem(store, al);
        c.get(d).i32(e).op(Op.i32_add).set(d);
        c.get(sp).get(bCol).op(Op.i32_add).set(sp);
      });
    });
    c.get(bp).get(op).get(r).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(end);
    zeroTo(end);
    c.end();
  }, name);
}

/** How a level l becomes a weight (as `packedGather`): l·s, (l − z)·s, or l·s + β. */
const enum Decode { scale, zeroPoint, beta }

/** Shuffle lanes interleaving bytes 0–7 (or 8–15) of two vectors. */
const ZIP_LO = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
const ZIP_HI = ZIP_LO.map((l) => l + 8);
/** Shuffle lanes interleaving byte pairs 0–3 (or 4–7) of two vectors. */
const PAIRS_LO = [0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23];
const PAIRS_HI = PAIRS_LO.map((l) => l + 8);

/**
 * `lora_merge_packed_*(arg)`: per MR rows of the table, C [MR, ip] = B · (s·A) (both packed,
 * zero-padded) into a strip that stays in cache, then each row decoded field by field as
 * packed_gather decodes it (level, then its group's scale and zero point or offset, each operation
 * rounded to the dtype) with its strip row added: out = W0 + C, W0 never stored. f32 with 4-bit
 * fields, scales only and groups of 16k (`fast`): 16 fields a pass, their levels looked up by four
 * byte swizzles into the level table split in byte planes (`planes`), the same values.
 */
function emitMergePacked(mb: ModuleBuilder, t: Lanes, s: MicroShape, micro: number, name: string): void {
  const P = ValType.i32;
  const F = t.bytes === 4 ? ValType.f32 : ValType.f64;
  const V = ValType.v128;
  const e = t.bytes;
  const al = e === 4 ? 2 : 3;
  const [load, store, add, sub, mul] = e === 4 ? [Op.f32_load, Op.f32_store, Op.f32_add, Op.f32_sub, Op.f32_mul] : [Op.f64_load, Op.f64_store, Op.f64_add, Op.f64_sub, Op.f64_mul];
  mb.func([P], [], (c) => {
    const arg = 0;
    const L = () => c.local(P);
    const [b, as, cc, out, rows, D, r, op, ip, codes, table, scale, zero, gs, bits, mode, planes, fast] = Array.from({ length: 18 }, L);
    const [o, i, row, G, g, j, bit, mask, sp, po, pc, bp, n] = Array.from({ length: 13 }, L);
    const [sv, zv] = [c.local(F), c.local(F)];
    const [t0, t1, t2, t3, v, lo, p0, p1, p2, p3, sx] = Array.from({ length: 11 }, () => c.local(V));
    const words: [number, PackedArg][] = [[b, PackedArg.b], [as, PackedArg.as], [cc, PackedArg.c], [out, PackedArg.out], [rows, PackedArg.rows], [D, PackedArg.D], [r, PackedArg.r], [op, PackedArg.op], [ip, PackedArg.ip], [codes, PackedArg.codes], [table, PackedArg.table], [scale, PackedArg.scale], [zero, PackedArg.zero], [gs, PackedArg.gs], [bits, PackedArg.bits], [mode, PackedArg.mode], [planes, PackedArg.planes], [fast, PackedArg.fast]];
    for (const [local, w] of words) c.get(arg).mem(Op.i32_load, 2, w * 4).set(local);
    c.i32(1).get(bits).op(Op.i32_shl).i32(1).op(Op.i32_sub).set(mask);
    c.get(D).get(gs).op(Op.i32_div_u).set(G);
    if (e === 4) {
      c.get(fast).if();
      // the 16 levels split in byte planes: byte k of level j at planes + 16·k + j
      c.for(j, () => c.i32(0), () => c.i32(16), 1, () => {
        c.get(table).get(j).i32(4).op(Op.i32_mul).op(Op.i32_add).mem(Op.i32_load, 2).set(bit);
        for (let k = 0; k < 4; k++) {
          c.get(planes).get(j).op(Op.i32_add).get(bit);
          if (k) c.i32(8 * k).op(Op.i32_shr_u);
          c.mem(Op.i32_store8, 0, 16 * k);
        }
      });
      [t0, t1, t2, t3].forEach((tk, k) => c.get(planes).simdMem(Simd.v128_load, 0, 16 * k).set(tk));
      c.end();
    }
    const shuffle = (x: number, y: number, lanes: readonly number[], to: number) => {
      c.get(x).get(y).simd(Simd.i8x16_shuffle);
      c.bytes.push(...lanes);
      c.set(to);
    };
    c.for(o, () => c.i32(0), () => c.get(op), s.mr, () => {
      // the strip: rows o … o + MR − 1 of B·(s·A)
      stripProducts(c, s, e, micro, { b, as, r, ip, o, i }, () => c.get(cc).get(i).i32(e).op(Op.i32_mul).op(Op.i32_add));
      // the strip's rows that exist: decoded, plus the strip
      c.for(row, () => c.get(o), () => c.get(o).i32(s.mr).op(Op.i32_add).get(rows).get(o).i32(s.mr).op(Op.i32_add).get(rows).op(Op.i32_lt_s).op(Op.select), 1, () => {
        c.get(out).get(row).get(D).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(po);
        c.get(cc).get(row).get(o).op(Op.i32_sub).get(ip).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(pc);
        c.get(row).get(D).op(Op.i32_mul).get(bits).op(Op.i32_mul).set(bit);
        c.get(row).get(G).op(Op.i32_mul).i32(e).op(Op.i32_mul).set(sp);
        const scalar = () => {
          c.for(g, () => c.i32(0), () => c.get(G), 1, () => {
            c.get(scale).get(sp).op(Op.i32_add).mem(load, al).set(sv);
            c.get(mode).i32(Decode.scale).op(Op.i32_ne).if();
            c.get(zero).get(sp).op(Op.i32_add).mem(load, al).set(zv);
            c.end();
            c.get(sp).i32(e).op(Op.i32_add).set(sp);
            /** gs fields: out = combine(level) + strip */
            const fields = (combine: () => void) => {
              c.for(j, () => c.i32(0), () => c.get(gs), 1, () => {
                c.get(po);
                c.get(codes).get(bit).i32(3).op(Op.i32_shr_u).op(Op.i32_add).mem(Op.i32_load8_u, 0);
                c.get(bit).i32(7).op(Op.i32_and).op(Op.i32_shr_u).get(mask).op(Op.i32_and);
                c.i32(e).op(Op.i32_mul).get(table).op(Op.i32_add).mem(load, al);
                combine();
                c.get(pc).mem(load, al).op(add);
                c.mem(store, al);
                c.get(po).i32(e).op(Op.i32_add).set(po);
                c.get(pc).i32(e).op(Op.i32_add).set(pc);
                c.get(bit).get(bits).op(Op.i32_add).set(bit);
              });
            };
            c.get(mode).i32(Decode.scale).op(Op.i32_eq).if();
            fields(() => c.get(sv).op(mul));
            c.op(Op.else);
            c.get(mode).i32(Decode.zeroPoint).op(Op.i32_eq).if();
            fields(() => c.get(zv).op(sub).get(sv).op(mul));
            c.op(Op.else);
            fields(() => c.get(sv).op(mul).get(zv).op(add));
            c.end();
            c.end();
          });
        };
        if (e === 4) {
          c.get(fast).if();
          // 16 fields (8 bytes) a pass: their codes in byte order, the four bytes of each level by
          // swizzle from the planes, interleaved back into f32 lanes
          c.get(codes).get(bit).i32(3).op(Op.i32_shr_u).op(Op.i32_add).set(bp);
          c.for(g, () => c.i32(0), () => c.get(G), 1, () => {
            c.get(scale).get(sp).op(Op.i32_add).simdMem(Simd.v128_load32_splat, 2).set(sx);
            c.get(sp).i32(4).op(Op.i32_add).set(sp);
            c.for(n, () => c.i32(0), () => c.get(gs), 16, () => {
              c.get(bp).simdMem(Simd.v128_load64_zero, 0).set(v);
              c.get(v).i32(15).simd(Simd.i8x16_splat).simd(Simd.v128_and).set(lo);
              c.get(v).i32(4).simd(Simd.i8x16_shr_u).set(v);
              shuffle(lo, v, ZIP_LO, v);
              [p0, p1, p2, p3].forEach((pk, k) => c.get([t0, t1, t2, t3][k]!).get(v).simd(Simd.i8x16_swizzle).set(pk));
              // byte pairs (0, 1) and (2, 3) of fields 0–7 and 8–15, then the f32 lanes of fields 0–3, 4–7, 8–11, 12–15
              shuffle(p0, p1, ZIP_HI, lo);
              shuffle(p2, p3, ZIP_HI, v);
              shuffle(p0, p1, ZIP_LO, p0);
              shuffle(p2, p3, ZIP_LO, p2);
              const put = (x: number, y: number, lanes: readonly number[], q: number) => {
                c.get(po);
                c.get(x).get(y).simd(Simd.i8x16_shuffle);
                c.bytes.push(...lanes);
                c.get(sx).simd(Simd.f32x4_mul).get(pc).simdMem(Simd.v128_load, 0, 16 * q).simd(Simd.f32x4_add).simdMem(Simd.v128_store, 0, 16 * q);
              };
              put(p0, p2, PAIRS_LO, 0);
              put(p0, p2, PAIRS_HI, 1);
              put(lo, v, PAIRS_LO, 2);
              put(lo, v, PAIRS_HI, 3);
              c.get(po).i32(64).op(Op.i32_add).set(po);
              c.get(pc).i32(64).op(Op.i32_add).set(pc);
              c.get(bp).i32(8).op(Op.i32_add).set(bp);
            });
          });
          c.op(Op.else);
          scalar();
          c.end();
        } else scalar();
      });
    });
  }, name);
}

/** Adds `lora_backward_*`, `lora_merge_*` and `lora_merge_packed_*` (f32, f64). */
export function emitLoraBackward(mb: ModuleBuilder, flavor: Flavor): void {
  const micro32 = emitMicroStrided(mb, F32, F32_TILE, flavor.relaxed);
  const micro64 = emitMicroStrided(mb, F64, F64_TILE, flavor.relaxed);
  emitLora(mb, F32, F32_TILE, micro32, 'lora_backward_f32');
  emitLora(mb, F64, F64_TILE, micro64, 'lora_backward_f64');
  emitPack(mb, F32, 'lora_pack_f32');
  emitPack(mb, F64, 'lora_pack_f64');
  emitFinish(mb, F32, 'lora_finish_f32');
  emitFinish(mb, F64, 'lora_finish_f64');
  emitMerge(mb, F32, F32_TILE, micro32, 'lora_merge_f32');
  emitMerge(mb, F64, F64_TILE, micro64, 'lora_merge_f64');
  emitMergePackedPack(mb, F32, 'lora_merge_packed_pack_f32');
  emitMergePackedPack(mb, F64, 'lora_merge_packed_pack_f64');
  emitMergePacked(mb, F32, F32_TILE, micro32, 'lora_merge_packed_f32');
  emitMergePacked(mb, F64, F64_TILE, micro64, 'lora_merge_packed_f64');
}

const roundUp = (v: number, m: number) => Math.ceil(v / m) * m;
const align = (bytes: number) => roundUp(bytes, 64);

/**
 * loraBackward on the engine (see names.ts), float32/float64 with x and g of contiguous rows; false
 * (js runs) otherwise. A and B are packed in wasm (lora_pack); tokens are cut into tasks of CHUNK
 * (a partition fixed by n alone), each summing its blocks in token order into its own dA, dB; the
 * tasks' sums are added in task order and multiplied by s (lora_finish), so the result never
 * depends on the thread count. A last group of
 * fewer than MR tokens is copied into scratch with zero rows and slack. The main part's padded
 * tiles (out and in rounded up to the tile) read up to a tile's width past a row's end, into the
 * following rows or, after the last main row, past them in wasm memory; those values reach only
 * the padded rows of dB and columns of dA, which are dropped.
 */
export function loraBackwardWasm(engine: Engine, [x, g, a, b, gradB]: readonly Arg[], out: Arg, { scale }: KernelParams['loraBackward']): boolean {
  const dtype = out.dtype;
  if ((dtype !== 'float32' && dtype !== 'float64') || [x, g, a, b, gradB].some((v) => v!.dtype !== dtype)) return false;
  if (x!.strides[1] !== 1 || g!.strides[1] !== 1 || x!.strides[0]! < 0 || g!.strides[0]! < 0) return false;
  const [n, inF] = x!.shape as [number, number];
  const outF = g!.shape[1]!;
  const r = a!.shape[0]!;
  const { mr, nr } = dtype === 'float32' ? F32_TILE : F64_TILE;
  const e = dtype === 'float32' ? 4 : 8;
  const view = dtype === 'float32' ? engine.f32 : engine.f64;
  if (numel(out.shape) !== r * inF || numel(gradB!.shape) !== outF * r || (outF > 1 && gradB!.strides[0] !== r) || (r > 1 && gradB!.strides[1] !== 1)) return false;
  if (n === 0 || r * (inF + outF) === 0) {
    out.data.fill(0, out.offset, out.offset + r * inF);
    gradB!.data.fill(0, gradB!.offset, gradB!.offset + outF * r);
    return true;
  }
  const rp = roundUp(r, nr);
  const rm = roundUp(r, mr);
  const ip = roundUp(inF, nr);
  const op = roundUp(outF, mr);
  const aligned = n % mr === 0 && inF % nr === 0 && outF % mr === 0;
  const main = aligned ? n : Math.floor((n - 1) / mr) * mr;
  const tail = main < n;
  const chunk = roundUp(Math.max(CHUNK, Math.ceil(n / 4)), BLOCK);
  const tasks = Math.max(1, Math.ceil(main / chunk));
  // scratch: Aᵀ [in, rp], B [out, rp], the tail's x and g (MR rows, slack past them), per task
  // hs, gb [BLOCK, rp], dB [op, rp], dA [rm, ip]; then the staged copies of x and g if foreign
  const atBytes = align(inF * rp * e);
  const bpBytes = align(outF * rp * e);
  const xTailBytes = tail ? align((mr * inF + nr) * e) : 0;
  const gTailBytes = tail ? align((mr * outF + mr) * e) : 0;
  const workBytes = align((2 * BLOCK * rp + op * rp + rm * ip) * e);
  // dA and dB straight into the outputs when they live in wasm memory, else into scratch first
  const daAt = engine.addressOf(out);
  const dbAt = engine.addressOf(gradB!);
  const daBytes = daAt >= 0 ? 0 : align(r * inF * e);
  const dbBytes = dbAt >= 0 ? 0 : align(outF * r * e);
  const fixed = atBytes + bpBytes + xTailBytes + gTailBytes + tasks * workBytes + daBytes + dbBytes;
  if (fixed > MAX_HEAP_BYTES || !engine.reserve(fixed)) return false;
  const base = engine.scratch;
  const ptrs = stage(engine, base + fixed, [x!, g!, a!, b!], [e, e, e, e]);
  if (!ptrs) return false;
  const [xAt, gAt, aAt, bAt] = ptrs as [number, number, number, number];
  const atPtr = base;
  const bpPtr = atPtr + atBytes;
  const xTail = bpPtr + bpBytes;
  const gTail = xTail + xTailBytes;
  const work = gTail + gTailBytes;
  const daPtr = daAt >= 0 ? daAt : work + tasks * workBytes;
  const dbPtr = dbAt >= 0 ? dbAt : work + tasks * workBytes + daBytes;
  const [xs, gs] = [x!.strides[0]!, g!.strides[0]!];
  if (tail) {
    // the last group of tokens, zero rows after it and slack past them
    view.fill(0, xTail / e, work / e);
    for (let t = main; t < n; t++) {
      view.copyWithin(xTail / e + (t - main) * inF, xAt / e + t * xs, xAt / e + t * xs + inF);
      view.copyWithin(gTail / e + (t - main) * outF, gAt / e + t * gs, gAt / e + t * gs + outF);
    }
  }
  const args = engine.i32;
  const w = ARGS / 4;
  const words: [LoraArg, number][] = [
    [LoraArg.x, xAt], [LoraArg.g, gAt], [LoraArg.xRow, xs * e], [LoraArg.gRow, gs * e], [LoraArg.at, atPtr], [LoraArg.bp, bpPtr],
    [LoraArg.main, main], [LoraArg.chunk, chunk], [LoraArg.inF, inF], [LoraArg.outF, outF], [LoraArg.rp, rp], [LoraArg.rm, rm],
    [LoraArg.ip, ip], [LoraArg.op, op], [LoraArg.work, work], [LoraArg.workBytes, workBytes], [LoraArg.xTail, xTail],
    [LoraArg.gTail, gTail], [LoraArg.tail, tail ? 1 : 0], [LoraArg.tasks, tasks], [LoraArg.a, aAt], [LoraArg.aRow, a!.strides[0]! * e],
    [LoraArg.aCol, a!.strides[1]! * e], [LoraArg.b, bAt], [LoraArg.bRow, b!.strides[0]! * e], [LoraArg.bCol, b!.strides[1]! * e], [LoraArg.r, r],
    [LoraArg.da, daPtr], [LoraArg.db, dbPtr],
  ];
  for (const [word, v] of words) args[w + word] = v;
  // s rounded to the dtype, as a 0-d tensor of it
  engine.f64[(ARGS + SCALE_AT) / 8] = dtype === 'float32' ? Math.fround(scale) : scale;
  const k = dtype === 'float32' ? 'f32' : 'f64';
  engine.call(`lora_pack_${k}`, ARGS);
  const threaded = engine.threads > 1 && tasks > 1 && n * r * (inF + outF) * 2 >= PARALLEL_MIN_MACS;
  engine.parallel(`lora_backward_${k}`, ARGS, tasks, threaded);
  engine.call(`lora_finish_${k}`, ARGS);
  if (daAt < 0) engine.stageOut(out, view, daPtr, r * inF);
  if (dbAt < 0) engine.stageOut(gradB!, view, dbPtr, outF * r);
  return true;
}

/**
 * loraMerge on the engine (see names.ts): B and s·A packed into scratch zero-padded to whole
 * tiles (s·A rounded to out's dtype first), their product on the micro-kernel that `matmul`
 * uses for it (same sums in the same order), then w0 added in one pass. False (js runs) for other
 * dtypes or a w0 whose rows are not contiguous.
 */
export function loraMergeWasm(engine: Engine, [w0, a, b]: readonly Arg[], out: Arg, { scale }: KernelParams['loraMerge']): boolean {
  const dtype = out.dtype;
  if ((dtype !== 'float32' && dtype !== 'float64') || [w0, a, b].some((v) => v!.dtype !== dtype)) return false;
  const [outF, inF] = w0!.shape as [number, number];
  const r = a!.shape[0]!;
  if ((inF > 1 && w0!.strides[1] !== 1) || w0!.strides[0]! < 0 || numel(out.shape) !== outF * inF) return false;
  const { mr, nr } = dtype === 'float32' ? F32_TILE : F64_TILE;
  const e = dtype === 'float32' ? 4 : 8;
  const view = dtype === 'float32' ? engine.f32 : engine.f64;
  const op = roundUp(outF, mr);
  const ip = roundUp(inF, nr);
  const bBytes = align(op * r * e);
  const asBytes = align(r * ip * e);
  const cBytes = align(op * ip * e);
  const direct = engine.addressOf(out);
  const outBytes = direct >= 0 ? 0 : align(outF * inF * e);
  const fixed = bBytes + asBytes + cBytes + outBytes;
  if (fixed > MAX_HEAP_BYTES || !engine.reserve(fixed)) return false;
  const base = engine.scratch;
  const ptrs = stage(engine, base + fixed, [w0!], [e], direct >= 0 ? out : undefined);
  if (!ptrs) return false;
  const [bPtr, asPtr, cPtr, outPtr] = [base, base + bBytes, base + bBytes + asBytes, direct >= 0 ? direct : base + bBytes + asBytes + cBytes];
  view.fill(0, bPtr / e, cPtr / e);
  const [sa0, sa1] = a!.strides as [number, number];
  const [sb0, sb1] = b!.strides as [number, number];
  const [ad, bd] = [a!.data, b!.data];
  // s·a rounded to out's dtype on the store, as mul(a, s) rounds it with s a 0-d tensor of that dtype
  const sc = dtype === 'float32' ? Math.fround(scale) : scale;
  for (let j = 0; j < r; j++) for (let i = 0; i < inF; i++) view[asPtr / e + j * ip + i] = sc * ad[a!.offset + j * sa0 + i * sa1]!;
  for (let o = 0; o < outF; o++) for (let j = 0; j < r; j++) view[bPtr / e + o * r + j] = bd[b!.offset + o * sb0 + j * sb1]!;
  const args = engine.i32;
  const w = ARGS / 4;
  const words: [MergeArg, number][] = [
    [MergeArg.b, bPtr], [MergeArg.as, asPtr], [MergeArg.c, cPtr], [MergeArg.w0, ptrs[0]!], [MergeArg.w0Row, w0!.strides[0]! * e], [MergeArg.out, outPtr],
    [MergeArg.outF, outF], [MergeArg.inF, inF], [MergeArg.r, r], [MergeArg.op, op], [MergeArg.ip, ip],
  ];
  for (const [word, v] of words) args[w + word] = v;
  engine.call(dtype === 'float32' ? 'lora_merge_f32' : 'lora_merge_f64', ARGS);
  if (direct < 0) engine.stageOut(out, view, outPtr, outF * inF);
  return true;
}

/**
 * loraMergePacked on the engine (see names.ts): operands checked as packedGather checks them, B and
 * s·A packed as loraMerge packs them, then lora_merge_packed. False (js runs) where the levels,
 * scales or zero points are not out's dtype (the decode then is not the dtype's own arithmetic)
 * or a bit offset would pass i32.
 */
export function loraMergePackedWasm(engine: Engine, inputs: readonly Arg[], out: Arg, p: KernelParams['loraMergePacked']): boolean {
  const dtype = out.dtype;
  if (dtype !== 'float32' && dtype !== 'float64') return false;
  const [a, b] = [inputs[0]!, inputs[1]!];
  const [rows, D] = out.shape as [number, number];
  const index: Arg = { data: EMPTY_INDEX, dtype: 'int32', shape: [rows], strides: [1], offset: 0 };
  const { codes, table, scale, zero } = packedGatherOperands([index, ...inputs.slice(2)], out, p);
  if ([table, scale, ...(zero ? [zero] : []), a, b].some((x) => x.dtype !== dtype)) return false;
  if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[1] !== D || b.shape[0] !== rows || b.shape[1] !== a.shape[0]) return false;
  if (rows > p.rows || rows * D * p.bits >= 2 ** 31) return false;
  const r = a.shape[0]!;
  const { mr, nr } = dtype === 'float32' ? F32_TILE : F64_TILE;
  const e = dtype === 'float32' ? 4 : 8;
  const view = dtype === 'float32' ? engine.f32 : engine.f64;
  const op = roundUp(rows, mr);
  const ip = roundUp(D, nr);
  const mode = !zero ? Decode.scale : p.offset === 'beta' ? Decode.beta : Decode.zeroPoint;
  const fast = dtype === 'float32' && p.bits === 4 && mode === Decode.scale && p.groupSize % 16 === 0;
  const bBytes = align(op * r * e);
  const asBytes = align(r * ip * e);
  const cBytes = align(mr * ip * e);
  const planeBytes = fast ? 64 : 0;
  const direct = engine.addressOf(out);
  const outBytes = direct >= 0 ? 0 : align(rows * D * e);
  const fixed = bBytes + asBytes + cBytes + planeBytes + outBytes;
  if (fixed > MAX_HEAP_BYTES || !engine.reserve(fixed)) return false;
  const base = engine.scratch;
  const ops = [codes, table, scale, ...(zero ? [zero] : []), a, b];
  const ptrs = stage(engine, base + fixed, ops, ops.map((x) => (x === codes ? 1 : e)), direct >= 0 ? out : undefined);
  if (!ptrs) return false;
  const [aAt, bAt] = ptrs.slice(-2) as [number, number];
  const [asPtr, cPtr, planesPtr] = [base + bBytes, base + bBytes + asBytes, base + bBytes + asBytes + cBytes];
  // B read where it lives when it already is the panel (rows of r, whole tiles of rows)
  const bPtr = rows === op && b.strides[0] === r && (r === 1 || b.strides[1] === 1) ? bAt : base;
  const outPtr = direct >= 0 ? direct : planesPtr + planeBytes;
  const args = engine.i32;
  const w = ARGS / 4;
  args[w + PackedArg.b] = bPtr;
  args[w + PackedArg.as] = asPtr;
  args[w + PackedArg.c] = cPtr;
  args[w + PackedArg.out] = outPtr;
  args[w + PackedArg.rows] = rows;
  args[w + PackedArg.D] = D;
  args[w + PackedArg.r] = r;
  args[w + PackedArg.op] = op;
  args[w + PackedArg.ip] = ip;
  args[w + PackedArg.codes] = ptrs[0]!;
  args[w + PackedArg.table] = ptrs[1]!;
  args[w + PackedArg.scale] = ptrs[2]!;
  args[w + PackedArg.zero] = zero ? ptrs[3]! : 0;
  args[w + PackedArg.gs] = p.groupSize;
  args[w + PackedArg.bits] = p.bits;
  args[w + PackedArg.mode] = mode;
  args[w + PackedArg.planes] = planesPtr;
  args[w + PackedArg.fast] = fast ? 1 : 0;
  args[w + PackedArg.a] = aAt;
  args[w + PackedArg.aRow] = a.strides[0]! * e;
  args[w + PackedArg.aCol] = a.strides[1]! * e;
  args[w + PackedArg.bSrc] = bAt;
  args[w + PackedArg.bRow] = b.strides[0]! * e;
  args[w + PackedArg.bCol] = b.strides[1]! * e;
  engine.f64[(ARGS + SCALE_AT) / 8] = p.scale;
  const k = dtype === 'float32' ? 'f32' : 'f64';
  engine.call(`lora_merge_packed_pack_${k}`, ARGS);
  engine.call(`lora_merge_packed_${k}`, ARGS);
  if (direct < 0) engine.stageOut(out, view, outPtr, rows * D);
  return true;
}

const EMPTY_INDEX = new Int32Array(0);
