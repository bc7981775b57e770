/**
 * @file wasm `packedMatmul` for 1/2/4-bit fields whose groups are whole 16-byte units (groupSize ·
 * bits a multiple of 128): the fast path of packed.ts (which keeps the other layouts).
 *
 * Sixteen code bytes are split into 8/bits bit planes, plane p holding the fields F·i + p of the
 * unit (F = 8/bits fields a byte, i the byte): one shift and one mask a plane. 1- and 4-bit
 * fields are summed in that plane order, x permuted once per call to match (O(N·K), against
 * O(N·O·K) multiply-adds); 2-bit planes (x read as it is) are put back in row order by two rounds of unpacks, so the
 * base-3 kernel, which decodes the same trits in row order, sums them the same way bit for bit.
 * Sixteen fields become levels by the table swizzle of packed.ts (relaxed_swizzle where available:
 * the same lookup, without the range fix-up of indices that are always < 16 here), or, for an int
 * grid's table, by widening (see `affineLevels16`; 4-bit int grids near zero with the code offset
 * lifted out of the loop, `liftedLevels16`). Each group sums x·(L − z) in four f32x4 accumulators
 * and is scaled once, ((a0 + a1) + (a2 + a3))·s added to the row's vector: the scale leaves the
 * inner loop; 4-bit fields sum each unit in two accumulators, scale it and store it, and the row
 * adds the stored units (see `groups`).
 *
 * One row of x decodes and multiplies in registers; several rows decode each weight row once into
 * the task's buffer (L − z, unscaled, in the same order) and sum it against each row the same way,
 * so a batched row equals that row alone bit for bit; rows of the weight go to the thread pool.
 */
import type { KernelArg } from '../backend.js';
import type { PackedOperands } from '../js/packed.js';
import type { TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { align16, HI16, HI8, horizontalSum, levels16, LO16, LO8, PARALLEL_MIN_MACS, placeOperands, range, shuffle8, stageOperands, TOUCH_PAGES, touchAhead, touchRows, v128Const } from './packed.js';
import { ARGS, type Engine, type Flavor } from './runtime.js';

type Arg = KernelArg<TypedArray>;

/** i16x8 opcodes the shared opcode table (assembler.ts) does not list. */
const I16X8_SPLAT = 0x10;
const I16X8_SHL = 0x8b;
const I16X8_SHR_U = 0x8d;
const I16X8_EXTEND_LOW_U8 = 0x89;
const I16X8_EXTEND_HIGH_U8 = 0x8a;

/** Rows of the weight whose units one loop runs before their sums are added up (4-bit fields, one row of x: see `emitTask`). */
const ROW_BLOCK = 16;
/** The longest rows (inputs) that go in blocks of ROW_BLOCK. */
const BLOCK_MAX_K = 1024;

/** Words of the argument block (i32 at ARGS; pointers in bytes). */
const enum W {
  x, codes, planes, scale, zero, bias, out, n, k, o, units, rowsPerTask, buf, bufBytes, hasBias,
  /** Affine decode: the float32 bits of 1.5·2^23 − L[0] (see `emitTask`). */
  magic,
  /** Lifted 4-bit decode: per row of x and unit, Σx and −c·Σx as two f32x4 (see `liftedLevels16`). */
  lift,
  /** Rows ahead of the current one whose lines are touched (0: none; see `touchAhead`). */
  ahead,
  /** Where the touched words go (never read). */
  sink,
}

/**
 * The levels L[f] = f + L[0] (int grids) of the 16 field values in local t[0] (one per byte) into
 * four f32x4 locals w, t[1…2] overwritten; `magic` holds the float32 1.5·2^23 − L[0] in each lane.
 * Each byte is widened to the low bits of a float32 whose high half is 0x4b40, i.e. 1.5·2^23 + f
 * exactly, then magic subtracted (exact: integers below 2^24). Six unpacks and four subtractions
 * for sixteen levels against the table's four swizzles and eight unpacks: the unpacks share two
 * shuffle ports here, so they set the pace.
 */
export function affineLevels16(c: Code, magic: number, w: readonly number[], t: readonly number[]): void {
  const idx = t[0]!;
  const high = () => c.i32(0x4b40).simd(I16X8_SPLAT);
  // bytes to 16-bit lanes by widening (no zero vector held in a register: the 4096² loop spilled)
  c.get(idx).simd(I16X8_EXTEND_LOW_U8).set(t[1]!);
  c.get(idx).simd(I16X8_EXTEND_HIGH_U8).set(t[2]!);
  for (let q = 0; q < 4; q++) {
    c.get(t[1 + (q >> 1)]!);
    high();
    shuffle8(c, q & 1 ? HI16 : LO16).get(magic).simd(Simd.f32x4_sub).set(w[q]!);
  }
}

/**
 * The 16 fields of an int grid's 4-bit plane in local t[0], each byte holding f·8 (< 128), into
 * four f32x4 locals w as u = (16 + f)/32, exactly: each byte paired with the byte 0x3f (local
 * `expo`) is the high half 0x3f00 | f·8 of a float32 whose low half is zero, i.e. 2^−1·(1 + f/16).
 * No subtraction: the code offset is lifted out of the loop, L − z = 32·(u − c) with
 * c = (16 − L[0] + z)/32, so a unit's Σ (L − z)·x = 32·(Σ u·x − c·Σx), Σx of each 32 inputs
 * once per call (`emitLift`), the 32 once per row. Six unpacks for sixteen levels, as
 * `affineLevels16`, without its four subtractions. The price is rounding: the sums run over
 * u·x and c·Σx (|u| < 1, c ≤ 1 + |z|/32 for the |L[0]| ≤ 16 this path takes) instead of
 * (L − z)·x, so the error scales with Σ|x|·(16 + f + |16 − L[0] + z|)·s, not Σ|x·w| (a row of
 * zero weights gives a rounding error, not 0): measured 1.3–1.6× the direct decode's error
 * against float64 on N(0)- and mean-1000 x (packed.test.ts pins the bound).
 */
function liftedLevels16(c: Code, expo: number, w: readonly number[], t: readonly number[]): void {
  const plane = t[0]!;
  shuffle8(c.get(plane).get(expo), LO8).set(t[1]!);
  shuffle8(c.get(plane).get(expo), HI8).set(t[2]!);
  for (let q = 0; q < 4; q++) {
    c.i32(0).simd(Simd.i32x4_splat);
    shuffle8(c.get(t[1 + (q >> 1)]!), q & 1 ? HI16 : LO16).set(w[q]!);
  }
}

/** High halves of 1.5·2^23, 1.5·2^21, 1.5·2^19 and 1.5·2^17 (float32): see `rowLevels16`. */
const ROW_HIGHS = [0x4b40, 0x4a40, 0x4940, 0x4840].flatMap((h) => [h & 0xff, h >> 8]);

/**
 * `affineLevels16` for 2-bit fields left in place in their bytes: lane 4i + j of local t[0] holds
 * f·4^j (field j of byte i, masked, not shifted). Widened to a float32's low bits under the high
 * half of 1.5·2^(23 − 2j) (local `highs`, four 16-bit halves a pair of lanes), a mantissa step is
 * 4^−j, so the float is 1.5·2^(23 − 2j) + f exactly, and `magic` (four lanes: 1.5·2^(23 − 2j) − L[0])
 * subtracted leaves L[f] (Sterbenz: both in one binade). The fields come out in row order with no
 * shifts and no unpacks between planes (the planes' path took eight unpacks, four stores and
 * four loads a 64 fields for that).
 */
function rowLevels16(c: Code, highs: number, magic: number, w: readonly number[], t: readonly number[]): void {
  const idx = t[0]!;
  c.get(idx).simd(I16X8_EXTEND_LOW_U8).set(t[1]!);
  c.get(idx).simd(I16X8_EXTEND_HIGH_U8).set(t[2]!);
  for (let q = 0; q < 4; q++) shuffle8(c.get(t[1 + (q >> 1)]!).get(highs), q & 1 ? HI16 : LO16).get(magic).simd(Simd.f32x4_sub).set(w[q]!);
}

/**
 * `levels16` for a table whose levels are bfloat16 values (float32 low halves zero: FP4 E2M1,
 * MXFP4): only bytes 2 and 3 are looked up (table planes 2 and 3), paired into 16-bit halves and
 * put under a zero low half: two swizzles and six unpacks for sixteen levels, not four and eight.
 */
function bf16Levels16(c: Code, planes: readonly number[], w: readonly number[], t: readonly number[], swizzle: number): void {
  const idx = t[0]!;
  c.get(planes[2]!).get(idx).simd(swizzle).set(t[1]!);
  c.get(planes[3]!).get(idx).simd(swizzle).set(t[2]!);
  shuffle8(c.get(t[1]!).get(t[2]!), LO8).set(t[3]!);
  shuffle8(c.get(t[1]!).get(t[2]!), HI8).set(t[4]!);
  for (let q = 0; q < 4; q++) {
    c.i32(0).simd(Simd.i32x4_splat);
    shuffle8(c.get(t[3 + (q >> 1)]!), q & 1 ? HI16 : LO16).set(w[q]!);
  }
}

const LEVEL32 = new Float32Array(16);
const LEVEL32_BITS = new Uint32Array(LEVEL32.buffer);

/** Whether the n levels of `table` are bfloat16 values in float32 (low 16 bits zero): see `bf16Levels16`. */
function bf16Levels(table: Arg, n: number): boolean {
  for (let f = 0; f < n; f++) LEVEL32[f] = table.data[table.offset + f]!;
  for (let f = 0; f < n; f++) if ((LEVEL32_BITS[f]! & 0xffff) !== 0) return false;
  return true;
}

/** The four magics of `rowLevels16` for a table L[f] = L[0] + f, as float32 (written per call). */
const ROW_MAGICS = new Float32Array(4);

/** The float32 bits of the affine decode's constant (reused: a tiny-Llama matvec is a few µs). */
const MAGIC = new Float32Array(1);
const MAGIC_BITS = new Int32Array(MAGIC.buffer);

/**
 * The int32 bits of the float32 1.5·2^23 − L[0] when the n levels of `table` are L[0] + f exactly
 * in float32 (an int grid's), else null: such a table is decoded by `affineLevels16`.
 */
export function affineMagic(table: Arg, n: number): number | null {
  const td = table.data;
  const l0 = Math.fround(td[table.offset]!);
  if (!Number.isInteger(l0) || Math.abs(l0) >= 2 ** 22) return null;
  for (let f = 1; f < n; f++) if (Math.fround(td[table.offset + f]!) !== l0 + f) return null;
  MAGIC[0] = 1.5 * 2 ** 23 - l0;
  return MAGIC_BITS[0]!;
}

/** Whether `packedMatmul` with these fields runs here: 1/2/4 bits, every group whole 16-byte units. */
export function planar(bits: number, groupSize: number): boolean {
  return bits < 8 && (groupSize * bits) % 128 === 0;
}

/** Task export `packed_planes<bits>[_z](arg, t)`: output columns [t·rowsPerTask, …) for every row of x. */
function emitTask(mb: ModuleBuilder, bits: number, affine: boolean, zeroPoint: boolean, flavor: Flavor, bf16 = false, lifted = false): void {
  const P = ValType.i32;
  const V = ValType.v128;
  const F = 8 / bits;
  // 2-bit fields sum in row order, as the base-3 kernel decodes the same trits (packed-base3.ts
  // equals this bit for bit); 1- and 4-bit ones in plane order, x permuted to match
  const rowOrder = bits === 2;
  // 4-bit fields: each unit summed in two accumulators and scaled on its own (see `groups`)
  const unitFold = bits === 4;
  const swizzle = flavor.relaxed ? Simd.i8x16_relaxed_swizzle : Simd.i8x16_swizzle;
  mb.func([P, P], [], (c) => {
    /** a ⊕= w·x (relaxed FMA, or mul then add). */
    const madd = (a: number, w: () => void, x: () => void) => {
      if (flavor.relaxed) {
        w();
        x();
        c.get(a).simd(Simd.f32x4_relaxed_madd).set(a);
      } else {
        c.get(a);
        w();
        x();
        c.simd(Simd.f32x4_mul).simd(Simd.f32x4_add).set(a);
      }
    };
    const [arg, task] = [0, 1];
    const [x, codes, scale, zero, bias, out, N, K, O, units, hasBias, G] = range(12, () => c.local(P));
    const [o, o1, g, u, p, xp, sp, n, buf, bp, rowBytes] = range(11, () => c.local(P));
    const [zv, A, mask, gsum, magic, shift] = [...range(5, () => c.local(V)), c.local(P)];
    const sv = c.local(V);
    const [pl, stash, lift, lp, sums, gp, gEnd, xEnd, uEnd, sA, zA, oEnd, pEnd] = range(13, () => c.local(P));
    const codeV = c.local(V);
    const [sink, ahead, ...touchTmp] = range(5, () => c.local(P));
    // 2-bit fields of an int grid's table: decoded in row order from the bytes (see `rowLevels16`)
    const rows2 = rowOrder && affine;
    const [spread, fieldMask, highs] = range(3, () => c.local(V));
    const planes = range(4, () => c.local(V));
    const w = range(4, () => c.local(V));
    const ga = range(4, () => c.local(V));
    const tmp = range(8, () => c.local(V));
    const y = c.local(ValType.f32);
    const word = (k: W) => c.get(arg).mem(Op.i32_load, 2, k * 4);
    const pairs: [number, W][] = [
      [x, W.x], [codes, W.codes], [scale, W.scale], [zero, W.zero], [bias, W.bias], [out, W.out], [N, W.n], [K, W.k], [O, W.o], [units, W.units], [hasBias, W.hasBias],
      [lift, W.lift],
    ];
    for (const [l, k] of pairs) word(k).set(l);
    c.get(K).i32(bits).op(Op.i32_mul).i32(3).op(Op.i32_shr_u).set(rowBytes);
    c.get(rowBytes).i32(4).op(Op.i32_shr_u).get(units).op(Op.i32_div_u).set(G);
    if (rows2) {
      // the four magics (one a field position in its byte) at W.planes, unused by an affine decode
      word(W.planes).simdMem(Simd.v128_load, 0).set(magic);
      v128Const(c, range(16, (i) => i >> 2)).set(spread);
      v128Const(c, range(16, (i) => 3 << (2 * (i & 3)))).set(fieldMask);
      v128Const(c, range(16, (i) => ROW_HIGHS[2 * ((i >> 1) & 3) + (i & 1)]!)).set(highs);
    } else if (lifted) c.i32(0x3f).simd(Simd.i8x16_splat).set(magic);
    else if (affine) word(W.magic).simd(Simd.i32x4_splat).set(magic);
    else for (let b = bf16 ? 2 : 0; b < 4; b++) word(W.planes).simdMem(Simd.v128_load, 0, 16 * b).set(planes[b]!);
    // lifted: each field as f·8 in its byte (see `liftedLevels16`)
    c.i32(lifted ? 0x78 : (1 << bits) - 1).simd(Simd.i8x16_splat).set(mask);
    word(W.buf).get(task);
    word(W.bufBytes).op(Op.i32_mul).op(Op.i32_add).set(buf);
    word(W.bufBytes).get(buf).op(Op.i32_add).i32(64).op(Op.i32_sub).set(stash);
    if (unitFold) c.get(stash).get(G).get(units).op(Op.i32_mul).i32(4 + Math.log2(ROW_BLOCK)).op(Op.i32_shl).op(Op.i32_sub).set(sums);
    c.i32(0).set(shift);
    c.i32(0).set(sink);
    word(W.ahead).set(ahead);
    c.get(task);
    word(W.rowsPerTask).op(Op.i32_mul).set(o);
    c.get(o);
    word(W.rowsPerTask).op(Op.i32_add).set(o1);
    c.get(o1).get(O).get(o1).get(O).op(Op.i32_lt_u).op(Op.select).set(o1);

    const clear = (vs: number[]) => {
      for (const a of vs) c.i32(0).simd(Simd.i32x4_splat).set(a);
    };
    /**
     * Each plane of the unit at p (16 fields) as L − z into w, handed to `use`, then p steps a
     * unit. A loop over the 4 or 8 planes of 2- and 1-bit fields, not unrolled: TurboFan issues a
     * block's loads first and sinks the FMAs to their use, so each unrolled plane's x vectors
     * would stay live across the others' (spilled: read off --print-wasm-code); 4-bit fields'
     * two planes are unrolled.
     */
    const unit = (use: () => void) => {
      if (rows2) {
        // four bytes (16 fields, row order) at a time, each byte spread over four lanes and
        // masked to its own field: a loop, as the planes below (x stays unhoisted)
        c.for(pl, () => c.i32(0), () => c.i32(4), 1, () => {
          c.get(p).get(pl).i32(2).op(Op.i32_shl).op(Op.i32_add).simdMem(Simd.v128_load32_zero, 0);
          c.get(spread).simd(swizzle).get(fieldMask).simd(Simd.v128_and).set(tmp[0]!);
          rowLevels16(c, highs, magic, w, tmp);
          if (zeroPoint) for (const q of w) c.get(q).get(zv).simd(Simd.f32x4_sub).set(q);
          use();
        });
        c.get(p).i32(16).op(Op.i32_add).set(p);
        return;
      }
      if (rowOrder) {
        // planes P0…P3 (byte i of P_p: field 4i + p) to row order C0…C3 (byte j of C_c: field
        // 16c + j) by two rounds of unpacks, parked in the task's stash for the loop to read
        c.get(p).simdMem(Simd.v128_load, 0).set(w[0]!);
        for (let q = 0; q < 4; q++) {
          c.get(w[0]!);
          if (q > 0) c.i32(2 * q).simd(I16X8_SHR_U);
          c.get(mask).simd(Simd.v128_and).set(tmp[q]!);
        }
        shuffle8(c.get(tmp[0]!).get(tmp[1]!), LO8).set(tmp[4]!);
        shuffle8(c.get(tmp[0]!).get(tmp[1]!), HI8).set(tmp[5]!);
        shuffle8(c.get(tmp[2]!).get(tmp[3]!), LO8).set(tmp[6]!);
        shuffle8(c.get(tmp[2]!).get(tmp[3]!), HI8).set(tmp[7]!);
        for (let q = 0; q < 4; q++) {
          c.get(stash);
          shuffle8(c.get(tmp[4 + (q >> 1)]!).get(tmp[6 + (q >> 1)]!), q & 1 ? HI16 : LO16).simdMem(Simd.v128_store, 0, 16 * q);
        }
      }
      /** The 16 fields of plane (tmp[0], one per byte) as L − z into w, handed to `use`. */
      const plane = () => {
        if (lifted) {
          liftedLevels16(c, magic, w, tmp);
          use();
          return;
        }
        if (affine) magicLevels();
        else if (bf16) bf16Levels16(c, planes, w, tmp, swizzle);
        else levels16(c, planes, w, tmp, swizzle);
        if (zeroPoint) for (const q of w) c.get(q).get(zv).simd(Simd.f32x4_sub).set(q);
        use();
      };
      if (lifted) {
        // the two planes unrolled, as below: f·8 is (byte << 3) & 0x78 and (byte >> 1) & 0x78
        c.get(p).simdMem(Simd.v128_load, 0).set(codeV);
        c.get(codeV).i32(3).simd(I16X8_SHL).get(mask).simd(Simd.v128_and).set(tmp[0]!);
        plane();
        c.get(codeV).i32(1).simd(I16X8_SHR_U).get(mask).simd(Simd.v128_and).set(tmp[0]!);
        plane();
      } else if (bits === 4) {
        // two planes: unrolled, each shift an immediate (a loop's shift by a local cost four
        // instructions and the loop five more, of some thirty a plane; 4096², int4 g32, one row,
        // kernel CPU time, min of 7 rounds, 4 alternating runs: 3.26–3.50 → 2.29–2.75 ms). Once
        // only for one unit a group: inside a units loop carrying its accumulators the table
        // decode spilled (NF4 b64: loop 2.42–2.44, unrolled 3.05–3.07 ms); units no longer carry
        // them (`groups`), and unrolled is the faster there too (NF4 per channel 3.74 → 3.00–3.10 ms
        // on a loaded machine)
        c.get(p).simdMem(Simd.v128_load, 0).set(codeV);
        c.get(codeV).get(mask).simd(Simd.v128_and).set(tmp[0]!);
        plane();
        c.get(codeV).i32(4).simd(I16X8_SHR_U).get(mask).simd(Simd.v128_and).set(tmp[0]!);
        plane();
      } else {
        c.for(pl, () => c.i32(0), () => c.i32(F), 1, () => {
          if (rowOrder) c.get(stash).get(pl).i32(4).op(Op.i32_shl).op(Op.i32_add).simdMem(Simd.v128_load, 0).set(tmp[0]!);
          // a 16-bit shift: the mask keeps only bits of each lane's own byte (bits·p + bits ≤ 8)
          else c.get(p).simdMem(Simd.v128_load, 0).get(shift).simd(I16X8_SHR_U).get(mask).simd(Simd.v128_and).set(tmp[0]!);
          plane();
          c.get(shift).i32(bits).op(Op.i32_add).set(shift);
        });
        c.i32(0).set(shift);
      }
      c.get(p).i32(16).op(Op.i32_add).set(p);
    };
    const magicLevels = () => affineLevels16(c, magic, w, tmp);
    /**
     * Per group: its zero point into zv, sums of four f32x4 over its units (`body`), then
     * A += ((ga0 + ga1) + (ga2 + ga3))·s. 4-bit fields (`unitFold`): each unit is summed on its
     * own in two accumulators (q even: ga0, odd: ga1), (ga0 + ga1)·s stored at gp, and the row's
     * vector is the sum of those (`finish`): no vector is carried from unit to unit or group to
     * group. TurboFan issues a unit's loads first, so its eight x vectors, the accumulators and
     * the decode did not fit the sixteen registers: A (or a units loop's accumulator) was
     * spilled, and its store-to-load round trip behind an FMA set the pace of the loop. A unit's
     * two chains of four FMAs are independent of the next unit's, so out-of-order execution
     * overlaps them. 4096², one row, kernel CPU time (min of 15 rounds, 2 runs, with the lifted
     * decode and the later loop changes): int4 g32 2.15–2.36 → 1.66–1.69 ms, per channel
     * 1.73–1.79 → 1.52–1.54, MXFP4 g32 2.13–2.23 → 1.72–1.74 (fp32 3.31–3.66).
     *
     * `unitParts` gives unitFold's two pieces: per group, its scale (and zero point) from sA (zA);
     * per unit, `body` summed and stored.
     */
    const unitParts = (body: (one: boolean) => void, decodes: boolean) => {
      const group = () => {
        c.get(sA).simdMem(Simd.v128_load32_splat, 2).set(sv);
        step(sA, 4);
        if (zeroPoint && (lifted || decodes)) {
          c.get(zA).mem(Op.f32_load, 2);
          if (lifted) c.f32(1 / 32).op(Op.f32_mul);
          c.simd(Simd.f32x4_splat).set(zv);
          step(zA, 4);
        }
      };
      const one1 = (o1: boolean) => {
        if (lifted) {
          // the unit's sum starts at −c·Σx (c = (16 − L[0])/32), less z/32·Σx with zero points
          c.get(lp).simdMem(Simd.v128_load, 0, 16).set(ga[0]!);
          if (zeroPoint) {
            if (flavor.relaxed) c.get(zv).get(lp).simdMem(Simd.v128_load, 0).get(ga[0]!).simd(Simd.f32x4_relaxed_nmadd).set(ga[0]!);
            else c.get(ga[0]!).get(zv).get(lp).simdMem(Simd.v128_load, 0).simd(Simd.f32x4_mul).simd(Simd.f32x4_sub).set(ga[0]!);
          }
          step(lp, 32);
          clear([ga[1]!]);
        } else clear([ga[0]!, ga[1]!]);
        body(o1);
        c.get(gp).get(ga[0]!).get(ga[1]!).simd(Simd.f32x4_add).get(sv).simd(Simd.f32x4_mul).simdMem(Simd.v128_store, 0);
        step(gp, 16);
      };
      return { group, one1 };
    };
    const pointers = () => {
      c.get(scale).get(sp).op(Op.i32_add).set(sA);
      if (zeroPoint) c.get(zero).get(sp).op(Op.i32_add).set(zA);
    };
    /** unitFold, one row of x: every unit of the rows from p to pEnd (x and its lifted sums start over at each row: xEnd). */
    const blockUnits = (body: (one: boolean) => void) => {
      pointers();
      const { group, one1 } = unitParts(body, true);
      const wrap = () => {
        c.get(xp).get(xEnd).op(Op.i32_eq).if();
        c.get(x).set(xp);
        c.get(lift).set(lp);
        c.end();
      };
      const below = () => c.get(p).get(pEnd).op(Op.i32_lt_u);
      c.get(units).i32(1).op(Op.i32_eq).if();
      c.while(below, () => {
        wrap();
        group();
        one1(true);
      });
      c.op(Op.else);
      c.while(below, () => {
        wrap();
        group();
        c.get(xp).get(units).i32(7).op(Op.i32_shl).op(Op.i32_add).set(uEnd);
        c.while(() => c.get(xp).get(uEnd).op(Op.i32_lt_u), () => one1(false));
      });
      c.end();
    };
    const groups = (body: (one: boolean) => void, decodes = true) => {
      if (unitFold) {
        // loops bounded by x's pointer and the scale (zero point) read through pointers of their
        // own: a counter, its bound and base + offset addresses spilled general registers
        c.get(xp).get(K).i32(2).op(Op.i32_shl).op(Op.i32_add).set(xEnd);
        pointers();
        const { group, one1 } = unitParts(body, decodes);
        const below = (end: number) => () => c.get(xp).get(end).op(Op.i32_lt_u);
        c.get(units).i32(1).op(Op.i32_eq).if();
        c.while(below(xEnd), () => {
          group();
          one1(true);
        });
        c.op(Op.else);
        c.while(below(xEnd), () => {
          group();
          c.get(xp).get(units).i32(7).op(Op.i32_shl).op(Op.i32_add).set(uEnd);
          c.while(below(uEnd), () => one1(false));
        });
        c.end();
        return;
      }
      const loop = (one: boolean) => c.for(g, () => c.i32(0), () => c.get(G), 1, () => {
        if (zeroPoint && decodes) c.get(zero).get(sp).op(Op.i32_add).mem(Op.f32_load, 2).simd(Simd.f32x4_splat).set(zv);
        clear(ga);
        if (one) body(true);
        else c.for(u, () => c.i32(0), () => c.get(units), 1, () => body(false));
        c.get(ga[0]!).get(ga[1]!).simd(Simd.f32x4_add).get(ga[2]!).get(ga[3]!).simd(Simd.f32x4_add).simd(Simd.f32x4_add).set(gsum);
        madd(A, () => c.get(gsum), () => c.get(scale).get(sp).op(Op.i32_add).mem(Op.f32_load, 2).simd(Simd.f32x4_splat));
        c.get(sp).i32(4).op(Op.i32_add).set(sp);
      });
      // one unit a group (int4 g32, MXFP4): two loop levels, not three (4096², int4 g32, one row,
      // kernel CPU time: 2.20 → 2.08 ms; the group's fold and loops still cost it 1.2× g128's)
      c.get(units).i32(1).op(Op.i32_eq).if();
      loop(true);
      c.op(Op.else);
      loop(false);
      c.end();
    };
    /** out[row, o] = Σ lanes of A (+ b[o]). */
    const finish = (row: () => void) => {
      // unitFold: A = the row's stored units' s·Σ (from gp on) summed four at a time into
      // ga0…ga3 (the last < 4 into ga0), then (ga0 + ga1) + (ga2 + ga3); gp steps past them
      if (unitFold) {
        clear(ga);
        c.get(G).get(units).op(Op.i32_mul).i32(4).op(Op.i32_shl).get(gp).op(Op.i32_add).set(gEnd);
        c.while(() => c.get(gp).i32(64).op(Op.i32_add).get(gEnd).op(Op.i32_le_u), () => {
          for (let q = 0; q < 4; q++) c.get(ga[q]!).get(gp).simdMem(Simd.v128_load, 0, 16 * q).simd(Simd.f32x4_add).set(ga[q]!);
          step(gp, 64);
        });
        c.while(() => c.get(gp).get(gEnd).op(Op.i32_lt_u), () => {
          c.get(ga[0]!).get(gp).simdMem(Simd.v128_load, 0).simd(Simd.f32x4_add).set(ga[0]!);
          step(gp, 16);
        });
        c.get(ga[0]!).get(ga[1]!).simd(Simd.f32x4_add).get(ga[2]!).get(ga[3]!).simd(Simd.f32x4_add).simd(Simd.f32x4_add).set(A);
      }
      // + 0 as the base-3 kernel's epilogue adds its scalar tail: −0 becomes +0 on both
      horizontalSum(c, A);
      // lifted: the sums of u = (16 + f)/32, times 32 (exact)
      if (lifted) c.f32(32).op(Op.f32_mul);
      c.f32(0).op(Op.f32_add).set(y);
      c.get(hasBias).if();
      c.get(y).get(bias).get(o).i32(2).op(Op.i32_shl).op(Op.i32_add).mem(Op.f32_load, 2).op(Op.f32_add).set(y);
      c.end();
      c.get(out);
      row();
      c.get(O).op(Op.i32_mul).get(o).op(Op.i32_add).i32(2).op(Op.i32_shl).op(Op.i32_add).get(y).mem(Op.f32_store, 2);
    };
    const acc = (q: number) => ga[unitFold ? q & 1 : q]!;
    const xq = (q: number) => () => c.get(xp).simdMem(Simd.v128_load, 0, 16 * q);
    const step = (ptr: number, bytes: number) => c.get(ptr).i32(bytes).op(Op.i32_add).set(ptr);

    c.while(() => c.get(o).get(o1).op(Op.i32_lt_u), () => {
      c.get(codes).get(o).get(rowBytes).op(Op.i32_mul).op(Op.i32_add).set(p);
      touchAhead(c, { o, ahead, O, codes, rowBytes, scale, scaleRow: () => c.get(G).i32(2).op(Op.i32_shl), stride: TOUCH_PAGES, sink, tmp: touchTmp as [number, number, number] });
      const oneRow = () => {
        c.get(o).get(G).op(Op.i32_mul).i32(2).op(Op.i32_shl).set(sp);
        c.get(x).set(xp);
        c.get(lift).set(lp);
        c.get(sums).set(gp);
        clear([A]);
        groups(() => unit(() => {
          for (let q = 0; q < 4; q++) madd(acc(q), () => c.get(w[q]!), xq(q));
          step(xp, 64);
        }));
        c.get(sums).set(gp);
        finish(() => c.i32(0));
      };
      c.get(N).i32(1).op(Op.i32_eq).if();
      if (unitFold) {
        // short rows (K ≤ BLOCK_MAX_K) in blocks of up to ROW_BLOCK: first every unit of them in
        // one loop (the x pointers start over at each row), their sums stored in row order, then
        // each row's sums added up and written: the rows' epilogues leave the decode loop, and no
        // longer wait on the units just stored (a row of 128 inputs cost about as much as its
        // four units). Long rows one at a time: there the block loop's extra pointers and wrap
        // test cost more than the epilogues (4096², int4 g32: 1.69–1.73 → 1.92–1.94 ms)
        c.get(K).i32(BLOCK_MAX_K).op(Op.i32_gt_u).if();
        oneRow();
        c.op(Op.else);
        c.get(o).i32(ROW_BLOCK).op(Op.i32_add).set(oEnd);
        c.get(oEnd).get(o1).get(oEnd).get(o1).op(Op.i32_lt_u).op(Op.select).set(oEnd);
        c.get(codes).get(oEnd).get(rowBytes).op(Op.i32_mul).op(Op.i32_add).set(pEnd);
        c.get(o).get(G).op(Op.i32_mul).i32(2).op(Op.i32_shl).set(sp);
        c.get(x).set(xp);
        c.get(lift).set(lp);
        c.get(sums).set(gp);
        c.get(K).i32(2).op(Op.i32_shl).get(x).op(Op.i32_add).set(xEnd);
        blockUnits(() => unit(() => {
          for (let q = 0; q < 4; q++) madd(acc(q), () => c.get(w[q]!), xq(q));
          step(xp, 64);
        }));
        c.get(sums).set(gp);
        c.while(() => c.get(o).get(oEnd).op(Op.i32_lt_u), () => {
          finish(() => c.i32(0));
          step(o, 1);
        });
        c.get(o).i32(1).op(Op.i32_sub).set(o);
        c.end();
      } else oneRow();
      c.op(Op.else);
      {
        // the weight row into the buffer, then each row of x against it in the same order
        c.get(buf).set(bp);
        c.for(g, () => c.i32(0), () => c.get(G), 1, () => {
          if (zeroPoint && !lifted) c.get(zero).get(o).get(G).op(Op.i32_mul).get(g).op(Op.i32_add).i32(2).op(Op.i32_shl).op(Op.i32_add).mem(Op.f32_load, 2).simd(Simd.f32x4_splat).set(zv);
          c.for(u, () => c.i32(0), () => c.get(units), 1, () => unit(() => {
            for (let q = 0; q < 4; q++) c.get(bp).get(w[q]!).simdMem(Simd.v128_store, 0, 16 * q);
            step(bp, 64);
          }));
        });
        c.for(n, () => c.i32(0), () => c.get(N), 1, () => {
          c.get(o).get(G).op(Op.i32_mul).i32(2).op(Op.i32_shl).set(sp);
          c.get(x).get(n).get(K).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(xp);
          c.get(buf).set(bp);
          c.get(lift).get(n).get(K).op(Op.i32_mul).op(Op.i32_add).set(lp);
          c.get(sums).set(gp);
          clear([A]);
          groups(() => {
            for (let pl = 0; pl < F; pl++) {
              for (let q = 0; q < 4; q++) madd(acc(q), () => c.get(bp).simdMem(Simd.v128_load, 0, 16 * q), xq(q));
              step(xp, 64);
              step(bp, 64);
            }
          }, false);
          c.get(sums).set(gp);
          finish(() => c.get(n));
        });
      }
      c.end();
      step(o, 1);
    });
    c.get(arg).get(sink).mem(Op.i32_store, 2, W.sink * 4);
  }, `packed_planes${bits}${lifted ? 'l' : affine ? 'a' : bf16 ? 'h' : ''}${zeroPoint ? '_z' : ''}`);
}

/**
 * Export `packed_planes_x(src, dst, n, F)`: the n floats at src (whole units of 16F) into the
 * planes' order at dst: unit u, plane p, lane i ← src[16F·u + F·i + p]. F = 2 (4-bit fields) by
 * shuffles, eight floats in and out a step; other F one float at a time. O(N·K), done once a call:
 * in js it was up to ~1 µs of a tiny-Llama matvec's ~10.
 */
function emitPermuteX(mb: ModuleBuilder): void {
  const P = ValType.i32;
  mb.func([P, P, P, P], [], (c) => {
    const [src, dst, n, F] = [0, 1, 2, 3];
    const [end, u, pl, i, a, b] = [c.local(P), c.local(P), c.local(P), c.local(P), c.local(ValType.v128), c.local(ValType.v128)];
    c.get(src).get(n).i32(2).op(Op.i32_shl).op(Op.i32_add).set(end);
    c.get(F).i32(2).op(Op.i32_eq).if();
    {
      // 32 floats a unit: evens to plane 0 (16 floats), odds to plane 1
      c.while(() => c.get(src).get(end).op(Op.i32_lt_u), () => {
        for (let j = 0; j < 4; j++) {
          c.get(src).simdMem(Simd.v128_load, 0, 32 * j).set(a);
          c.get(src).simdMem(Simd.v128_load, 0, 32 * j + 16).set(b);
          c.get(dst).get(a).get(b).shuffle32([0, 2, 4, 6]).simdMem(Simd.v128_store, 0, 16 * j);
          c.get(dst).get(a).get(b).shuffle32([1, 3, 5, 7]).simdMem(Simd.v128_store, 0, 64 + 16 * j);
        }
        c.get(src).i32(128).op(Op.i32_add).set(src);
        c.get(dst).i32(128).op(Op.i32_add).set(dst);
      });
    }
    c.op(Op.else);
    {
      c.while(() => c.get(src).get(end).op(Op.i32_lt_u), () => {
        c.for(pl, () => c.i32(0), () => c.get(F), 1, () => {
          c.get(src).get(pl).i32(2).op(Op.i32_shl).op(Op.i32_add).set(u);
          c.for(i, () => c.i32(0), () => c.i32(16), 1, () => {
            c.get(dst).get(u).mem(Op.f32_load, 2).mem(Op.f32_store, 2);
            c.get(dst).i32(4).op(Op.i32_add).set(dst);
            c.get(u).get(F).i32(2).op(Op.i32_shl).op(Op.i32_add).set(u);
          });
        });
        c.get(src).get(F).i32(6).op(Op.i32_shl).op(Op.i32_add).set(src);
      });
    }
    c.end();
  }, 'packed_planes_x');
}

/**
 * Export `packed_planes_lift(src, dst, n, groupSize, coef)`: for each of the n groups of
 * groupSize floats at src (a multiple of 4; the lifted decode's units of 32), the f32x4 Σx (the
 * group's vectors summed in order) and −coef·Σx, 32 bytes a group at dst (see `liftedLevels16`).
 */
function emitLift(mb: ModuleBuilder): void {
  const P = ValType.i32;
  mb.func([P, P, P, P, ValType.f32], [], (c) => {
    const [src, dst, n, gs, coef] = [0, 1, 2, 3, 4];
    const [end, gEnd, sum] = [c.local(P), c.local(P), c.local(ValType.v128)];
    c.get(src).get(n).get(gs).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(end);
    c.while(() => c.get(src).get(end).op(Op.i32_lt_u), () => {
      c.get(src).get(gs).i32(2).op(Op.i32_shl).op(Op.i32_add).set(gEnd);
      c.get(src).simdMem(Simd.v128_load, 0).set(sum);
      c.get(src).i32(16).op(Op.i32_add).set(src);
      c.while(() => c.get(src).get(gEnd).op(Op.i32_lt_u), () => {
        c.get(sum).get(src).simdMem(Simd.v128_load, 0).simd(Simd.f32x4_add).set(sum);
        c.get(src).i32(16).op(Op.i32_add).set(src);
      });
      c.get(dst).get(sum).simdMem(Simd.v128_store, 0);
      c.get(dst).get(sum).get(coef).op(Op.f32_neg).simd(Simd.f32x4_splat).simd(Simd.f32x4_mul).simdMem(Simd.v128_store, 0, 16);
      c.get(dst).i32(32).op(Op.i32_add).set(dst);
    });
  }, 'packed_planes_lift');
}

/** Adds the `packed_planes*` task exports and `packed_planes_x`. */
export function emitPackedPlanes(mb: ModuleBuilder, flavor: Flavor): void {
  for (const bits of [1, 2, 4]) for (const affine of [false, true]) for (const z of [false, true]) emitTask(mb, bits, affine, z, flavor);
  for (const bits of [1, 2, 4]) for (const z of [false, true]) emitTask(mb, bits, false, z, flavor, true);
  for (const z of [false, true]) emitTask(mb, 4, true, z, flavor, false, true);
  emitPermuteX(mb);
  emitLift(mb);
}

/**
 * Runs a `planar` packedMatmul (float32, x with contiguous rows; checked by packed.ts). `fillPlanes`
 * writes the 64 bytes of table planes at `at`. x goes in permuted to the planes' order.
 */
export function packedPlanesWasm(engine: Engine, ops: PackedOperands, out: Arg, bits: number, groupSize: number, fillPlanes: (engine: Engine, table: Arg, bits: number, at: number) => void): boolean {
  const { x, codes, table, scale, zero, bias, N, K, O, G } = ops;
  // an int grid's table, L[f] = f + L[0] exactly in float32: decoded without the table
  // (2-bit: levels within ±2^15, so that 1.5·2^17 − L[0] stays in its binade; see `rowLevels16`)
  const magic = bits === 2 && Math.abs(table.data[table.offset]!) >= 2 ** 15 ? null : affineMagic(table, 2 ** bits);
  const affine = magic !== null;
  // levels whose float32 low halves are all zero (bfloat16 values: FP4/MXFP4's): two lookups, not four
  const bf16 = !affine && bf16Levels(table, 2 ** bits);
  const F = 8 / bits;
  const threaded = engine.threads > 1 && N * O * K >= PARALLEL_MIN_MACS;
  const tasks = threaded ? Math.min(O, engine.threads * 4) : 1;
  const rowsPerTask = Math.ceil(O / tasks);
  const nTasks = Math.ceil(O / rowsPerTask);
  const sizes: [Arg | null, number][] = [[codes, (O * K * bits) / 8], [scale, O * G], [zero, O * G], [bias, O]];
  const placement = placeOperands(engine, sizes, out, N * O);
  const { place, outAt, outPtr } = placement;
  let at = placement.at;
  // 2-bit fields sum in row order: x as it is, in place when it lives in wasm memory
  const xIn = bits === 2 ? engine.inPlace(x, out) : -1;
  const xAt = xIn >= 0 ? xIn : at;
  if (xIn < 0) at = align16(at + N * K * 4);
  // the decoded row (several rows of x), then 64 bytes of stash
  // (4-bit fields: then each unit's scaled sum, K/32 f32x4 a row, for ROW_BLOCK rows)
  const bufBytes = (N > 1 ? K * 4 : 0) + (bits === 4 ? (ROW_BLOCK * K) / 2 : 0) + 64;
  const buf = at;
  at += nTasks * bufBytes;
  // a 4-bit int grid near zero (int4, uint4): decoded with the code offset lifted out of the loop
  // (`liftedLevels16`), Σx and −c·Σx per row of x and unit (32 bytes a unit) here
  const lifted = bits === 4 && affine && Math.abs(table.data[table.offset]!) <= 16;
  const lift = at;
  if (lifted) at += N * K;
  // then x as it is, where it does not live in wasm memory (1/4-bit fields: permuted from there)
  if (!engine.reserve(at + (bits !== 2 && engine.addressOf(x) < 0 ? N * K * 4 : 0) - engine.scratch)) return false;
  stageOperands(engine, place);
  if (!affine) fillPlanes(engine, table, bits, engine.scratch);
  else if (bits === 2) {
    const l0 = Math.fround(table.data[table.offset]!);
    for (let j = 0; j < 4; j++) ROW_MAGICS[j] = 1.5 * 2 ** (23 - 2 * j) - l0;
    engine.f32.set(ROW_MAGICS, engine.scratch / 4);
  }
  // x in the planes' order: unit u, plane p, byte i ← x[u·16F + F·i + p] (2-bit: row order),
  // permuted in wasm from where x lives (x's rows are contiguous: checked by packed.ts)
  if (bits === 2) {
    if (xIn < 0) engine.stageIn(x.data, x.offset, x.offset + N * K, engine.f32, xAt);
  } else {
    let src = engine.inPlace(x);
    if (src < 0) {
      src = at;
      engine.stageIn(x.data, x.offset, x.offset + N * K, engine.f32, src);
    }
    engine.call('packed_planes_x', src, xAt, N * K, F);
    if (lifted) engine.call('packed_planes_lift', xAt, lift, (N * K) / 32, 32, (16 - Math.fround(table.data[table.offset]!)) / 32);
  }
  // the argument block, word by word (no arrays: at the tiny-Llama shapes the call's js is a
  // good part of its time)
  const args = engine.i32;
  const a0 = ARGS / 4;
  args[a0 + W.x] = xAt;
  args[a0 + W.codes] = place[0]!.addr;
  args[a0 + W.planes] = engine.scratch;
  args[a0 + W.scale] = place[1]!.addr;
  args[a0 + W.zero] = place[2]!.addr;
  args[a0 + W.bias] = place[3]!.addr;
  args[a0 + W.out] = outPtr;
  args[a0 + W.n] = N;
  args[a0 + W.k] = K;
  args[a0 + W.o] = O;
  args[a0 + W.units] = (groupSize * bits) / 128;
  args[a0 + W.rowsPerTask] = rowsPerTask;
  args[a0 + W.buf] = buf;
  args[a0 + W.bufBytes] = bufBytes;
  args[a0 + W.hasBias] = bias ? 1 : 0;
  args[a0 + W.magic] = magic ?? 0;
  args[a0 + W.lift] = lift;
  args[a0 + W.ahead] = touchRows(place[0]!.n + place[1]!.n * 4, O, TOUCH_PAGES);
  engine.parallel(`packed_planes${bits}${lifted ? 'l' : affine ? 'a' : bf16 ? 'h' : ''}${zero ? '_z' : ''}`, ARGS, nTasks, threaded);
  if (outAt < 0) engine.stageOut(out, engine.f32, outPtr, N * O);
  return true;
}
