/**
 * @file wasm `packedMatmul` (float32): f32x4 code that reads a packed low-bit weight in place.
 * Sixteen fields at a time become sixteen float levels: 1/2/4-bit fields are spread to one byte
 * each and looked up in the level table with four i8x16.swizzle (one per byte of the float32
 * levels, the table kept as four 16-byte planes) and re-interleaved by shuffles; 8-bit fields whose
 * table is the integer itself (int8/uint8 codes) are widened and converted. Other 8-bit tables,
 * groups that start mid-byte and the last < 16 fields of a group take a scalar loop. Rows of the
 * weight are split over the thread pool; the js oracle and the operand checks are js/packed.ts.
 */
import type { KernelArg } from '../backend.js';
import { packedOperands } from '../js/packed.js';
import type { PackedMatmulParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { emitPackedBase3, packedBase3Wasm } from './packed-base3.js';
import { emitPackedPlanes, packedPlanesWasm, planar } from './packed-planes.js';
import { ARGS, type Engine, type Flavor } from './runtime.js';

type Arg = KernelArg<TypedArray>;

/** Words of the argument block (i32 at ARGS; pointers in bytes). */
const enum W {
  x, codes, planes, table, scale, zero, bias, out, n, k, o, groupSize, rowsPerTask, buf, bufBytes, hasBias,
  /** Whole 16-field chunks per group (0 where groups may start mid-byte: all fields one by one). */
  chunks,
  /** 1: one row of x and every group a whole number of chunks (decode and multiply in registers). */
  fused,
  /** 1: 8-bit integer codes (s8/u8) in groups of whole chunks, each group summed unscaled and scaled once (see `emitTask`). */
  grouped,
  /** Rows ahead of the current one whose lines are touched (0: none; see `touchAhead`). */
  ahead,
  /** Where the touched words go (never read). */
  sink,
}

/**
 * How sixteen fields become levels: 'b1'/'b2'/'b4' by table planes, 's8'/'u8' by widening
 * (the table is L[f] = f as int8 / uint8), 'lut8' field by field from the table.
 */
type Variant = 'b1' | 'b2' | 'b4' | 's8' | 'u8' | 'lut8';
const VARIANTS: readonly Variant[] = ['b1', 'b2', 'b4', 's8', 'u8', 'lut8'];
const BITS: Record<Variant, number> = { b1: 1, b2: 2, b4: 4, s8: 8, u8: 8, lut8: 8 };
/** How a variant's kernel touches rows ahead (see `touchAhead`). */
const touchStride = (v: Variant) => (BITS[v] === 8 ? TOUCH_LINES : TOUCH_PAGES);

/** Multiply-adds (N·O·K) from which the rows are split over the pool (waking it costs tens of µs). */
export const PARALLEL_MIN_MACS = 1 << 18;

export function shuffle8(c: Code, lanes: readonly number[]): Code {
  c.simd(Simd.i8x16_shuffle);
  for (const l of lanes) c.bytes.push(l);
  return c;
}

export function v128Const(c: Code, bytes: readonly number[]): Code {
  c.simd(Simd.v128_const);
  for (const b of bytes) c.bytes.push(b & 0xff);
  return c;
}

export const range = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));
/** Bytes 0–7 of a and b interleaved (a0 b0 a1 b1 …), then bytes 8–15. */
export const LO8 = range(16, (i) => (i >> 1) + (i & 1) * 16);
export const HI8 = LO8.map((l) => l + 8);
/** 16-bit pairs 0–3 of a and b interleaved, then pairs 4–7. */
export const LO16 = range(16, (i) => ((i >> 2) * 2 + (i & 1)) + ((i >> 1) & 1) * 16);
export const HI16 = LO16.map((l) => l + 8);

/**
 * Emits the decode of the 16 fields at byte pointer p into four f32x4 locals w (fields 0–3, 4–7,
 * 8–11, 12–15); `planes` are the four table planes for the swizzle variants.
 */
function decode16(c: Code, v: Variant, p: number, w: readonly number[], planes: readonly number[], t: readonly number[]): void {
  if (v === 's8' || v === 'u8') {
    const load = v === 's8' ? Simd.v128_load8x8_s : Simd.v128_load8x8_u;
    const [lo, hi] = v === 's8' ? [Simd.i32x4_extend_low_i16x8_s, Simd.i32x4_extend_high_i16x8_s] : [Simd.i32x4_extend_low_i16x8_u, Simd.i32x4_extend_high_i16x8_u];
    for (const half of [0, 1]) {
      c.get(p).simdMem(load, 0, 8 * half).set(t[0]!);
      c.get(t[0]!).simd(lo).simd(Simd.f32x4_convert_i32x4_s).set(w[2 * half]!);
      c.get(t[0]!).simd(hi).simd(Simd.f32x4_convert_i32x4_s).set(w[2 * half + 1]!);
    }
    return;
  }
  // the 16 field values, one per byte, in field order
  const idx = t[0]!;
  if (v === 'b4') {
    c.get(p).simdMem(Simd.v128_load64_zero, 0).set(idx);
    c.get(idx).i32(0x0f).simd(Simd.i8x16_splat).simd(Simd.v128_and);
    c.get(idx).i32(4).simd(Simd.i8x16_shr_u);
    shuffle8(c, LO8).set(idx);
  } else if (v === 'b2') {
    // nibbles as in b4, each taken twice and masked to 3 or 12: fields 4i + 1 and 4i + 3 come out as
    // 4·f, which the b2 planes map to L[f] as well (T[4f] = T[f] = L[f])
    c.get(p).simdMem(Simd.v128_load32_zero, 0).set(idx);
    c.get(idx).i32(0x0f).simd(Simd.i8x16_splat).simd(Simd.v128_and);
    c.get(idx).i32(4).simd(Simd.i8x16_shr_u);
    shuffle8(c, range(16, (i) => (i >> 2) + ((i >> 1) & 1) * 16));
    v128Const(c, range(16, (i) => (i & 1 ? 12 : 3))).simd(Simd.v128_and).set(idx);
  } else if (v === 'b1') {
    // byte i copied to lanes 8i … 8i + 7, each lane keeps its own bit, then min(·, 1)
    c.get(p).simdMem(Simd.v128_load16_splat, 0).set(idx);
    c.get(idx).get(idx);
    shuffle8(c, range(16, (i) => i >> 3));
    v128Const(c, range(16, (i) => 1 << (i & 7))).simd(Simd.v128_and);
    c.i32(1).simd(Simd.i8x16_splat).simd(Simd.i8x16_min_u).set(idx);
  } else {
    throw new Error(`packedMatmul: variant ${v} has no vector decode`);
  }
  levels16(c, planes, w, t);
}

/**
 * The levels of the 16 field values (one per byte, each < 16) in local t[0] into four f32x4
 * locals w, looked up in the four table planes; t[0…7] are overwritten.
 */
export function levels16(c: Code, planes: readonly number[], w: readonly number[], t: readonly number[], swizzle: number = Simd.i8x16_swizzle): void {
  const idx = t[0]!;
  // byte b of each level by swizzle, then bytes → 16-bit pairs → float32 lanes
  for (let b = 0; b < 4; b++) c.get(planes[b]!).get(idx).simd(swizzle).set(t[1 + b]!);
  const [p0, p1, p2, p3] = [t[1]!, t[2]!, t[3]!, t[4]!];
  const [lo01, hi01, lo23, hi23] = [t[5]!, t[6]!, t[0]!, t[7]!];
  shuffle8(c.get(p0).get(p1), HI8).set(hi01);
  shuffle8(c.get(p0).get(p1), LO8).set(lo01);
  shuffle8(c.get(p2).get(p3), HI8).set(hi23);
  shuffle8(c.get(p2).get(p3), LO8).set(lo23);
  shuffle8(c.get(lo01).get(lo23), LO16).set(w[0]!);
  shuffle8(c.get(lo01).get(lo23), HI16).set(w[1]!);
  shuffle8(c.get(hi01).get(hi23), LO16).set(w[2]!);
  shuffle8(c.get(hi01).get(hi23), HI16).set(w[3]!);
}

/** Pushes the f32 sum of the four lanes of local a, as (a0 + a2) + (a1 + a3). */
export function horizontalSum(c: Code, a: number): void {
  c.get(a).get(a).get(a).shuffle32([2, 3, 0, 1]).simd(Simd.f32x4_add).set(a);
  c.get(a).get(a).get(a).shuffle32([1, 0, 3, 2]).simd(Simd.f32x4_add).lane(Simd.f32x4_extract_lane, 0);
}

/**
 * Weights of at least this many bytes (codes and scales; a core's L2 here) are read with
 * `touchAhead`: a decode step streams every layer's weights from memory once, while smaller
 * ones (a tiny Llama's layers) are likely still in cache, where the touches cost (4096², one row of x, 1 thread, CPU time,
 * weights resident in L3, a burst of every line: int4/NF4/MXFP4 +10–13 %, ternary, base 3 and int8 +2–4 %; streamed
 * from memory: −18…−43 %).
 */
export const TOUCH_MIN_BYTES = 1 << 21;

/** `touchAhead`'s stride for 8-bit codes: every 64-byte line of the row ahead. */
export const TOUCH_LINES = 64;
/** `touchAhead`'s stride for 1/2/4-bit codes and base 3: the first PAGE_LINES lines of each 4 KiB page. */
export const TOUCH_PAGES = 4096;
/** Lines touched at the start of each page (TOUCH_PAGES), so that the streamer has a run to follow. */
const PAGE_LINES = 4;
/** How far ahead of the decode (bytes of codes and scales) the page touches reach. */
const PAGE_REACH = 16 << 10;

/**
 * The rows ahead a packed kernel touches (0: none) for a weight of `bytes` in all (codes and
 * scales) over `rows` rows, touched every `stride` bytes (TOUCH_LINES or TOUCH_PAGES).
 */
export function touchRows(bytes: number, rows: number, stride: number): number {
  if (bytes < TOUCH_MIN_BYTES) return 0;
  return stride === TOUCH_LINES ? 2 : Math.max(1, Math.ceil((PAGE_REACH * rows) / bytes));
}

/**
 * Emits: when `ahead` > 0 and row r = o + ahead exists, i32 loads at each multiple of `stride`
 * inside row r's codes (`rowBytes` from `codes`) and then inside its scales (`scaleRow()` pushes
 * their bytes a row): one there for TOUCH_LINES, one from each of the PAGE_LINES lines from
 * there that lie inside the row for TOUCH_PAGES; xored into `sink` so the loads stay. wasm has no
 * prefetch: a row's decode issues a load every 16 code bytes with tens of instructions between,
 * so few misses are in flight at once and the decode waits on memory (4096², int4 g32 from DRAM
 * ran at 2.5 GB/s where the float32 matvec streams 12 GB/s).
 *
 * Two ways out, by how fast the decode eats bytes. 1/2/4-bit codes and base 3 (TOUCH_PAGES): a
 * load from each of the first PAGE_LINES lines of each 4 KiB page about PAGE_REACH ahead. The
 * hardware's L2 streamer tracks accesses within a page and runs ahead of them; misses at the
 * page's start are meant to set it fetching the rest of that page into L2 on its own (inferred
 * from the timings below), so the core waits on one round of misses a page, not on each line.
 * One line a page left the streamer too little of a run: it was still close behind when the
 * decode came to the page (NF4 b64, same measure as below, three rounds taking turns: one line
 * 2.89–3.40 ms, four 2.55–2.79; two and six alike, sixteen 2.77–3.05). 8-bit codes
 * (TOUCH_LINES): a load from every line of the row two rows ahead, a burst whose misses are in
 * flight together: the 8-bit decode takes 2–4× the bytes a second of the others, and the
 * streamer alone fell behind it. The burst costs the core its wait for up to three rounds of
 * fill buffers a row, which the page touches avoid. 4096², one row of x, 1 thread, CPU time,
 * weights streamed from memory (`QGRAD_THREADS=1 npm run bench -- --sections packed`), burst →
 * page touches: int4 g32 2.22 → 1.84 ms, NF4 2.89 → 2.47, MXFP4 2.35 → 1.98, ternary 1.96 → 1.80;
 * int8 per channel 2.8 → 3.1–3.4 in a script's runs (so it keeps the burst). `tmp`: three
 * scratch i32 locals.
 */
export function touchAhead(c: Code, l: { o: number; ahead: number; O: number; codes: number; rowBytes: number; scale: number; scaleRow: () => void; stride: number; sink: number; tmp: [number, number, number] }): void {
  const [r, p, end] = l.tmp;
  const lines = l.stride === TOUCH_PAGES ? PAGE_LINES : 1;
  const touches = (start: () => void, bytes: () => void) => {
    start();
    c.tee(p);
    bytes();
    c.op(Op.i32_add).set(end);
    // the first multiple of the stride at or after the start
    c.get(p).i32(l.stride - 1).op(Op.i32_add).i32(-l.stride).op(Op.i32_and).set(p);
    c.while(() => c.get(p).get(end).op(Op.i32_lt_u), () => {
      c.get(l.sink).get(p).mem(Op.i32_load, 0).op(Op.i32_xor).set(l.sink);
      // the page's next lines, those inside the row (its end may be the weight's, and memory's)
      for (let j = 1; j < lines; j++) {
        c.get(p).i32(64 * j).op(Op.i32_add).get(end).op(Op.i32_lt_u).if();
        c.get(l.sink).get(p).mem(Op.i32_load, 0, 64 * j).op(Op.i32_xor).set(l.sink);
        c.end();
      }
      c.get(p).i32(l.stride).op(Op.i32_add).set(p);
    });
  };
  c.get(l.o).get(l.ahead).op(Op.i32_add).tee(r).get(l.O).op(Op.i32_lt_u).get(l.ahead).op(Op.i32_eqz).op(Op.i32_eqz).op(Op.i32_and).if();
  touches(() => c.get(l.codes).get(r).get(l.rowBytes).op(Op.i32_mul).op(Op.i32_add), () => c.get(l.rowBytes));
  touches(() => {
    c.get(l.scale).get(r);
    l.scaleRow();
    c.op(Op.i32_mul).op(Op.i32_add);
  }, l.scaleRow);
  c.end();
}

/** A packed kernel operand's address: in place when it lives in wasm memory (not overlapping out), else staged in scratch. */
export interface Placed {
  a: KernelArg<TypedArray> | null;
  n: number;
  addr: number;
  staged: boolean;
}

/**
 * Addresses for the operands (`sizes`: each with its element count) and for out (`outN` floats),
 * staged ones in scratch after the 64 bytes of table planes; `at` is the first free address after them.
 */
export function placeOperands(engine: Engine, sizes: [KernelArg<TypedArray> | null, number][], out: KernelArg<TypedArray>, outN: number): { place: Placed[]; outAt: number; outPtr: number; at: number } {
  let at = engine.scratch + 64;
  const place = sizes.map(([a, n]): Placed => {
    if (!a) return { a, n, addr: 0, staged: false };
    const addr = engine.inPlace(a, out);
    if (addr >= 0) return { a, n, addr, staged: false };
    const here = at;
    at = align16(at + n * a.data.BYTES_PER_ELEMENT);
    return { a, n, addr: here, staged: true };
  });
  const outAt = engine.addressOf(out);
  const outPtr = outAt >= 0 ? outAt : at;
  if (outAt < 0) at = align16(at + outN * 4);
  return { place, outAt, outPtr, at };
}

/** Copies the staged operands into scratch (after `engine.reserve`). */
export function stageOperands(engine: Engine, place: readonly Placed[]): void {
  for (const { a, n, addr, staged } of place) {
    if (a && staged) engine.stageIn(a.data, a.offset, a.offset + n, a.dtype === 'float32' ? engine.f32 : engine.u8, addr);
  }
}

/** Locals of a packed task that its row epilogue reads (four f32x4 accumulators, the scalar tail t, …). */
export interface RowLocals {
  acc: number[];
  t: number;
  hasBias: number;
  bias: number;
  o: number;
  out: number;
  O: number;
}

/**
 * The accumulator reset and row epilogue every packed variant shares: out[n, o] = Σ acc + t
 * (+ b[o]), with `row` pushing n.
 */
export function rowEpilogue(c: Code, { acc, t, hasBias, bias, o, out, O }: RowLocals) {
  const clearAcc = () => {
    for (const a of acc) c.i32(0).simd(Simd.i32x4_splat).set(a);
  };
  const finish = (row: () => void) => {
    c.get(acc[0]!).get(acc[1]!).simd(Simd.f32x4_add).get(acc[2]!).get(acc[3]!).simd(Simd.f32x4_add).simd(Simd.f32x4_add).set(acc[0]!);
    horizontalSum(c, acc[0]!);
    c.get(t).op(Op.f32_add).set(t);
    c.get(hasBias).if();
    c.get(t).get(bias).get(o).i32(2).op(Op.i32_shl).op(Op.i32_add).mem(Op.f32_load, 2).op(Op.f32_add).set(t);
    c.end();
    c.get(out);
    row();
    c.get(O).op(Op.i32_mul).get(o).op(Op.i32_add).i32(2).op(Op.i32_shl).op(Op.i32_add).get(t).mem(Op.f32_store, 2);
  };
  return { clearAcc, finish };
}

/**
 * Task export `packed_<variant>[_z](arg, t)`: output columns [t·rowsPerTask, …) (weight rows) for
 * every row of x. Each weight value is formed as (L[f] − z)·s in float32, as the dequantized
 * weight is. With one row of x and whole 16-field chunks in every group (`fused`), fields are
 * decoded and multiplied in registers (the decode step of a language model); otherwise each
 * weight row is decoded once into the task's buffer and dotted with every row of x. Both walk K
 * in the same chunks, so a row of a batched product equals that row's product alone, bit for bit.
 */
function emitTask(mb: ModuleBuilder, v: Variant, zeroPoint: boolean, fma: boolean): void {
  const P = ValType.i32;
  const V = ValType.v128;
  const F = ValType.f32;
  const bits = BITS[v];
  const vector = v !== 'lut8';
  // 8-bit integer codes: in groups of whole chunks, x·(L − z) is summed per group in the four
  // accumulators and scaled once, (a0 + a1) + (a2 + a3) times s into the row's vector, as
  // packed-planes.ts sums: the multiply by s leaves the inner loop (its decode is a few
  // instructions, so that was a fifth of the work)
  const int8 = v === 's8' || v === 'u8';
  mb.func([P, P], [], (c) => {
    const [arg, task] = [0, 1];
    const [x, codes, table, scale, zero, bias, out, N, K, O, gs, chunks, fused, hasBias] = range(14, () => c.local(P));
    const [o, o1, g, G, f0, sp, p, xp, bp, buf, j, n, bi] = range(13, () => c.local(P));
    const [s, z, t] = range(3, () => c.local(F));
    const [sv, zv] = [c.local(V), c.local(V)];
    const [A, gsum] = [c.local(V), c.local(V)];
    const grouped = c.local(P);
    const [ahead, sink, rowBytes, ...touchTmp] = range(6, () => c.local(P));
    const planes = range(4, () => c.local(V));
    const w = range(4, () => c.local(V));
    const acc = range(4, () => c.local(V));
    const tmp = range(8, () => c.local(V));
    const word = (k: W) => c.get(arg).mem(Op.i32_load, 2, k * 4);
    const pairs: [number, W][] = [
      [x, W.x], [codes, W.codes], [table, W.table], [scale, W.scale], [zero, W.zero], [bias, W.bias], [out, W.out],
      [N, W.n], [K, W.k], [O, W.o], [gs, W.groupSize], [chunks, W.chunks], [fused, W.fused], [hasBias, W.hasBias], [grouped, W.grouped],
    ];
    for (const [l, k] of pairs) word(k).set(l);
    c.get(K).get(gs).op(Op.i32_div_u).set(G);
    word(W.ahead).set(ahead);
    c.i32(0).set(sink);
    // a row's whole bytes (touches only: rows that start mid-byte are read from their bit offset)
    c.get(K).i32(bits).op(Op.i32_mul).i32(3).op(Op.i32_shr_u).set(rowBytes);
    word(W.buf).get(task);
    word(W.bufBytes).op(Op.i32_mul).op(Op.i32_add).set(buf);
    if (vector && v !== 's8' && v !== 'u8') for (let b = 0; b < 4; b++) word(W.planes).simdMem(Simd.v128_load, 0, 16 * b).set(planes[b]!);
    c.get(task);
    word(W.rowsPerTask).op(Op.i32_mul).set(o);
    c.get(o);
    word(W.rowsPerTask).op(Op.i32_add).set(o1);
    c.get(o1).get(O).get(o1).get(O).op(Op.i32_lt_u).op(Op.select).set(o1);

    /** Pushes (L[field f0 + j] − z)·s in f32. */
    const scalarWeight = () => {
      c.get(table);
      const fi = () => c.get(f0).get(j).op(Op.i32_add).i32(bits).op(Op.i32_mul);
      c.get(codes);
      fi();
      c.i32(3).op(Op.i32_shr_u).op(Op.i32_add).mem(Op.i32_load8_u, 0);
      if (bits < 8) {
        fi();
        c.i32(7).op(Op.i32_and).op(Op.i32_shr_u).i32(2 ** bits - 1).op(Op.i32_and);
      }
      c.i32(2).op(Op.i32_shl).op(Op.i32_add).mem(Op.f32_load, 2);
      if (zeroPoint) c.get(z).op(Op.f32_sub);
      c.get(s).op(Op.f32_mul);
    };
    /** Decodes the 16 fields at p into w as (L − z)·s (or L − z: `scaled` false), and steps p. */
    const decodeChunk = (scaled = true) => {
      decode16(c, v, p, w, planes, tmp);
      for (const q of w) {
        c.get(q);
        if (zeroPoint) c.get(zv).simd(Simd.f32x4_sub);
        if (scaled) c.get(sv).simd(Simd.f32x4_mul);
        c.set(q);
      }
      c.get(p).i32(2 * bits).op(Op.i32_add).set(p);
    };
    /** A ⊕= ((acc0 + acc1) + (acc2 + acc3))·s (a group's sum, scaled once), then acc = 0. */
    const fold = () => {
      c.get(acc[0]!).get(acc[1]!).simd(Simd.f32x4_add).get(acc[2]!).get(acc[3]!).simd(Simd.f32x4_add).simd(Simd.f32x4_add).set(gsum);
      if (fma) c.get(gsum).get(sv).get(A).simd(Simd.f32x4_relaxed_madd).set(A);
      else c.get(A).get(gsum).get(sv).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).set(A);
      for (const a of acc) c.i32(0).simd(Simd.i32x4_splat).set(a);
    };
    /** The row's vector into acc0 for the shared epilogue ((A + 0) + (0 + 0)). */
    const unfold = () => {
      for (const a of acc) c.i32(0).simd(Simd.i32x4_splat).set(a);
      c.get(A).set(acc[0]!);
    };
    /** acc_q ⊕= a_q·(x at xp + 16q), then xp steps a chunk. */
    const maddChunk = (a: (q: number) => void) => {
      for (let q = 0; q < 4; q++) {
        if (fma) {
          a(q);
          c.get(xp).simdMem(Simd.v128_load, 0, 16 * q).get(acc[q]!).simd(Simd.f32x4_relaxed_madd).set(acc[q]!);
        } else {
          c.get(acc[q]!);
          a(q);
          c.get(xp).simdMem(Simd.v128_load, 0, 16 * q).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).set(acc[q]!);
        }
      }
      c.get(xp).i32(64).op(Op.i32_add).set(xp);
    };
    const { clearAcc, finish } = rowEpilogue(c, { acc, t, hasBias, bias, o, out, O });
    /** Per group g: f0, p, s (sv), z (zv) at the group's start. */
    const groupStart = () => {
      c.get(o).get(K).op(Op.i32_mul).get(g).get(gs).op(Op.i32_mul).op(Op.i32_add).set(f0);
      c.get(codes).get(f0).i32(bits).op(Op.i32_mul).i32(3).op(Op.i32_shr_u).op(Op.i32_add).set(p);
      c.get(scale).get(sp).op(Op.i32_add).mem(Op.f32_load, 2).tee(s).simd(Simd.f32x4_splat).set(sv);
      if (zeroPoint) c.get(zero).get(sp).op(Op.i32_add).mem(Op.f32_load, 2).tee(z).simd(Simd.f32x4_splat).set(zv);
      c.get(sp).i32(4).op(Op.i32_add).set(sp);
    };

    c.while(() => c.get(o).get(o1).op(Op.i32_lt_u), () => {
      touchAhead(c, { o, ahead, O, codes, rowBytes, scale, scaleRow: () => c.get(G).i32(2).op(Op.i32_shl), stride: touchStride(v), sink, tmp: touchTmp as [number, number, number] });
      c.get(o).get(G).op(Op.i32_mul).i32(2).op(Op.i32_shl).set(sp);
      if (vector) {
        c.get(fused).if();
        {
          c.get(x).set(xp);
          clearAcc();
          c.i32(0).simd(Simd.i32x4_splat).set(A);
          c.for(g, () => c.i32(0), () => c.get(G), 1, () => {
            groupStart();
            c.for(bi, () => c.i32(0), () => c.get(chunks), 1, () => {
              decodeChunk(!int8);
              maddChunk((q) => c.get(w[q]!));
            });
            if (int8) fold();
          });
          if (int8) unfold();
          c.f32(0).set(t);
          finish(() => c.i32(0));
        }
        c.op(Op.else);
      }
      {
        // the weight row into the buffer: whole chunks where the group starts on a byte, then fields one by one
        c.get(buf).set(bp);
        c.for(g, () => c.i32(0), () => c.get(G), 1, () => {
          groupStart();
          // grouped: the row unscaled, L − z (·1 is exact), scaled per group by `fold`
          if (int8) {
            c.get(grouped).if();
            c.f32(1).simd(Simd.f32x4_splat).set(sv);
            c.end();
          }
          if (vector) {
            c.for(bi, () => c.i32(0), () => c.get(chunks), 1, () => {
              decodeChunk();
              for (let q = 0; q < 4; q++) c.get(bp).get(w[q]!).simdMem(Simd.v128_store, 0, 16 * q);
              c.get(bp).i32(64).op(Op.i32_add).set(bp);
            });
          }
          c.for(j, () => c.get(chunks).i32(4).op(Op.i32_shl), () => c.get(gs), 1, () => {
            c.get(bp);
            scalarWeight();
            c.mem(Op.f32_store, 2);
            c.get(bp).i32(4).op(Op.i32_add).set(bp);
          });
        });
        // a dot per row of x, in the chunks the fused path takes
        c.for(n, () => c.i32(0), () => c.get(N), 1, () => {
          c.get(x).get(n).get(K).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).set(xp);
          c.get(buf).set(bp);
          clearAcc();
          if (int8) {
            c.get(grouped).if();
            {
              // per group, in the fused path's order: its chunks, then the fold
              c.i32(0).simd(Simd.i32x4_splat).set(A);
              c.get(o).get(G).op(Op.i32_mul).i32(2).op(Op.i32_shl).set(sp);
              c.for(g, () => c.i32(0), () => c.get(G), 1, () => {
                c.get(scale).get(sp).op(Op.i32_add).mem(Op.f32_load, 2).simd(Simd.f32x4_splat).set(sv);
                c.get(sp).i32(4).op(Op.i32_add).set(sp);
                c.for(bi, () => c.i32(0), () => c.get(chunks), 1, () => {
                  maddChunk((q) => c.get(bp).simdMem(Simd.v128_load, 0, 16 * q));
                  c.get(bp).i32(64).op(Op.i32_add).set(bp);
                });
                fold();
              });
              unfold();
            }
            c.op(Op.else);
          }
          c.for(bi, () => c.i32(0), () => c.get(K).i32(4).op(Op.i32_shr_u), 1, () => {
            maddChunk((q) => c.get(bp).simdMem(Simd.v128_load, 0, 16 * q));
            c.get(bp).i32(64).op(Op.i32_add).set(bp);
          });
          if (int8) c.end();
          c.f32(0).set(t);
          c.for(j, () => c.get(K).i32(-16).op(Op.i32_and), () => c.get(K), 1, () => {
            c.get(t).get(xp).mem(Op.f32_load, 2).get(bp).mem(Op.f32_load, 2).op(Op.f32_mul).op(Op.f32_add).set(t);
            c.get(xp).i32(4).op(Op.i32_add).set(xp);
            c.get(bp).i32(4).op(Op.i32_add).set(bp);
          });
          finish(() => c.get(n));
        });
      }
      if (vector) c.end();
      c.get(o).i32(1).op(Op.i32_add).set(o);
    });
    c.get(arg).get(sink).mem(Op.i32_store, 2, W.sink * 4);
  }, `packed_${v}${zeroPoint ? '_z' : ''}`);
}

/** Adds the `packed_*` task exports (and the base-3 ones, wasm/packed-base3.ts). */
export function emitPacked(mb: ModuleBuilder, flavor: Flavor): void {
  for (const v of VARIANTS) for (const z of [false, true]) emitTask(mb, v, z, flavor.relaxed);
  emitPackedBase3(mb, flavor);
  emitPackedPlanes(mb, flavor);
}

/** Which decode fits an 8-bit table: the integer itself (int8 or uint8 codes) or a lookup. */
function variantOf(bits: number, table: Arg): Variant {
  if (bits < 8) return `b${bits}` as Variant;
  const t = table.data;
  let s8 = true;
  let u8 = true;
  for (let f = 0; f < 256; f++) {
    const l = t[table.offset + f]!;
    if (l !== (f < 128 ? f : f - 256)) s8 = false;
    if (l !== f) u8 = false;
  }
  return s8 ? 's8' : u8 ? 'u8' : 'lut8';
}

export const align16 = (b: number) => Math.ceil(b / 16) * 16;

/** A call's level table as float32 and its bytes (reused: a tiny-Llama matvec is a few µs). */
const LEVELS = new Float32Array(16);
const LEVEL_BYTES = new Uint8Array(LEVELS.buffer);

/** Writes the table planes of a 1/2/4-bit call at `at`: plane b holds byte b of each level (little-endian float32), unused entries zero. */
function fillPlanes(engine: Engine, table: Arg, bits: number, at: number): void {
  const u8 = engine.u8;
  for (let f = 0; f < 2 ** bits; f++) LEVELS[f] = table.data[table.offset + f]!;
  u8.fill(0, at, at + 64);
  // 2-bit fields arrive as f or 4·f (see decode16)
  for (let f = 0; f < 2 ** bits; f++) {
    for (let b = 0; b < 4; b++) {
      u8[at + 16 * b + f] = LEVEL_BYTES[4 * f + b]!;
      if (bits === 2) u8[at + 16 * b + 4 * f] = LEVEL_BYTES[4 * f + b]!;
    }
  }
}

/**
 * Runs `packedMatmul` in wasm; false (the js oracle runs instead) for float64, a strided x, or
 * weights too large for 32-bit bit offsets. Bad operands throw from the shared checks first.
 */
export function packedMatmulWasm(engine: Engine, inputs: readonly Arg[], out: Arg, params: PackedMatmulParams): boolean {
  const ops = packedOperands(inputs, out, params);
  const { x, codes, table, scale, zero, bias, N, K, O } = ops;
  if (x.dtype !== 'float32' || table.dtype !== 'float32' || scale.dtype !== 'float32' || out.dtype !== 'float32') return false;
  if ((zero && zero.dtype !== 'float32') || (bias && bias.dtype !== 'float32')) return false;
  if (x.strides[1] !== 1 || (N > 1 && x.strides[0] !== K)) return false;
  const { bits, groupSize: gs } = params;
  if (O * K * bits >= 2 ** 31) return false;
  if (N === 0 || O === 0) return true;
  if (params.packing === 'base3') return packedBase3Wasm(engine, ops, out, params);
  if (planar(bits, gs)) return packedPlanesWasm(engine, ops, out, bits, gs, fillPlanes);
  const v = variantOf(bits, table);
  const threaded = engine.threads > 1 && N * O * K >= PARALLEL_MIN_MACS;
  const tasks = threaded ? Math.min(O, engine.threads * 4) : 1;
  const rowsPerTask = Math.ceil(O / tasks);
  const nTasks = Math.ceil(O / rowsPerTask);
  const codeBytes = Math.ceil((O * K * bits) / 8);
  // each operand in place when it lives in wasm memory (and does not overlap out), else staged
  const sizes: [Arg | null, number][] = [[x, N * K], [codes, codeBytes], [table, 2 ** bits], [scale, O * ops.G], [zero, O * ops.G], [bias, O]];
  const placement = placeOperands(engine, sizes, out, N * O);
  const { place, outAt, outPtr } = placement;
  let at = placement.at;
  // whole chunks need every group to start on a byte; then one row of x multiplies as it decodes
  const aligned = v !== 'lut8' && (K * bits) % 8 === 0 && (gs * bits) % 8 === 0;
  const chunks = aligned ? gs >> 4 : 0;
  const fused = N === 1 && aligned && gs % 16 === 0;
  const bufBytes = fused ? 0 : align16(K * 4);
  const buf = at;
  at += nTasks * bufBytes;
  if (!engine.reserve(at - engine.scratch)) return false;
  stageOperands(engine, place);
  if (bits < 8) fillPlanes(engine, table, bits, engine.scratch);
  const args = engine.i32;
  const word = (k: W, value: number) => (args[ARGS / 4 + k] = value);
  const [px, pc, pt, ps, pz, pb] = place.map((q) => q.addr) as [number, number, number, number, number, number];
  word(W.x, px);
  word(W.codes, pc);
  word(W.planes, engine.scratch);
  word(W.table, pt);
  word(W.scale, ps);
  word(W.zero, pz);
  word(W.bias, pb);
  word(W.out, outPtr);
  word(W.n, N);
  word(W.k, K);
  word(W.o, O);
  word(W.groupSize, gs);
  word(W.rowsPerTask, rowsPerTask);
  word(W.buf, buf);
  word(W.bufBytes, bufBytes);
  word(W.hasBias, bias ? 1 : 0);
  word(W.chunks, chunks);
  word(W.fused, fused ? 1 : 0);
  word(W.grouped, (v === 's8' || v === 'u8') && gs % 16 === 0 ? 1 : 0);
  word(W.ahead, touchRows(codeBytes + O * ops.G * 4, O, touchStride(v)));
  engine.parallel(`packed_${v}${zero ? '_z' : ''}`, ARGS, nTasks, threaded);
  if (outAt < 0) engine.stageOut(out, engine.f32, outPtr, N * O);
  return true;
}
