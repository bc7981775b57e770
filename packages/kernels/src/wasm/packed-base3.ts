/**
 * @file wasm `packedMatmul` with `packing: 'base3'` (float32): five trits per byte in TQ1_0's
 * order (js/base3.ts). Sixteen bytes give sixteen consecutive weights per digit: digit k of a
 * byte is the top of 3·(byte·3^k mod 256) >> 8, taken as (x ≥ 86) + (x ≥ 171) with two signed
 * byte compares of x + 128, the ·3 as two wrapping byte adds; the digits index the level table by swizzle as
 * the 2-bit kernel does; a row's last < 80 trits (⌈t/5⌉ bytes) decode the same way from a copy.
 */
import type { KernelArg } from '../backend.js';
import { base3Sections } from '../js/base3.js';
import type { PackedOperands } from '../js/packed.js';
import type { PackedMatmulParams, TypedArray } from '../names.js';
import { type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { align16, levels16, PARALLEL_MIN_MACS, placeOperands, range, rowEpilogue, shuffle8, stageOperands, TOUCH_PAGES, touchAhead, touchRows, v128Const } from './packed.js';
import { affineLevels16, affineMagic } from './packed-planes.js';
import { ARGS, type Engine, type Flavor } from './runtime.js';

type Arg = KernelArg<TypedArray>;

/** Integer byte-lane opcodes the shared table (assembler.ts) does not list. */
const I8 = { gt_s: 0x27, add: 0x6e, sub: 0x71 } as const;

/** Words of the argument block (i32 at ARGS; pointers in bytes). */
const enum W {
  x, codes, planes, table, scale, zero, bias, out, n, k, o, groupSize, rowsPerTask, buf, bufBytes, hasBias,
  rowBytes,
  /** Whole 256-trit blocks per row. */
  blocks,
  /** 1 where the row's last partial block has a 160-trit (32-byte) / 80-trit (16-byte) section. */
  has160, has80,
  /** Bytes holding the trits after those sections (⌈t/5⌉ for t < 80; 0 for none). */
  tailBytes,
  /**
   * 1: every 256-block, and the partial last one, lies in one group (groupSize a multiple of 256,
   * or one group a row), scaled as it is decoded.
   */
  blockScaled,
  /** 1: one row of x and blockScaled (decode and multiply in registers). */
  fused,
  /**
   * 1: groups of a multiple of 64 trits, summed as the 2-bit fields kernel sums them there
   * (packed-planes.ts): x·(L − z) per group in four f32x4, then scaled once into the row's vector.
   */
  grouped,
  /** Affine levels (L[d] = L[0] + d): the float32 bits of 1.5·2^23 − L[0] (see `affineLevels16`). */
  magic,
  /** Rows ahead of the current one whose lines are touched (0: none; see `touchAhead`). */
  ahead,
  /** Where the touched words go (never read). */
  sink,
}

/**
 * Task export `packed_t3[g][_z](arg, t)`: output columns [t·rowsPerTask, …) for every row of x.
 * Each weight is (L[d] − z)·s in float32, as the dequantized weight is, and is dotted in 16-wide
 * chunks in row order on both paths (so a batched row equals that row alone, bit for bit).
 */
function emitTask(mb: ModuleBuilder, zeroPoint: boolean, fma: boolean, groupedOnly: boolean, affine: boolean): void {
  const P = ValType.i32;
  const V = ValType.v128;
  const F = ValType.f32;
  mb.func([P, P], [], (c) => {
    const [arg, task] = [0, 1];
    const [x, codes, table, scale, zero, bias, out, N, K, O, gs, rowBytes, blocks, has160, has80, tailBytes, blockScaled, fused, hasBias, G] = range(20, () => c.local(P));
    const [o, o1, p, base, blk, g, sp, j, n, bi, m, xp, buf, bufBytes] = range(14, () => c.local(P));
    const [s, z, t] = range(3, () => c.local(F));
    const [sv, zv, q0, q1, c86, c171, flip, A, gsum] = range(9, () => c.local(V));
    const grouped = c.local(P);
    const [cur, kk, codesEnd] = [c.local(P), c.local(P), c.local(P)];
    const magic = c.local(V);
    const [ahead, sink, ...touchTmp] = range(5, () => c.local(P));
    const planes = range(4, () => c.local(V));
    const w = range(4, () => c.local(V));
    const acc = range(4, () => c.local(V));
    const tmp = range(8, () => c.local(V));
    const word = (k: W) => c.get(arg).mem(Op.i32_load, 2, k * 4);
    const pairs: [number, W][] = [
      [x, W.x], [codes, W.codes], [table, W.table], [scale, W.scale], [zero, W.zero], [bias, W.bias], [out, W.out],
      [N, W.n], [K, W.k], [O, W.o], [gs, W.groupSize], [rowBytes, W.rowBytes], [blocks, W.blocks], [has160, W.has160],
      [has80, W.has80], [tailBytes, W.tailBytes], [blockScaled, W.blockScaled], [fused, W.fused], [hasBias, W.hasBias], [grouped, W.grouped],
    ];
    for (const [l, k] of pairs) word(k).set(l);
    c.get(K).get(gs).op(Op.i32_div_u).set(G);
    word(W.ahead).set(ahead);
    c.i32(0).set(sink);
    c.get(codes).get(O).get(rowBytes).op(Op.i32_mul).op(Op.i32_add).set(codesEnd);
    word(W.bufBytes).set(bufBytes);
    word(W.buf).get(task).get(bufBytes).op(Op.i32_mul).op(Op.i32_add).set(buf);
    if (affine) word(W.magic).simd(Simd.i32x4_splat).set(magic);
    else for (let b = 0; b < 4; b++) word(W.planes).simdMem(Simd.v128_load, 0, 16 * b).set(planes[b]!);
    // the thresholds 86 and 171 as signed bytes of the biased code (see `chunk`)
    c.i32(86 - 1 - 128).simd(Simd.i8x16_splat).set(c86);
    c.i32(171 - 1 - 128).simd(Simd.i8x16_splat).set(c171);
    c.i32(0x80).simd(Simd.i8x16_splat).set(flip);
    c.get(task);
    word(W.rowsPerTask).op(Op.i32_mul).set(o);
    c.get(o);
    word(W.rowsPerTask).op(Op.i32_add).set(o1);
    c.get(o1).get(O).get(o1).get(O).op(Op.i32_lt_u).op(Op.select).set(o1);

    /**
     * dst = 3·src mod 256 per byte. It keeps the bias the loads add (byte ^ 0x80 = byte + 128):
     * 3·(v + 128) = 3v + 128 mod 256.
     */
    const times3 = (src: number, dst: number) => c.get(src).get(src).simd(I8.add).get(src).simd(I8.add).set(dst);
    /** s, sv (and z, zv) of group g of row o (sp: the row's first scale, in bytes). */
    const loadScale = () => {
      c.get(sp).get(g).i32(2).op(Op.i32_shl).op(Op.i32_add).set(j);
      c.get(scale).get(j).op(Op.i32_add).mem(Op.f32_load, 2).tee(s).simd(Simd.f32x4_splat).set(sv);
      if (zeroPoint) c.get(zero).get(j).op(Op.i32_add).mem(Op.f32_load, 2).tee(z).simd(Simd.f32x4_splat).set(zv);
      // grouped: weights L − z (times 1, exact), s applied per group by `fold`
      c.get(grouped).if();
      c.f32(1).simd(Simd.f32x4_splat).set(sv);
      c.end();
    };
    /** A ⊕= ((acc0 + acc1) + (acc2 + acc3))·s, then acc = 0 (as packed-planes.ts folds a group). */
    const fold = () => {
      c.get(acc[0]!).get(acc[1]!).simd(Simd.f32x4_add).get(acc[2]!).get(acc[3]!).simd(Simd.f32x4_add).simd(Simd.f32x4_add).set(gsum);
      if (fma) c.get(gsum).get(s).simd(Simd.f32x4_splat).get(A).simd(Simd.f32x4_relaxed_madd).set(A);
      else c.get(A).get(gsum).get(s).simd(Simd.f32x4_splat).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).set(A);
      clearAcc();
    };
    /** Grouped: the row's vector into acc0 for the shared epilogue ((A + 0) + (0 + 0) = A, but −0). */
    const unfold = () => {
      c.get(grouped).if();
      clearAcc();
      c.get(A).set(acc[0]!);
      c.end();
    };
    /** acc_q ⊕= a_q·(x at ptr + off + 16q) (ptr: xp, or the running pointer of a section's loop). */
    const madd = (a: (q: number) => void, off: number, ptr = xp) => {
      for (let q = 0; q < 4; q++) {
        if (fma) {
          a(q);
          c.get(ptr).simdMem(Simd.v128_load, 0, off + 16 * q).get(acc[q]!).simd(Simd.f32x4_relaxed_madd).set(acc[q]!);
        } else {
          c.get(acc[q]!);
          a(q);
          c.get(ptr).simdMem(Simd.v128_load, 0, off + 16 * q).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).set(acc[q]!);
        }
      }
    };
    /**
     * The digits in the bytes of local v (each byte already times 3^k) → the 16 weights at row
     * position `at` past `ptr` (xp fused, base stored; or a section loop's running pointer):
     * (L − z)·s, then multiplied into acc (fused) or stored.
     */
    const chunk = (v: number, at: number, into: 'acc' | 'store', ptr = into === 'acc' ? xp : base) => {
      // the masks (x ≥ 86), (x ≥ 171) are 0 or −1, and 0 − both is the digit 0, 1, 2; the bytes
      // hold x + 128, so each is one signed compare (x86 has no unsigned byte compare: ≥ was
      // three instructions)
      v128Const(c, range(16, () => 0)).get(v).get(c86).simd(I8.gt_s).simd(I8.sub).get(v).get(c171).simd(I8.gt_s).simd(I8.sub).set(tmp[0]!);
      // relaxed_swizzle where available: the indices (0, 1, 2) are in range, so it looks up the
      // same bytes without the range fix-up (with the next: ternary b3 4096², one row, CPU time,
      // 0.53× → 0.63× the fp32 matvec of the same run)
      // an affine table (ternary's −1, 0, 1) by widening, as the 2-bit kernel decodes an int grid's
      // (exact either way: the same weights): no table planes held in registers
      if (affine) affineLevels16(c, magic, w, tmp);
      else levels16(c, planes, w, tmp, fma ? Simd.i8x16_relaxed_swizzle : Simd.i8x16_swizzle);
      for (const q of w) {
        c.get(q);
        if (zeroPoint) c.get(zv).simd(Simd.f32x4_sub);
        // grouped, sv is 1 here: the multiply would change nothing (an export without it)
        if (!groupedOnly) c.get(sv).simd(Simd.f32x4_mul);
        c.set(q);
      }
      if (into === 'acc') madd((q) => c.get(w[q]!), 4 * at, ptr);
      else for (let q = 0; q < 4; q++) c.get(ptr).get(w[q]!).simdMem(Simd.v128_store, 0, 4 * at + 16 * q);
    };
    /**
     * The five digits of `vs` (16 bytes each, byte vectors at p + at, p + at + 16 …) → row
     * positions pos + 16·|vs|·k + 16i + (0…15), digit k of vector i: a loop over k, still in row
     * order, not unrolled: TurboFan issues a block's loads first, and a whole unrolled block's x
     * vectors spilled (ternary b3 4096², one row: most of its time; read off --print-wasm-code).
     */
    const digits = (vs: readonly number[], at: number, pos: number, into: 'acc' | 'store') => {
      vs.forEach((q, i) => c.get(p).simdMem(Simd.v128_load, 0, at + 16 * i).get(flip).simd(Simd.v128_xor).set(q));
      c.get(into === 'acc' ? xp : base).i32(4 * pos).op(Op.i32_add).set(cur);
      c.for(kk, () => c.i32(0), () => c.i32(5), 1, () => {
        vs.forEach((q, i) => chunk(q, 16 * i, into, cur));
        for (const q of vs) times3(q, q);
        c.get(cur).i32(64 * vs.length).op(Op.i32_add).set(cur);
      });
    };
    /** 32 bytes at p + at → row positions pos + 32k + (0…31), digit k. */
    const section160 = (at: number, pos: number, into: 'acc' | 'store') => digits([q0, q1], at, pos, into);
    /** 16 bytes at p + at → row positions pos + 16k + (0…15), digit k. */
    const section80 = (at: number, pos: number, into: 'acc' | 'store') => digits([q0], at, pos, into);
    /** TQ1_0's qh: 4 bytes at p + at → positions pos + 4k + j (byte j, digit k) in one chunk. */
    const section16 = (at: number, pos: number, into: 'acc' | 'store') => {
      c.get(p).simdMem(Simd.v128_load32_zero, 0, at).set(q0);
      shuffle8(c.get(q0).get(q0), range(16, (i) => i & 3)).set(q0);
      times3(q0, q1);
      shuffle8(c.get(q0).get(q1), range(16, (i) => (i < 4 ? i : 16 + i))).set(tmp[1]!);
      times3(q1, q0);
      times3(q0, q1);
      shuffle8(c.get(q0).get(q1), range(16, (i) => (i < 12 ? i : 16 + i))).set(tmp[2]!);
      shuffle8(c.get(tmp[1]!).get(tmp[2]!), range(16, (i) => (i < 8 ? i : 16 + i))).get(flip).simd(Simd.v128_xor).set(q0);
      chunk(q0, pos, into);
    };
    /** One whole 256-block at p, its weights at base (position 0). */
    const block = (into: 'acc' | 'store') => {
      section160(0, 0, into);
      section80(32, 160, into);
      section16(48, 240, into);
    };
    /** g = the group of block blk (blk·256 / groupSize). */
    const blockGroup = () => c.get(blk).i32(8).op(Op.i32_shl).get(gs).op(Op.i32_div_u).set(g);
    const { clearAcc, finish } = rowEpilogue(c, { acc, t, hasBias, bias, o, out, O });

    c.while(() => c.get(o).get(o1).op(Op.i32_lt_u), () => {
      touchAhead(c, { o, ahead, O, codes, rowBytes, scale, scaleRow: () => c.get(G).i32(2).op(Op.i32_shl), stride: TOUCH_PAGES, sink, tmp: touchTmp as [number, number, number] });
      c.get(codes).get(o).get(rowBytes).op(Op.i32_mul).op(Op.i32_add).set(p);
      c.get(o).get(G).op(Op.i32_mul).i32(2).op(Op.i32_shl).set(sp);
      c.get(fused).if();
      {
        c.get(x).set(xp);
        clearAcc();
        c.i32(0).simd(Simd.i32x4_splat).set(A);
        c.for(blk, () => c.i32(0), () => c.get(blocks), 1, () => {
          blockGroup();
          loadScale();
          block('acc');
          c.get(p).i32(52).op(Op.i32_add).set(p);
          c.get(xp).i32(1024).op(Op.i32_add).set(xp);
          // the group's last block
          c.get(grouped).get(blk).i32(1).op(Op.i32_add).i32(8).op(Op.i32_shl).get(gs).op(Op.i32_rem_u).op(Op.i32_eqz).op(Op.i32_and).if();
          fold();
          c.end();
        });
        unfold();
        c.f32(0).set(t);
        finish(() => c.i32(0));
      }
      c.op(Op.else);
      {
        // the row into the buffer: scaled as decoded where each block (and the partial one) lies in
        // one group, else levels (s = 1, z = 0) scaled group by group afterwards
        c.get(blockScaled).if();
        c.i32(0).set(g);
        loadScale();
        c.op(Op.else);
        c.f32(1).simd(Simd.f32x4_splat).set(sv);
        if (zeroPoint) c.f32(0).simd(Simd.f32x4_splat).set(zv);
        c.end();
        c.get(buf).set(base);
        c.for(blk, () => c.i32(0), () => c.get(blocks), 1, () => {
          c.get(blockScaled).if();
          blockGroup();
          loadScale();
          c.end();
          block('store');
          c.get(p).i32(52).op(Op.i32_add).set(p);
          c.get(base).i32(1024).op(Op.i32_add).set(base);
        });
        c.get(has160).if();
        section160(0, 0, 'store');
        c.get(p).i32(32).op(Op.i32_add).set(p);
        c.get(base).i32(640).op(Op.i32_add).set(base);
        c.end();
        c.get(has80).if();
        section80(0, 0, 'store');
        c.get(p).i32(16).op(Op.i32_add).set(p);
        c.get(base).i32(320).op(Op.i32_add).set(base);
        c.end();
        // the last t < 80 trits: byte m, digit k holds position m + b·k (b = ⌈t/5⌉ ≤ 16), so each
        // digit of the b bytes is a run of b weights; the bytes are copied to a zeroed 16-byte
        // stage (a load at p could pass the end of memory), and each digit's 16 lanes are stored
        // at b·k, the next digit overwriting the b…15 lanes past its run (the buffer has room)
        c.get(tailBytes).if();
        {
          // 16 bytes from p where they lie within the codes (the bytes past the tail's only reach
          // lanes that the next digit overwrites or that lie past the row); the last row's copied
          // to a stage byte by byte (10 byte stores then a vector load of them stalled the
          // forwarding: 384 × 128, one row, kernel CPU time 28 → 17 µs with the direct load)
          c.get(p).i32(16).op(Op.i32_add).get(codesEnd).op(Op.i32_le_u).if();
          c.get(p).simdMem(Simd.v128_load, 0).get(flip).simd(Simd.v128_xor).set(q0);
          c.op(Op.else);
          c.get(buf).get(bufBytes).op(Op.i32_add).i32(16).op(Op.i32_sub).set(j);
          c.get(j).i32(0).simd(Simd.i32x4_splat).simdMem(Simd.v128_store, 0);
          c.for(m, () => c.i32(0), () => c.get(tailBytes), 1, () => {
            c.get(j).get(m).op(Op.i32_add).get(p).get(m).op(Op.i32_add).mem(Op.i32_load8_u, 0).mem(Op.i32_store8, 0);
          });
          c.get(j).simdMem(Simd.v128_load, 0).get(flip).simd(Simd.v128_xor).set(q0);
          c.end();
          for (let k = 0; k < 5; k++) {
            if (k) times3(q0, q0);
            chunk(q0, 0, 'store');
            c.get(base).get(tailBytes).i32(2).op(Op.i32_shl).op(Op.i32_add).set(base);
          }
        }
        c.end();
        // grouped, the weights stay L − z (scaled per group by `fold`): nothing to do without z
        c.get(blockScaled).op(Op.i32_eqz);
        if (!zeroPoint) c.get(grouped).op(Op.i32_eqz).op(Op.i32_and);
        c.if();
        {
          // (L − z)·s group by group, four at a time and then one by one
          c.get(buf).set(base);
          c.for(g, () => c.i32(0), () => c.get(G), 1, () => {
            loadScale();
            c.for(bi, () => c.i32(0), () => c.get(gs).i32(2).op(Op.i32_shr_u), 1, () => {
              c.get(base).get(base).simdMem(Simd.v128_load, 0);
              if (zeroPoint) c.get(zv).simd(Simd.f32x4_sub);
              c.get(sv).simd(Simd.f32x4_mul).simdMem(Simd.v128_store, 0);
              c.get(base).i32(16).op(Op.i32_add).set(base);
            });
            c.for(bi, () => c.get(gs).i32(-4).op(Op.i32_and), () => c.get(gs), 1, () => {
              c.get(base).get(base).mem(Op.f32_load, 2);
              if (zeroPoint) c.get(z).op(Op.f32_sub);
              c.get(s).op(Op.f32_mul).mem(Op.f32_store, 2);
              c.get(base).i32(4).op(Op.i32_add).set(base);
            });
          });
        }
        c.end();
        // a dot per row of x, in the chunks the fused path takes
        c.for(n, () => c.i32(0), () => c.get(N), 1, () => {
          c.get(x).get(n).get(K).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(xp);
          c.get(buf).set(base);
          clearAcc();
          c.i32(0).simd(Simd.i32x4_splat).set(A);
          // grouped: j counts down the group's chunks, g its scale's address (no division a chunk)
          c.get(gs).i32(4).op(Op.i32_shr_u).set(j);
          c.get(scale).get(sp).op(Op.i32_add).set(g);
          c.for(bi, () => c.i32(0), () => c.get(K).i32(4).op(Op.i32_shr_u), 1, () => {
            madd((q) => c.get(base).simdMem(Simd.v128_load, 0, 16 * q), 0);
            c.get(xp).i32(64).op(Op.i32_add).set(xp);
            c.get(base).i32(64).op(Op.i32_add).set(base);
            // grouped (groups of whole chunks): the group's last chunk
            c.get(grouped).if();
            c.get(j).i32(1).op(Op.i32_sub).tee(j).op(Op.i32_eqz).if();
            c.get(g).mem(Op.f32_load, 2).set(s);
            fold();
            c.get(g).i32(4).op(Op.i32_add).set(g);
            c.get(gs).i32(4).op(Op.i32_shr_u).set(j);
            c.end();
            c.end();
          });
          unfold();
          c.f32(0).set(t);
          c.for(j, () => c.get(K).i32(-16).op(Op.i32_and), () => c.get(K), 1, () => {
            c.get(t).get(xp).mem(Op.f32_load, 2).get(base).mem(Op.f32_load, 2).op(Op.f32_mul).op(Op.f32_add).set(t);
            c.get(xp).i32(4).op(Op.i32_add).set(xp);
            c.get(base).i32(4).op(Op.i32_add).set(base);
          });
          finish(() => c.get(n));
        });
      }
      c.end();
      c.get(o).i32(1).op(Op.i32_add).set(o);
    });
    c.get(arg).get(sink).mem(Op.i32_store, 2, W.sink * 4);
  }, `packed_t3${groupedOnly ? 'g' : ''}${affine ? 'a' : ''}${zeroPoint ? '_z' : ''}`);
}

/** Adds the `packed_t3[g][a][_z]` task exports (g: for grouped calls only; a: affine levels). */
export function emitPackedBase3(mb: ModuleBuilder, flavor: Flavor): void {
  for (const z of [false, true]) for (const g of [false, true]) for (const a of [false, true]) emitTask(mb, z, flavor.relaxed, g, a);
}

/** A row of K trits as the kernel walks it: whole 256-blocks, then the last block's sections. */
interface RowLayout {
  rowBytes: number;
  blocks: number;
  has160: boolean;
  has80: boolean;
  /** Bytes of the trits after the 160/80 sections of the last partial block (0 for none). */
  tailBytes: number;
}

/** Layouts by K: a model's layers share a few widths, and base3Sections allocates (cleared past 64 widths). */
const layouts = new Map<number, RowLayout>();

function rowLayout(K: number): RowLayout {
  const known = layouts.get(K);
  if (known) return known;
  const sections = base3Sections(K);
  const blocks = Math.floor(K / 256);
  const last = sections.filter((q) => q.pos >= blocks * 256);
  const layout: RowLayout = {
    rowBytes: sections.length ? sections[sections.length - 1]!.at + sections[sections.length - 1]!.bytes : 0,
    blocks,
    has160: last.some((q) => q.length === 160),
    has80: last.some((q) => q.length === 80),
    tailBytes: last.find((q) => q.length !== 160 && q.length !== 80)?.bytes ?? 0,
  };
  if (layouts.size >= 64) layouts.clear();
  layouts.set(K, layout);
  return layout;
}

/** A call's three levels as float32 and their bytes (reused, as packed.ts's). */
const LEVELS = new Float32Array(3);
const LEVEL_BYTES = new Uint8Array(LEVELS.buffer);

/**
 * Runs a base-3 `packedMatmul` whose operands wasm/packed.ts has checked and found float32, with
 * a contiguous x and at least one output; false (the js oracle runs instead) when the scratch
 * block cannot hold the call.
 */
export function packedBase3Wasm(engine: Engine, ops: PackedOperands, out: Arg, params: PackedMatmulParams): boolean {
  const { x, codes, table, scale, zero, bias, N, K, O, G } = ops;
  const gs = params.groupSize;
  const { rowBytes, blocks, has160, has80, tailBytes } = rowLayout(K);
  const threaded = engine.threads > 1 && N * O * K >= PARALLEL_MIN_MACS;
  const tasks = threaded ? Math.min(O, engine.threads * 4) : 1;
  const rowsPerTask = Math.ceil(O / tasks);
  const nTasks = Math.ceil(O / rowsPerTask);
  const sizes: [Arg | null, number][] = [[x, N * K], [codes, O * rowBytes], [table, 3], [scale, O * G], [zero, O * G], [bias, O]];
  const placement = placeOperands(engine, sizes, out, N * O);
  const { place, outAt, outPtr } = placement;
  let at = placement.at;
  // groups of whole 64-trit units sum as the 2-bit kernel's (see W.grouped): levels decoded unscaled
  const grouped = gs % 64 === 0;
  const blockScaled = !grouped && (gs % 256 === 0 || G === 1);
  const fused = N === 1 && gs % 256 === 0;
  // past the row: the tail's overhanging lanes (≤ 19 floats), then its 16-byte stage
  const bufBytes = fused ? 0 : align16(K * 4) + 80 + 16;
  const buf = at;
  at += nTasks * bufBytes;
  if (!engine.reserve(at - engine.scratch)) return false;
  stageOperands(engine, place);
  const magic = affineMagic(table, 3);
  if (magic === null) {
    // plane b holds byte b of the three levels (little-endian float32), the rest zero
    const u8 = engine.u8;
    for (let f = 0; f < 3; f++) LEVELS[f] = table.data[table.offset + f]!;
    u8.fill(0, engine.scratch, engine.scratch + 64);
    for (let f = 0; f < 3; f++) for (let b = 0; b < 4; b++) u8[engine.scratch + 16 * b + f] = LEVEL_BYTES[4 * f + b]!;
  }
  // the argument block, word by word (no arrays: at the tiny-Llama shapes the call's js is a
  // good part of its time)
  const args = engine.i32;
  const a0 = ARGS / 4;
  args[a0 + W.x] = place[0]!.addr;
  args[a0 + W.codes] = place[1]!.addr;
  args[a0 + W.planes] = engine.scratch;
  args[a0 + W.table] = place[2]!.addr;
  args[a0 + W.scale] = place[3]!.addr;
  args[a0 + W.zero] = place[4]!.addr;
  args[a0 + W.bias] = place[5]!.addr;
  args[a0 + W.out] = outPtr;
  args[a0 + W.n] = N;
  args[a0 + W.k] = K;
  args[a0 + W.o] = O;
  args[a0 + W.groupSize] = gs;
  args[a0 + W.rowsPerTask] = rowsPerTask;
  args[a0 + W.buf] = buf;
  args[a0 + W.bufBytes] = bufBytes;
  args[a0 + W.hasBias] = bias ? 1 : 0;
  args[a0 + W.rowBytes] = rowBytes;
  args[a0 + W.blocks] = blocks;
  args[a0 + W.has160] = has160 ? 1 : 0;
  args[a0 + W.has80] = has80 ? 1 : 0;
  args[a0 + W.tailBytes] = tailBytes;
  args[a0 + W.blockScaled] = blockScaled ? 1 : 0;
  args[a0 + W.fused] = fused ? 1 : 0;
  args[a0 + W.grouped] = grouped ? 1 : 0;
  args[a0 + W.magic] = magic ?? 0;
  args[a0 + W.ahead] = touchRows(O * rowBytes + O * G * 4, O, TOUCH_PAGES);
  engine.parallel(`packed_t3${grouped ? 'g' : ''}${magic !== null ? 'a' : ''}${zero ? '_z' : ''}`, ARGS, nTasks, threaded);
  if (outAt < 0) engine.stageOut(out, engine.f32, outPtr, N * O);
  return true;
}
