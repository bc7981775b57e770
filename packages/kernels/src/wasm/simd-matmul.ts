/**
 * @file ISA-specific code for matmul: the register-blocked SIMD micro-kernel (MR×NR tile of
 * accumulators, f32x4 or f64x2 lanes, mul+add or relaxed FMA) and the task drivers that walk
 * cache blocks of packed panels (or of operands read in place), and the packing tasks. Which
 * operands are packed, and dispatch, live in matmul.ts.
 *
 * Tolerance between paths: relaxed_madd rounds once per multiply-add (V8 emits vfmadd on x64
 * with FMA3), mul+add twice. Each result is within K·eps·Σₖ|aᵢₖ||bₖⱼ| of the exact product, so
 * the two paths differ by at most twice that (tested). Within one process the path is fixed, and
 * the summation order depends on K only, so results never depend on the thread count.
 */
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import type { Flavor } from './runtime.js';

export interface MicroShape {
  /** Rows of the register tile (broadcast from packed A). */
  mr: number;
  /** Columns of the register tile (vectors from packed B); a multiple of the lane count. */
  nr: number;
}

/**
 * 4×8 without unrolling: 8 accumulators + 2 B vectors + 1 register TurboFan reuses for the four
 * broadcasts (11 of V8's 15 allocatable xmm registers; 5×8, with 10 accumulators, measured no
 * faster: 1024² kernel-only 43–48 vs 43–45 GFLOP/s). Why not unrolled: TurboFan keeps loads in program order on the effect chain but
 * sinks the pure FMAs to their last use (the loop back edge), so an unrolled body issues all of
 * its loads first and holds them across the FMAs — with 6×8 unrolled 4 that spilled ~30 vectors a
 * pass (read off `node --print-wasm-code`). Measured 1 thread, 1024², on this AVX-512 EPYC
 * (128-bit FMA peak ≈ 55 GFLOP/s per core, from a C loop of _mm_fmadd_ps): 4×8×1 45, 3×12×1 41,
 * 2×16×1 41, 6×8×4 (the old choice) 27, 6×8×1 23, 4×8×2 22; broadcasting A's lanes with
 * i8x16.shuffle from one vector load (so unrolling fits) 37. f64: 4×4×1 22 vs 4×4×4 14 (512²).
 * Since A is read through a pointer per row (emitMicro), 4×8×1 runs 1024² at 52. Tried since and
 * dropped: the k loop as a do-while (one fused subtract-and-branch) 1024² 52 → 47, tiny-Llama
 * products 48 → 46 (TurboFan lays it out worse).
 */
export const F32_TILE: MicroShape = { mr: 4, nr: 8 };
export const F64_TILE: MicroShape = { mr: 4, nr: 4 };

/**
 * Words of the argument block of a matmul job (i32, at `arg`). Pointers are bytes; A and B are
 * packed (see matmul.ts), C is padded to Mp × Np.
 */
export const enum MatmulArg {
  a, b, c, aBatch, bBatch, cBatch, mp, np, k, kc, tilesM, tilesN, mc, nc, count,
}

/**
 * Words of the argument block of a packing job: element strides, byte pointers. Raw operands are
 * verbatim copies of the input spans; `aBases`/`bBases` list each batch's element offset in them.
 */
export const enum PackArg {
  rawA, rawB, aBases, bBases, tasksA, panelsA, panelsB, m, n, k, kc, sam, sak, sbk, sbn, dstA, dstB, aBytes, bBytes, count,
}

export interface Lanes {
  bytes: number;
  lanes: number;
  splat: number;
  add: number;
  mul: number;
  madd: number;
}
export const F32: Lanes = { bytes: 4, lanes: 4, splat: Simd.v128_load32_splat, add: Simd.f32x4_add, mul: Simd.f32x4_mul, madd: Simd.f32x4_relaxed_madd };
export const F64: Lanes = { bytes: 8, lanes: 2, splat: Simd.v128_load64_splat, add: Simd.f64x2_add, mul: Simd.f64x2_mul, madd: Simd.f64x2_relaxed_madd };

/** Parameter indices of a micro-kernel, and how it reads A and steps its pointers each k. */
interface MicroParams {
  bp: number;
  cp: number;
  kcb: number;
  ldc: number;
  accumulate: number;
  /** log2 of the alignment hint of B's vector loads (4: packed panels; 0: B read where it lives). */
  bAlign: number;
  /** Pushes row r's broadcast of A for this k step. */
  splatA: (r: number) => void;
  /** Moves A and B on by one k (B's pointer is `bp`). */
  advance: () => void;
}

/**
 * What both micro-kernels are: the MR×NR accumulator tile loaded from C (accumulate) or zeroed,
 * kcb k steps of NR/lanes vector loads of B and MR broadcasts of A, one k step a pass (not
 * unrolled, see F32_TILE), and the tile stored back to C.
 */
function microBody(c: Code, t: Lanes, s: MicroShape, fma: boolean, p: MicroParams): void {
  const nv = s.nr / t.lanes;
  const acc: number[][] = [];
  for (let r = 0; r < s.mr; r++) acc.push(Array.from({ length: nv }, () => c.local(ValType.v128)));
  const bv = Array.from({ length: nv }, () => c.local(ValType.v128));
  const av = c.local(ValType.v128);
  const row = c.local(ValType.i32);
  const forRows = (fn: (r: number) => void) => {
    c.get(p.cp).set(row);
    for (let r = 0; r < s.mr; r++) {
      fn(r);
      if (r < s.mr - 1) c.get(row).get(p.ldc).op(Op.i32_add).set(row);
    }
  };
  c.get(p.accumulate).if();
  forRows((r) => {
    for (let v = 0; v < nv; v++) c.get(row).simdMem(Simd.v128_load, 4, v * 16).set(acc[r]![v]!);
  });
  c.op(Op.else);
  for (let r = 0; r < s.mr; r++) for (let v = 0; v < nv; v++) c.i32(0).simd(Simd.i32x4_splat).set(acc[r]![v]!);
  c.end();
  c.while(
    () => c.get(p.kcb).i32(0).op(Op.i32_gt_s),
    () => {
      for (let v = 0; v < nv; v++) c.get(p.bp).simdMem(Simd.v128_load, p.bAlign, v * t.lanes * t.bytes).set(bv[v]!);
      for (let r = 0; r < s.mr; r++) {
        p.splatA(r);
        c.set(av);
        for (let v = 0; v < nv; v++) {
          const a = acc[r]![v]!;
          if (fma) c.get(av).get(bv[v]!).get(a).simd(t.madd).set(a);
          else c.get(a).get(av).get(bv[v]!).simd(t.mul).simd(t.add).set(a);
        }
      }
      p.advance();
      c.get(p.kcb).i32(1).op(Op.i32_sub).set(p.kcb);
    },
  );
  forRows((r) => {
    for (let v = 0; v < nv; v++) c.get(row).get(acc[r]![v]!).simdMem(Simd.v128_store, 4, v * 16);
  });
}

const splatAlign = (t: Lanes) => (t.bytes === 4 ? 2 : 3);

/** micro(ap, bp, cp, kcb, ldcBytes, accumulate): C tile (+)= Apanel · Bpanel over kcb steps. */
export function emitMicro(mb: ModuleBuilder, t: Lanes, s: MicroShape, fma: boolean): number {
  const P = ValType.i32;
  return mb.func([P, P, P, P, P, P], [], (c) => {
    const [ap, bp, cp, kcb, ldc, accumulate] = [0, 1, 2, 3, 4, 5];
    // packed A: the MR values of one k are adjacent. One pointer per row, not one pointer and an
    // immediate offset per row: TurboFan emits a lea before each offset broadcast (read off
    // `node --print-wasm-code`), and 1024² ran at 47 GFLOP/s against 52 for this form
    const ar = Array.from({ length: s.mr }, () => c.local(P));
    for (let r = 0; r < s.mr; r++) c.get(ap).i32(r * t.bytes).op(Op.i32_add).set(ar[r]!);
    microBody(c, t, s, fma, {
      bp, cp, kcb, ldc, accumulate, bAlign: 4,
      splatA: (r) => c.get(ar[r]!).simdMem(t.splat, splatAlign(t)),
      advance: () => {
        for (let r = 0; r < s.mr; r++) c.get(ar[r]!).i32(s.mr * t.bytes).op(Op.i32_add).set(ar[r]!);
        c.get(bp).i32(s.nr * t.bytes).op(Op.i32_add).set(bp);
      },
    });
  });
}

/**
 * micro(ap, bp, cp, kcb, ldc, accumulate, aRow, aStep, bStep): emitMicro's tile with the operands'
 * steps given at run time, so either operand can be read where it lives instead of from packed
 * panels: A's row r at ap + r·aRow, its next k aStep further on; B's NR columns contiguous at bp,
 * the next k bStep further on. Same products in the same order as emitMicro, so the same bits.
 */
export function emitMicroStrided(mb: ModuleBuilder, t: Lanes, s: MicroShape, fma: boolean): number {
  const P = ValType.i32;
  return mb.func([P, P, P, P, P, P, P, P, P], [], (c) => {
    const [ap, bp, cp, kcb, ldc, accumulate, aRow, aStep, bStep] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
    // one pointer per row of A: one add per row and k instead of a multiply
    const ar = Array.from({ length: s.mr }, () => c.local(P));
    c.get(ap).set(ar[0]!);
    for (let r = 1; r < s.mr; r++) c.get(ar[r - 1]!).get(aRow).op(Op.i32_add).set(ar[r]!);
    microBody(c, t, s, fma, {
      // alignment hints only: B read in place is element-aligned, not 16
      bp, cp, kcb, ldc, accumulate, bAlign: 0,
      splatA: (r) => c.get(ar[r]!).simdMem(t.splat, splatAlign(t)),
      advance: () => {
        for (let r = 0; r < s.mr; r++) c.get(ar[r]!).get(aStep).op(Op.i32_add).set(ar[r]!);
        c.get(bp).get(bStep).op(Op.i32_add).set(bp);
      },
    });
  });
}

/**
 * micro(ap, bp, cp, kcb, ldc, accumulate, aRow, aStep, bStep, tiles, aTile): emitMicroStrided's
 * tile for `tiles` ≥ 1 tiles down a column of C in one call, the next one's A aTile further on (C
 * MR rows further on, B the same). For short k blocks, where a call's arguments and frame cost as
 * much as a few k steps: attention's 64 × (128×32 · 32×128) +8–12 % (1 thread, CPU time). Its k
 * loop compiles worse (TurboFan peels it and reloads a spilled pointer each pass): over 256 k
 * steps 1024³ ran 3–5 % slower than with a call a tile, so long blocks keep those.
 */
export function emitMicroTiles(mb: ModuleBuilder, t: Lanes, s: MicroShape, fma: boolean): number {
  const P = ValType.i32;
  return mb.func([P, P, P, P, P, P, P, P, P, P, P], [], (c) => {
    const [ap, bp, cp, kcb, ldc, accumulate, aRow, aStep, bStep, tiles, aTile] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    const ar = Array.from({ length: s.mr }, () => c.local(P));
    const [bcur, kk, cTile] = [c.local(P), c.local(P), c.local(P)];
    c.get(ldc).i32(s.mr).op(Op.i32_mul).set(cTile);
    c.loop();
    c.get(ap).set(ar[0]!);
    for (let r = 1; r < s.mr; r++) c.get(ar[r - 1]!).get(aRow).op(Op.i32_add).set(ar[r]!);
    c.get(bp).set(bcur);
    c.get(kcb).set(kk);
    microBody(c, t, s, fma, {
      bp: bcur, cp, kcb: kk, ldc, accumulate, bAlign: 0,
      splatA: (r) => c.get(ar[r]!).simdMem(t.splat, splatAlign(t)),
      advance: () => {
        for (let r = 0; r < s.mr; r++) c.get(ar[r]!).get(aStep).op(Op.i32_add).set(ar[r]!);
        c.get(bcur).get(bStep).op(Op.i32_add).set(bcur);
      },
    });
    c.get(ap).get(aTile).op(Op.i32_add).set(ap);
    c.get(cp).get(cTile).op(Op.i32_add).set(cp);
    c.get(tiles).i32(1).op(Op.i32_sub).tee(tiles).brIf(0);
    c.end();
  });
}

/** k blocks up to this long run a column of tiles a call (emitMicroTiles). */
const SHORT_K = 64;

/**
 * Words of the argument block of a direct matmul job (pointers and steps in bytes). An operand with
 * its flag set is read where it lives: batch t's A at a + aBases[t]·e (an i32 list at aBases, in
 * elements), its rows aRow apart and its k aK apart; B likewise at b + bBases[t]·e, its k bK apart
 * and its columns contiguous. Otherwise it is packed as for `matmul_*`, batch t's panels at
 * a + t·aBatch (b + t·bBatch). C of batch t at c + t·cBatch, padded to mp × np. Task t of a
 * fused driver packs into its own buffer at buf + t·bufBytes: `matmul_fused_*` its A panels (A in
 * place, rows contiguous), `matmul_fusedb_f32` one B panel at a time (B in place, k contiguous,
 * its columns bCol bytes apart: a transposed weight Wᵀ).
 */
export const enum DirectArg {
  a, b, c, mp, np, k, kc, tilesM, tilesN, mc, nc, aDirect, aRow, aK, bDirect, bK, aBatch, bBatch, cBatch, aBases, bBases, buf, bufBytes, bCol, count,
}

/**
 * Packs f32 B panel j (columns j … j+NR, one k block) from B in place, k contiguous and columns
 * bCol bytes apart (Wᵀ of x·Wᵀ), into `buf` in the panel layout (NR values per k): four k a pass,
 * a 4×4 transpose per four columns, the last kcb mod 4 k one value at a time. Bit copies only.
 */
function packPanelB(c: Code, s: MicroShape, l: { b: number; bCol: number; j: number; k0: number; kcb: number; buf: number; src: number; dst: number; kk: number }): void {
  const quad = Array.from({ length: 4 }, () => c.local(ValType.v128));
  const tmp = Array.from({ length: 4 }, () => c.local(ValType.v128));
  const row = Array.from({ length: s.nr }, () => c.local(ValType.i32));
  // src: column j's k0; one pointer per column, each stepped 16 bytes a pass
  c.get(l.b).get(l.j).get(l.bCol).op(Op.i32_mul).op(Op.i32_add).get(l.k0).i32(4).op(Op.i32_mul).op(Op.i32_add).set(l.src);
  for (let col = 0; col < s.nr; col++) {
    if (col === 0) c.get(l.src).set(row[0]!);
    else c.get(row[col - 1]!).get(l.bCol).op(Op.i32_add).set(row[col]!);
  }
  c.get(l.buf).set(l.dst);
  c.get(l.kcb).i32(-4).op(Op.i32_and).i32(s.nr * 4).op(Op.i32_mul).get(l.buf).op(Op.i32_add).set(l.kk);
  c.while(() => c.get(l.dst).get(l.kk).op(Op.i32_lt_u), () => {
    for (let g = 0; g < s.nr / 4; g++) {
      for (let q = 0; q < 4; q++) c.get(row[4 * g + q]!).simdMem(Simd.v128_load, 0).set(quad[q]!);
      transpose4(c, quad, tmp);
      for (let q = 0; q < 4; q++) c.get(l.dst).get(quad[q]!).simdMem(Simd.v128_store, 4, q * s.nr * 4 + g * 16);
    }
    for (let col = 0; col < s.nr; col++) c.get(row[col]!).i32(16).op(Op.i32_add).set(row[col]!);
    c.get(l.dst).i32(4 * s.nr * 4).op(Op.i32_add).set(l.dst);
  });
  c.get(l.kcb).i32(s.nr * 4).op(Op.i32_mul).get(l.buf).op(Op.i32_add).set(l.kk);
  c.while(() => c.get(l.dst).get(l.kk).op(Op.i32_lt_u), () => {
    for (let col = 0; col < s.nr; col++) {
      c.get(l.dst).get(row[col]!).mem(Op.i32_load, 2).mem(Op.i32_store, 2, col * 4);
      c.get(row[col]!).i32(4).op(Op.i32_add).set(row[col]!);
    }
    c.get(l.dst).i32(s.nr * 4).op(Op.i32_add).set(l.dst);
  });
}

/**
 * Task export `name(arg, t)`: one (batch, row block, column block) of C over all k blocks, as
 * `emitDriver`, with either operand read in place (DirectArg). For products where packing an
 * operand costs as much as the product, since each packed element is used by only a few tiles: a
 * LoRA adapter's x·Aᵀ, (g·B)ᵀ·x, and attention's per-head products. With `fuseOperand` 'a' (the
 * `matmul_fused_*` export, a separate function so that the direct one compiles as before), A is
 * packed by the task itself, one k block at a time just before the micro-kernel reads it; with
 * 'b' (`matmul_fusedb_f32`), B, one panel of one k block at a time (packPanelB).
 */
function emitDirectDriver(mb: ModuleBuilder, t: Lanes, s: MicroShape, micro: number, column: number, name: string, fuseOperand: 'a' | 'b' | null = null): void {
  const P = ValType.i32;
  const e = t.bytes;
  const fuse = fuseOperand === 'a';
  const fuseB = fuseOperand === 'b';
  mb.func([P, P], [], (c) => {
    const [arg, task] = [0, 1];
    const [a, b, cc, np, mp, k, kc, m0, m1, n0, n1, k0, kcb, at, bt, i, j, acc, aRow, aStep, bStep, aDirect, bDirect, per, batch] = Array.from({ length: 25 }, () => c.local(P));
    const [buf, srcK, apb, kk, src, dst, panelBytes] = fuseOperand ? Array.from({ length: 7 }, () => c.local(P)) : [];
    const bCol = fuseB ? c.local(P) : -1;
    const get = (w: DirectArg) => c.get(arg).mem(Op.i32_load, 2, w * 4);
    get(DirectArg.np).set(np);
    get(DirectArg.mp).set(mp);
    get(DirectArg.k).set(k);
    get(DirectArg.kc).set(kc);
    get(DirectArg.aDirect).set(aDirect);
    get(DirectArg.bDirect).set(bDirect);
    get(DirectArg.tilesM);
    get(DirectArg.tilesN).op(Op.i32_mul).set(per);
    if (fuseOperand) {
      // the fused operand lives in place and is packed into this task's own buffer
      get(DirectArg.buf);
      get(DirectArg.bufBytes).get(task).op(Op.i32_mul).op(Op.i32_add).set(buf!);
      if (fuse) get(DirectArg.aK).set(srcK!);
      else get(DirectArg.bCol).set(bCol);
    }
    c.get(task).get(per).op(Op.i32_div_u).set(batch);
    c.get(task).get(per).op(Op.i32_rem_u).set(task);
    // this batch's operands: in place at base + bases[batch]·e, packed at base + batch·stride
    const base = (dst: number, direct: number, w: DirectArg, bases: DirectArg, stride: DirectArg) => {
      get(w);
      get(bases).get(batch).i32(4).op(Op.i32_mul).op(Op.i32_add).mem(Op.i32_load, 2).i32(e).op(Op.i32_mul);
      get(stride).get(batch).op(Op.i32_mul);
      if (direct < 0) c.op(Op.drop).op(Op.i32_add).set(dst);
      else c.get(direct).op(Op.select).op(Op.i32_add).set(dst);
    };
    base(a, fuse ? -1 : aDirect, DirectArg.a, DirectArg.aBases, DirectArg.aBatch);
    base(b, fuseB ? -1 : bDirect, DirectArg.b, DirectArg.bBases, DirectArg.bBatch);
    get(DirectArg.c);
    get(DirectArg.cBatch).get(batch).op(Op.i32_mul).op(Op.i32_add).set(cc);
    // a packed operand steps through its panel: MR (NR) values per k, rows e apart
    c.get(aDirect).if();
    get(DirectArg.aRow).set(aRow);
    get(DirectArg.aK).set(aStep);
    c.op(Op.else);
    c.i32(e).set(aRow);
    c.i32(s.mr * e).set(aStep);
    c.end();
    c.get(bDirect).if();
    get(DirectArg.bK).set(bStep);
    c.op(Op.else);
    c.i32(s.nr * e).set(bStep);
    c.end();
    c.get(task);
    get(DirectArg.tilesN).op(Op.i32_div_u);
    get(DirectArg.mc).op(Op.i32_mul).set(m0);
    c.get(task);
    get(DirectArg.tilesN).op(Op.i32_rem_u);
    get(DirectArg.nc).op(Op.i32_mul).set(n0);
    min(c, () => get(DirectArg.mc).get(m0).op(Op.i32_add), () => c.get(mp));
    c.set(m1);
    min(c, () => get(DirectArg.nc).get(n0).op(Op.i32_add), () => c.get(np));
    c.set(n1);
    c.i32(0).set(k0);
    c.while(() => c.get(k0).get(k).op(Op.i32_lt_s), () => {
      min(c, () => c.get(kc), () => c.get(k).get(k0).op(Op.i32_sub));
      c.set(kcb);
      c.get(k0).i32(0).op(Op.i32_gt_s).set(acc);
      // packed A panels of this k block (row i's at apb + i·kcb·e): packed beforehand, or now into
      // this task's buffer, so that they are still in cache when the micro-kernel reads them
      if (fuse) {
        c.get(buf!).get(m0).get(kcb).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_sub).set(apb!);
        c.get(kcb).i32(s.mr * e).op(Op.i32_mul).set(panelBytes!);
        // panel by panel, four k a pass: the panel is written in order, A read a row of k at a time
        c.for(i, () => c.get(m0), () => c.get(m1), s.mr, () => {
          c.get(a).get(k0).get(srcK!).op(Op.i32_mul).op(Op.i32_add).get(i).i32(e).op(Op.i32_mul).op(Op.i32_add).set(src!);
          c.get(apb!).get(i).get(kcb).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(dst!);
          c.get(dst!).get(panelBytes!).op(Op.i32_add).set(kk!);
          const copy = (q: number) => {
            for (let v = 0; v < (s.mr * e) / 16; v++) c.get(dst!).get(src!).simdMem(Simd.v128_load, 0, v * 16).simdMem(Simd.v128_store, 4, q * s.mr * e + v * 16);
            c.get(src!).get(srcK!).op(Op.i32_add).set(src!);
          };
          c.while(() => c.get(dst!).i32(4 * s.mr * e).op(Op.i32_add).get(kk!).op(Op.i32_le_u), () => {
            for (let q = 0; q < 4; q++) copy(q);
            c.get(dst!).i32(4 * s.mr * e).op(Op.i32_add).set(dst!);
          });
          c.while(() => c.get(dst!).get(kk!).op(Op.i32_lt_u), () => {
            copy(0);
            c.get(dst!).i32(s.mr * e).op(Op.i32_add).set(dst!);
          });
        });
      }
      c.for(j, () => c.get(n0), () => c.get(n1), s.nr, () => {
        if (fuseB) {
          packPanelB(c, s, { b, bCol, j, k0, kcb, buf: buf!, src: src!, dst: dst!, kk: kk! });
          c.get(buf!).set(bt);
        } else {
          // B tile: in place b + j·e + k0·bK, or the panel at b + (k0·np + j·kcb)·e
          c.get(bDirect).if();
          c.get(b).get(j).i32(e).op(Op.i32_mul).op(Op.i32_add).get(k0).get(bStep).op(Op.i32_mul).op(Op.i32_add).set(bt);
          c.op(Op.else);
          c.get(b).get(k0).get(np).op(Op.i32_mul).get(j).get(kcb).op(Op.i32_mul).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(bt);
          c.end();
        }
        const tileAt = () => {
          c.get(aDirect).if();
          c.get(a).get(i).get(aRow).op(Op.i32_mul).op(Op.i32_add).get(k0).get(aStep).op(Op.i32_mul).op(Op.i32_add).set(at);
          c.op(Op.else);
          if (fuse) c.get(apb!);
          else c.get(a).get(k0).get(mp).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add);
          c.get(i).get(kcb).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(at);
          c.end();
          c.get(at).get(bt);
          c.get(cc).get(i).get(np).op(Op.i32_mul).get(j).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add);
          c.get(kcb).get(np).i32(e).op(Op.i32_mul).get(acc).get(aRow).get(aStep).get(bStep);
        };
        c.get(kcb).i32(SHORT_K).op(Op.i32_le_s).if();
        // the column of tiles m0..m1 in one call, each next one MR rows (one A panel) further on
        c.get(m0).set(i);
        tileAt();
        c.get(m1).get(m0).op(Op.i32_sub).i32(s.mr).op(Op.i32_div_u);
        c.get(aRow).i32(s.mr).op(Op.i32_mul).get(kcb).i32(s.mr * e).op(Op.i32_mul).get(aDirect).op(Op.select).call(column);
        c.op(Op.else);
        c.for(i, () => c.get(m0), () => c.get(m1), s.mr, () => {
          tileAt();
          c.call(micro);
        });
        c.end();
      });
      c.get(k0).get(kcb).op(Op.i32_add).set(k0);
    });
  }, name);
}

function loadArg(c: Code, arg: number, word: MatmulArg): Code {
  return c.get(arg).mem(Op.i32_load, 2, word * 4);
}

function min(c: Code, a: () => void, b: () => void): void {
  a();
  b();
  a();
  b();
  c.op(Op.i32_lt_s).op(Op.select);
}

/** The locals of a finished C tile an epilogue may read: rows [m0, m1), columns [n0, n1), C's base and padded width. */
export interface TileLocals {
  /** The argument block's address. */
  arg: number;
  m0: number;
  m1: number;
  n0: number;
  n1: number;
  c: number;
  np: number;
}

/**
 * Task export `name(arg, t)`: one (batch, row block, column block) of C, all k blocks in order,
 * then `epilogue` (if any) on the finished tile (int8Matmul scales its int32 tile into out there).
 */
export function emitDriver(mb: ModuleBuilder, t: Lanes, s: MicroShape, micro: number, name: string, epilogue?: (c: Code, tile: TileLocals) => void): void {
  const P = ValType.i32;
  mb.func([P, P], [], (c) => {
    const [arg, task] = [0, 1];
    const [a, b, cc, np, mp, k, kc, per, m0, m1, n0, n1, k0, kcb, ablk, bblk, i, j, acc] = Array.from({ length: 19 }, () => c.local(P));
    const e = t.bytes;
    loadArg(c, arg, MatmulArg.tilesM).tee(per);
    loadArg(c, arg, MatmulArg.tilesN).op(Op.i32_mul).set(per);
    loadArg(c, arg, MatmulArg.np).set(np);
    loadArg(c, arg, MatmulArg.mp).set(mp);
    loadArg(c, arg, MatmulArg.k).set(k);
    loadArg(c, arg, MatmulArg.kc).set(kc);
    // batch = task / per: offset the three base pointers
    const base = (dst: number, w: MatmulArg, bw: MatmulArg) => {
      loadArg(c, arg, w);
      loadArg(c, arg, bw).get(task).get(per).op(Op.i32_div_u).op(Op.i32_mul).op(Op.i32_add).set(dst);
    };
    base(a, MatmulArg.a, MatmulArg.aBatch);
    base(b, MatmulArg.b, MatmulArg.bBatch);
    base(cc, MatmulArg.c, MatmulArg.cBatch);
    // tile within the batch: row block = (task % per) / tilesN, column block = (task % per) % tilesN
    c.get(task).get(per).op(Op.i32_rem_u).set(task);
    c.get(task);
    loadArg(c, arg, MatmulArg.tilesN).op(Op.i32_div_u);
    loadArg(c, arg, MatmulArg.mc).op(Op.i32_mul).set(m0);
    c.get(task);
    loadArg(c, arg, MatmulArg.tilesN).op(Op.i32_rem_u);
    loadArg(c, arg, MatmulArg.nc).op(Op.i32_mul).set(n0);
    const end = (lo: number, w: MatmulArg, hi: number, dst: number) => {
      min(c, () => loadArg(c.get(lo), arg, w).op(Op.i32_add), () => c.get(hi));
      c.set(dst);
    };
    end(m0, MatmulArg.mc, mp, m1);
    end(n0, MatmulArg.nc, np, n1);
    c.i32(0).set(k0);
    c.while(() => c.get(k0).get(k).op(Op.i32_lt_s), () => {
      min(c, () => c.get(kc), () => c.get(k).get(k0).op(Op.i32_sub));
      c.set(kcb);
      c.get(a).get(k0).get(mp).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(ablk);
      c.get(b).get(k0).get(np).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(bblk);
      c.get(k0).i32(0).op(Op.i32_gt_s).set(acc);
      c.for(j, () => c.get(n0), () => c.get(n1), s.nr, () => {
        c.for(i, () => c.get(m0), () => c.get(m1), s.mr, () => {
          c.get(ablk).get(i).get(kcb).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add);
          c.get(bblk).get(j).get(kcb).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add);
          c.get(cc).get(i).get(np).op(Op.i32_mul).get(j).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add);
          c.get(kcb).get(np).i32(e).op(Op.i32_mul).get(acc).call(micro);
        });
      });
      c.get(k0).get(kcb).op(Op.i32_add).set(k0);
    });
    epilogue?.(c, { arg, m0, m1, n0, n1, c: cc, np });
  }, name);
}

/** Transposes four f32x4 locals in place (rows ↔ columns) through four temporaries. */
export function transpose4(c: Code, q: number[], t: number[]): void {
  const mix = (a: number, b: number, lanes: [number, number, number, number], dst: number) => c.get(a).get(b).shuffle32(lanes).set(dst);
  mix(q[0]!, q[1]!, [0, 4, 1, 5], t[0]!);
  mix(q[0]!, q[1]!, [2, 6, 3, 7], t[1]!);
  mix(q[2]!, q[3]!, [0, 4, 1, 5], t[2]!);
  mix(q[2]!, q[3]!, [2, 6, 3, 7], t[3]!);
  mix(t[0]!, t[2]!, [0, 1, 4, 5], q[0]!);
  mix(t[0]!, t[2]!, [2, 3, 6, 7], q[1]!);
  mix(t[1]!, t[3]!, [0, 1, 4, 5], q[2]!);
  mix(t[1]!, t[3]!, [2, 3, 6, 7], q[3]!);
}

/**
 * Task export `name(arg, t)` packing one MR-row panel of A (t < tasksA) or one NR-column panel of
 * B from the raw strided copies into the layout the micro-kernel reads (zero-padded at the edges).
 */
function emitPack(mb: ModuleBuilder, t: Lanes, s: MicroShape, name: string): void {
  const P = ValType.i32;
  const e = t.bytes;
  const load = e === 4 ? Op.i32_load : Op.i64_load;
  const store = e === 4 ? Op.i32_store : Op.i64_store;
  const al = e === 4 ? 2 : 3;
  mb.func([P, P], [], (c) => {
    const [arg, task] = [0, 1];
    const [batch, panel, src, dst, k0, kcb, d, r, kk, o, sp, valid, step, padded, k, kc, cc, pp, rowBytes] = Array.from({ length: 19 }, () => c.local(P));
    const quad = Array.from({ length: 4 }, () => c.local(ValType.v128));
    const tmp = Array.from({ length: 4 }, () => c.local(ValType.v128));
    const quads = e === 4 && s.mr === 4 && s.nr % 4 === 0;
    const get = (w: PackArg) => c.get(arg).mem(Op.i32_load, 2, w * 4);
    const zero = () => (e === 4 ? c.i32(0) : c.op(Op.i64_const).op(0));
    get(PackArg.k).set(k);
    get(PackArg.kc).set(kc);
    /** Walks the k blocks: sets kcb and d = dst + (k0·padded + first·kcb)·e, then runs body. */
    const kBlocks = (first: number, body: () => void) => {
      c.i32(0).set(k0);
      c.while(() => c.get(k0).get(k).op(Op.i32_lt_s), () => {
        min(c, () => c.get(kc), () => c.get(k).get(k0).op(Op.i32_sub));
        c.set(kcb);
        c.get(dst).get(k0).get(padded).op(Op.i32_mul).get(first).get(kcb).op(Op.i32_mul).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(d);
        body();
        c.get(k0).get(kcb).op(Op.i32_add).set(k0);
      });
    };
    const locate = (panels: PackArg, raw: PackArg, bases: PackArg, dstW: PackArg, bytes: PackArg, tile: number, extent: PackArg) => {
      c.get(task);
      get(panels).op(Op.i32_div_u).set(batch);
      c.get(task);
      get(panels).op(Op.i32_rem_u).i32(tile).op(Op.i32_mul).set(panel);
      get(raw);
      get(bases).get(batch).i32(4).op(Op.i32_mul).op(Op.i32_add).mem(Op.i32_load, 2).i32(e).op(Op.i32_mul).op(Op.i32_add).set(src);
      get(dstW).get(batch);
      get(bytes).op(Op.i32_mul).op(Op.i32_add).set(dst);
      get(panels).i32(tile).op(Op.i32_mul).set(padded);
      min(c, () => c.i32(tile), () => get(extent).get(panel).op(Op.i32_sub));
      c.set(valid);
    };
    c.get(task);
    get(PackArg.tasksA).op(Op.i32_lt_u).if();
    // A panel: rows panel..panel+mr, k-major (mr values per k)
    locate(PackArg.panelsA, PackArg.rawA, PackArg.aBases, PackArg.dstA, PackArg.aBytes, s.mr, PackArg.m);
    get(PackArg.sak).i32(e).op(Op.i32_mul).set(step);
    kBlocks(panel, () => {
      if (quads) {
        // full f32 panel: four k at a time, rows contiguous in k → 4×4 transposes; columns
        // contiguous in m → one vector per k
        c.get(valid).i32(s.mr).op(Op.i32_eq).if();
        c.get(src).get(panel);
        get(PackArg.sam).op(Op.i32_mul).get(k0);
        get(PackArg.sak).op(Op.i32_mul).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(sp);
        get(PackArg.sak).i32(1).op(Op.i32_eq).if();
        get(PackArg.sam).i32(e).op(Op.i32_mul).set(rowBytes);
        c.i32(0).set(kk);
        c.get(d).set(o);
        c.while(() => c.get(kk).i32(4).op(Op.i32_add).get(kcb).op(Op.i32_le_s), () => {
          c.get(sp).set(pp);
          for (let q = 0; q < 4; q++) {
            c.get(pp).simdMem(Simd.v128_load, 0).set(quad[q]!);
            if (q < 3) c.get(pp).get(rowBytes).op(Op.i32_add).set(pp);
          }
          transpose4(c, quad, tmp);
          for (let q = 0; q < 4; q++) c.get(o).get(quad[q]!).simdMem(Simd.v128_store, 4, q * 16);
          c.get(sp).i32(16).op(Op.i32_add).set(sp);
          c.get(o).i32(64).op(Op.i32_add).set(o);
          c.get(kk).i32(4).op(Op.i32_add).set(kk);
        });
        c.while(() => c.get(kk).get(kcb).op(Op.i32_lt_s), () => {
          c.get(sp).set(pp);
          for (let q = 0; q < 4; q++) {
            c.get(o).get(pp).mem(load, al).mem(store, al, q * e);
            if (q < 3) c.get(pp).get(rowBytes).op(Op.i32_add).set(pp);
          }
          c.get(sp).i32(e).op(Op.i32_add).set(sp);
          c.get(o).i32(16).op(Op.i32_add).set(o);
          c.get(kk).i32(1).op(Op.i32_add).set(kk);
        });
        c.op(Op.else);
        get(PackArg.sam).i32(1).op(Op.i32_eq).if();
        c.for(kk, () => c.i32(0), () => c.get(kcb), 1, () => {
          c.get(d).get(kk).i32(16).op(Op.i32_mul).op(Op.i32_add).get(sp).simdMem(Simd.v128_load, 0).simdMem(Simd.v128_store, 4);
          c.get(sp).get(step).op(Op.i32_add).set(sp);
        });
        c.op(Op.else);
        generalA();
        c.end();
        c.end();
        c.op(Op.else);
        generalA();
        c.end();
      } else generalA();
    });
    function generalA(): void {
      c.for(r, () => c.i32(0), () => c.i32(s.mr), 1, () => {
        c.get(d).get(r).i32(e).op(Op.i32_mul).op(Op.i32_add).set(o);
        c.get(r).get(valid).op(Op.i32_lt_s).if();
        c.get(src).get(panel).get(r).op(Op.i32_add);
        get(PackArg.sam).op(Op.i32_mul).get(k0);
        get(PackArg.sak).op(Op.i32_mul).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(sp);
        c.for(kk, () => c.i32(0), () => c.get(kcb), 1, () => {
          c.get(o).get(sp).mem(load, al).mem(store, al);
          c.get(sp).get(step).op(Op.i32_add).set(sp);
          c.get(o).i32(s.mr * e).op(Op.i32_add).set(o);
        });
        c.op(Op.else);
        c.for(kk, () => c.i32(0), () => c.get(kcb), 1, () => {
          c.get(o);
          zero();
          c.mem(store, al);
          c.get(o).i32(s.mr * e).op(Op.i32_add).set(o);
        });
        c.end();
      });
    }
    c.op(Op.else);
    // B panel: columns panel..panel+nr, k-major (nr values per k)
    c.get(task);
    get(PackArg.tasksA).op(Op.i32_sub).set(task);
    locate(PackArg.panelsB, PackArg.rawB, PackArg.bBases, PackArg.dstB, PackArg.bBytes, s.nr, PackArg.n);
    get(PackArg.sbn).i32(e).op(Op.i32_mul).set(step);
    kBlocks(panel, () => {
      // full panel with rows contiguous in n (the common B): one pointer step per k
      c.get(valid).i32(s.nr).op(Op.i32_eq).get(step).i32(e).op(Op.i32_eq).op(Op.i32_and).if();
      c.get(d).set(o);
      c.get(src).get(k0);
      get(PackArg.sbk).op(Op.i32_mul).get(panel).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(sp);
      get(PackArg.sbk).i32(e).op(Op.i32_mul).set(rowBytes);
      c.get(o).get(kcb).i32(s.nr * e).op(Op.i32_mul).op(Op.i32_add).set(pp);
      c.while(() => c.get(o).get(pp).op(Op.i32_lt_u), () => {
        for (let v = 0; v < (s.nr * e) / 16; v++) c.get(o).get(sp).simdMem(Simd.v128_load, 0, v * 16).simdMem(Simd.v128_store, 4, v * 16);
        c.get(sp).get(rowBytes).op(Op.i32_add).set(sp);
        c.get(o).i32(s.nr * e).op(Op.i32_add).set(o);
      });
      c.op(Op.else);
      c.for(kk, () => c.i32(0), () => c.get(kcb), 1, () => {
        c.get(d).get(kk).i32(s.nr * e).op(Op.i32_mul).op(Op.i32_add).set(o);
        c.get(src).get(k0).get(kk).op(Op.i32_add);
        get(PackArg.sbk).op(Op.i32_mul).get(panel);
        get(PackArg.sbn).op(Op.i32_mul).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(sp);
        if (quads) {
          // full f32 panel with columns contiguous in k (a transposed view, x·Wᵀ): four k at a
          // time, 4×4 transposes of each group of four columns
          c.get(valid).i32(s.nr).op(Op.i32_eq);
          get(PackArg.sbk).i32(1).op(Op.i32_eq).op(Op.i32_and).get(kk).i32(4).op(Op.i32_add).get(kcb).op(Op.i32_le_s).op(Op.i32_and).if();
          for (let g = 0; g < s.nr / 4; g++) {
            c.get(sp).get(step).i32(4 * g).op(Op.i32_mul).op(Op.i32_add).set(pp);
            for (let q = 0; q < 4; q++) {
              c.get(pp).simdMem(Simd.v128_load, 0).set(quad[q]!);
              if (q < 3) c.get(pp).get(step).op(Op.i32_add).set(pp);
            }
            transpose4(c, quad, tmp);
            for (let q = 0; q < 4; q++) c.get(o).get(quad[q]!).simdMem(Simd.v128_store, 4, q * s.nr * e + g * 16);
          }
          c.get(kk).i32(3).op(Op.i32_add).set(kk);
          c.op(Op.else);
        }
        c.for(cc, () => c.i32(0), () => c.i32(s.nr), 1, () => {
          c.get(cc).get(valid).op(Op.i32_lt_s).if();
          c.get(o).get(cc).i32(e).op(Op.i32_mul).op(Op.i32_add);
          c.get(sp).get(cc).get(step).op(Op.i32_mul).op(Op.i32_add).mem(load, al).mem(store, al);
          c.op(Op.else);
          c.get(o).get(cc).i32(e).op(Op.i32_mul).op(Op.i32_add);
          zero();
          c.mem(store, al);
          c.end();
        });
        if (quads) c.end();
      });
      c.end();
    });
    c.end();
  }, name);
}

/** Adds the `matmul_*`, `matmul_direct_*`, `matmul_fused_*`, `matmul_fusedb_f32` and `pack_*` task exports. */
export function emitMatmul(mb: ModuleBuilder, flavor: Flavor): void {
  emitDriver(mb, F32, F32_TILE, emitMicro(mb, F32, F32_TILE, flavor.relaxed), 'matmul_f32');
  emitDriver(mb, F64, F64_TILE, emitMicro(mb, F64, F64_TILE, flavor.relaxed), 'matmul_f64');
  emitPack(mb, F32, F32_TILE, 'pack_f32');
  emitPack(mb, F64, F64_TILE, 'pack_f64');
  for (const [t, s, dtype] of [[F32, F32_TILE, 'f32'], [F64, F64_TILE, 'f64']] as const) {
    const micro = emitMicroStrided(mb, t, s, flavor.relaxed);
    const column = emitMicroTiles(mb, t, s, flavor.relaxed);
    emitDirectDriver(mb, t, s, micro, column, `matmul_direct_${dtype}`);
    emitDirectDriver(mb, t, s, micro, column, `matmul_fused_${dtype}`, 'a');
    if (dtype === 'f32') emitDirectDriver(mb, t, s, micro, column, 'matmul_fusedb_f32', 'b');
  }
}
