/**
 * @file wasm batched matmul: decides for each operand whether the micro-kernel reads it where it
 * lives (in wasm memory, or a verbatim copy of a foreign input's span) or from the panel layout
 * it is packed into by parallel wasm tasks (so transposes cost nothing extra), splits C into tasks
 * for the thread pool, and copies C back unless it was written in place. The SIMD code itself is
 * generated in simd-matmul.ts.
 */
import type { KernelArg } from '../backend.js';
import { numel, offsets } from '../layout.js';
import type { TypedArray } from '../names.js';
import { matvecWasm } from './matvec.js';
import { ARGS, MAX_HEAP_BYTES, span, type Engine } from './runtime.js';
import { DirectArg, F32_TILE, F64_TILE, MatmulArg, type MicroShape, PackArg } from './simd-matmul.js';

/** The packing job's argument block sits after the matmul job's. */
const PACK_ARGS = ARGS + 256;

type Arg = KernelArg<TypedArray>;

/**
 * k-block length: depends on K only, never on threads, so every C element is summed in the same
 * order whatever the partition. ~256 keeps an A micro-panel and a B micro-panel in L1.
 */
export function kBlock(K: number): number {
  const blocks = Math.max(1, Math.ceil(K / 256));
  return Math.ceil(K / blocks);
}

/** Row block and column block targets (A block MC×kc stays in L2). */
const MC_TARGET = 96;
const NC_TARGET = 512;
/**
 * Multiply-adds below which waking the workers costs more than it saves. With workers polling
 * between jobs (threads.ts), 2 threads vs 1 measured: 96² 36 vs 38 GFLOP/s, 128² 43–45 vs 42–44,
 * 192² 53 vs 44 (npx tsx scripts/bench/matmul.ts --sizes 96,128,160,192).
 */
const PARALLEL_MIN_MACS = 128 ** 3;
/** Scratch used per chunk of batches; bigger batches are split into several passes. */
const CHUNK_BYTES = 64 << 20;

const roundUp = (x: number, m: number) => Math.ceil(x / m) * m;
const align = (bytes: number) => roundUp(bytes, 64);

/**
 * Panels per tile for `panels` cut into tiles of `per`: where the last tile would be under half
 * the others, the fewest tiles (up to 1.5× as many) that cut them evenly, else `per` unchanged.
 */
function evenTile(panels: number, per: number): number {
  const tiles = Math.ceil(panels / per);
  if (2 * (panels - (tiles - 1) * per) >= per) return per;
  for (let t = tiles; t <= Math.min(panels, Math.floor(1.5 * tiles)); t++) if (panels % t === 0) return panels / t;
  return per;
}

/**
 * Row and column block of C's tiles: the cache targets, and with threads, enough tasks for
 * dynamic balancing (8 per thread: 512² 73 → 80 GFLOP/s over 4 per thread), halving the longer
 * side of the tile: thin row blocks would each stream all of B through L2 (interleaved, 2
 * threads: 512² 83.5 → 85.5 GFLOP/s, weight gradients xᵀ·g 73 → 74, others equal). Then tiles of
 * equal size where a few more of them make it so: after a thin last tile (2048 rows in tiles of
 * 96 leave one of 32) one thread idles while the other finishes a whole one. 2 threads, wall
 * time, alternating in one process on a quiet machine (runs/envab.ts): the tiny-Llama products
 * with 2048 rows +2–5 % (rows in 32 tiles of 64), others unchanged. The partition never changes
 * the result.
 */
function cacheTiles(Mp: number, Np: number, { mr, nr }: MicroShape, batches: number, threads: number): [number, number] {
  let mc = Math.min(Mp, roundUp(MC_TARGET, mr));
  let nc = Math.min(Np, roundUp(NC_TARGET, nr));
  if (threads <= 1) return [mc, nc];
  while (batches * Math.ceil(Mp / mc) * Math.ceil(Np / nc) < threads * 8) {
    if (nc > 4 * nr && (nc >= 2 * mc || mc <= 2 * mr)) nc = roundUp(nc / 2, nr);
    else if (mc > 2 * mr) mc = roundUp(mc / 2, mr);
    else break;
  }
  return [evenTile(Mp / mr, mc / mr) * mr, evenTile(Np / nr, nc / nr) * nr];
}

/**
 * Tiles of a product whose B panels its task packs itself (fuseB, one thread): all rows in one
 * block, so each panel is packed once, and columns in blocks of NC_TARGET.
 */
function columnTiles(Mp: number, Np: number, { nr }: MicroShape): [number, number] {
  const panels = Np / nr;
  return [Mp, evenTile(panels, Math.min(panels, roundUp(NC_TARGET, nr) / nr)) * nr];
}

/** A (M×K, strides sm, sk) → per k-block, MR-row panels stored k-major (MR values per k). */
function packA(src: TypedArray, off: number, sm: number, sk: number, M: number, K: number, mr: number, kc: number, dst: TypedArray, d: number): void {
  const Mp = roundUp(M, mr);
  for (let k0 = 0; k0 < K; k0 += kc) {
    const kcb = Math.min(kc, K - k0);
    for (let i0 = 0; i0 < Mp; i0 += mr) {
      for (let r = 0; r < mr; r++) {
        const i = i0 + r;
        let o = d + r;
        if (i < M) {
          let s = off + i * sm + k0 * sk;
          for (let kk = 0; kk < kcb; kk++, s += sk, o += mr) dst[o] = src[s]!;
        } else {
          for (let kk = 0; kk < kcb; kk++, o += mr) dst[o] = 0;
        }
      }
      d += mr * kcb;
    }
  }
}

/** B (K×N, strides sk, sn) → per k-block, NR-column panels stored k-major (NR values per k). */
function packB(src: TypedArray, off: number, sk: number, sn: number, K: number, N: number, nr: number, kc: number, dst: TypedArray, d: number): void {
  const Np = roundUp(N, nr);
  for (let k0 = 0; k0 < K; k0 += kc) {
    const kcb = Math.min(kc, K - k0);
    for (let j0 = 0; j0 < Np; j0 += nr) {
      const w = Math.min(nr, N - j0);
      for (let kk = 0; kk < kcb; kk++) {
        const s = off + (k0 + kk) * sk + j0 * sn;
        const o = d + kk * nr;
        if (sn === 1) for (let c = 0; c < w; c++) dst[o + c] = src[s + c]!;
        else for (let c = 0; c < w; c++) dst[o + c] = src[s + c * sn]!;
        for (let c = w; c < nr; c++) dst[o + c] = 0;
      }
      d += nr * kcb;
    }
  }
}

function allEqual(xs: Int32Array): boolean {
  for (let i = 1; i < xs.length; i++) if (xs[i] !== xs[0]) return false;
  return true;
}

/** Multiply-adds below which the js loop beats packing + a wasm call (measured: 16³ ≈ break-even). */
export const MATMUL_MIN_MACS = 16 ** 3;

/**
 * Runs the matmul kernel on the engine; returns false when it cannot or should not (the caller
 * falls back to js): other dtypes, products under `minMacs`, scratch beyond the memory limit.
 */
export function matmulWasm(engine: Engine, [a, b]: readonly Arg[], out: Arg, minMacs = MATMUL_MIN_MACS, direct = true): boolean {
  const dtype = out.dtype;
  if ((dtype !== 'float32' && dtype !== 'float64') || a!.dtype !== dtype || b!.dtype !== dtype) return false;
  const tile: MicroShape = dtype === 'float32' ? F32_TILE : F64_TILE;
  const e = dtype === 'float32' ? 4 : 8;
  const r = out.shape.length;
  const M = out.shape[r - 2]!;
  const N = out.shape[r - 1]!;
  const K = a!.shape[r - 1]!;
  const batchShape = out.shape.slice(0, r - 2);
  const aBase = offsets({ shape: batchShape, strides: a!.strides.slice(0, r - 2), offset: a!.offset });
  const bBase = offsets({ shape: batchShape, strides: b!.strides.slice(0, r - 2), offset: b!.offset });
  const batches = aBase.length;
  if (batches * M * N * K < minMacs) return false;
  if (batches === 0 || M === 0 || N === 0) return true;
  if (K === 0) {
    out.data.fill(0, out.offset, out.offset + batches * M * N);
    return true;
  }
  // x·Wᵀ with a few rows of x and W row-major in wasm memory: dot products along W's rows in place
  if (batches === 1 && direct && matvecWasm(engine, a!, b!, out, M, N, K)) return true;
  const { mr, nr } = tile;
  const Mp = roundUp(M, mr);
  const Np = roundUp(N, nr);
  const kc = kBlock(K);
  const shareA = allEqual(aBase);
  const shareB = allEqual(bBase);
  // compact views are copied verbatim and packed by wasm tasks (in parallel); a small window of a
  // large buffer is packed element by element in JS instead of copying the whole span
  const spanA = span(a!);
  const spanB = span(b!);
  // operands in wasm memory are packed straight from where they live (C is written to scratch
  // first: the micro-kernel stores whole padded tiles); others are copied in by span, or packed
  // element by element in JS when a small window of a large buffer
  const inA = engine.addressOf({ data: a!.data, offset: spanA[0] });
  const inB = engine.addressOf({ data: b!.data, offset: spanB[0] });
  const [sam, sak] = [a!.strides[r - 2]!, a!.strides[r - 1]!];
  const [sbk, sbn] = [b!.strides[r - 2]!, b!.strides[r - 1]!];
  const copyA = inA >= 0 ? 0 : spanA[1] - spanA[0];
  const copyB = inB >= 0 ? 0 : spanB[1] - spanB[0];
  const raw = copyA <= 2 * numel(a!.shape) + 64 && copyB <= 2 * numel(b!.shape) + 64;
  // scratch: staged copies of foreign operands (raw), each batch's element offsets into A's and
  // B's span, packed panels, C
  const stagedA = engine.scratch;
  const stagedB = stagedA + (raw ? align(copyA * e) : 0);
  const basesA = stagedB + (raw ? align(copyB * e) : 0);
  const basesB = basesA + align(4 * batches);
  const fixedStart = basesB + align(4 * batches);
  // where each operand's span lies in wasm memory (its own buffer, or the staged copy), else -1
  const atA = inA >= 0 ? inA : raw ? stagedA : -1;
  const atB = inB >= 0 ? inB : raw ? stagedB : -1;
  // Whether the micro-kernel reads an operand where it lives (same sums, same bits) instead of
  // from packed panels: the pack is a pass over the operand that pays off only where the strided
  // reads would miss the cache. 1 thread, CPU time, in place against packed (npx tsx runs/ab.ts,
  // medians of 9 alternating rounds, both orders): A, whenever its MR rows need no padding and it
  // is row-major (k contiguous: MR streams): tiny-Llama linear products +0–8 %, attention +9–26 %,
  // 1024² +1 %; with k strided (a transposed view such as xᵀ in a weight gradient, each k of a
  // panel on a cache line of its own), only while few tiles share the panel (N ≤ 16·NR): 128 ×
  // 2048ᵀ·2048 × 64 +7–11 %, 512 × 2048ᵀ·2048 × 128 +19 %, but N = 256…384 −2 %, 1024³ −35 %.
  // B (columns contiguous), only for M ≤ 16·MR: 64 × (64×128 · 128×128) +20 %, 32 × 1024 · 1024²
  // +13–34 %, where with M = 128 (512²) it no longer gains.
  // A transposed view (xᵀ of a weight gradient, rows contiguous) whose tiles are at least 64 × 128
  // is instead packed by each task, one k block at a time just before use (matmul_fused_*): still
  // in cache when the micro-kernel reads it, and no separate pass over A. 1 thread, CPU time,
  // against the pack pass or the in-place read (npx tsx runs/ab.ts, medians of 21 alternating
  // rounds, both orders, load 7): tiny-Llama dW 128 × 2048ᵀ·2048 × 384 +3–5 %, × 256 +5–7 %, 384
  // × 2048ᵀ·2048 × 128 +5–8 %, 128 × … × 128 +1–4 %; with N = 64 (tiles of 64 columns) −3…+2 %,
  // so there A stays in place; with 2 threads the tiles are narrower (8–24 rows): not used.
  const threaded = engine.threads > 1 && batches * M * N * K >= PARALLEL_MIN_MACS;
  const threads = threaded ? engine.threads : 1;
  const [mcFuse, ncFuse] = cacheTiles(Mp, Np, tile, 1, threads);
  const fuseA = direct && batches === 1 && atA >= 0 && M % mr === 0 && sam === 1 && sak >= mr && mcFuse >= 16 * mr && ncFuse >= 16 * nr;
  const directA = !fuseA && direct && atA >= 0 && M % mr === 0 && sam >= 0 && sak >= 0 && (sak === 1 || Np <= 16 * nr);
  // A transposed B (x·Wᵀ, W's rows k-contiguous) beside a short A whose rows all fit one row block,
  // on one thread: the task packs its B panels one at a time just before the micro-kernel reads
  // them (each element once, as the pack pass does), so there is no packed copy of W (800 KB for
  // the MNIST MLP's first layer) pushing C out of L2 before the next kernel reads it. 1 thread,
  // CPU time, medians of 11 alternating rounds, both orders (npx tsx runs/ab.ts, load 4): 64 ×
  // 784·(256 × 784)ᵀ +6–8 %, 64 × 256·(256 × 256)ᵀ +1–2 %; the map that reads C next 24 → 13 µs
  // (64 × 256). Not on the pool: there the tiles are 64 × 16 (16 tasks), and in the MLP step (2
  // threads, real-time priority, medians of 125 steps) the first layer's product took 418–420 µs
  // against 396–413 µs with the pack phase and 32 × 32 tiles.
  const fuseB = !threaded && direct && dtype === 'float32' && batches === 1 && atB >= 0 && !fuseA && sbk === 1 && sbn >= nr && N % nr === 0 && Mp <= roundUp(MC_TARGET, mr);
  const directB = !fuseB && direct && atB >= 0 && Mp <= 16 * mr && N % nr === 0 && sbn === 1 && sbk >= 0;
  const aBytes = directA || fuseA ? 0 : align(Mp * K * e);
  const bBytes = directB || fuseB ? 0 : align(K * Np * e);
  const cBytes = align(Mp * Np * e);
  // C straight into a tensor in wasm memory when its tiles are exactly the tensor's rows (M, N
  // multiples of the micro-tile) and it overlaps no operand; else in scratch, copied in afterwards
  const outAt = engine.addressOf(out);
  const overlaps = (x: Arg) => engine.addressOf(x) >= 0 && engine.inPlace(x, out) < 0;
  const directC = outAt >= 0 && Mp === M && Np === N && !overlaps(a!) && !overlaps(b!);
  const perBatch = (shareA ? 0 : aBytes) + (shareB ? 0 : bBytes) + (directC ? 0 : cBytes);
  const fixed = fixedStart - engine.scratch + (shareA ? aBytes : 0) + (shareB ? bBytes : 0);
  const chunk = perBatch === 0 ? batches : Math.max(1, Math.min(batches, Math.floor((CHUNK_BYTES - fixed) / perBatch)));
  const aPtr = fixedStart;
  const bPtr = aPtr + (shareA ? aBytes : chunk * aBytes);
  const cPtr = bPtr + (shareB ? bBytes : chunk * bBytes);
  const [mc, nc] = fuseB ? columnTiles(Mp, Np, tile) : cacheTiles(Mp, Np, tile, chunk, threads);
  const tilesM = Math.ceil(Mp / mc);
  const tilesN = Math.ceil(Np / nc);
  const bufBytes = fuseA ? align(mc * kc * e) : fuseB ? align(nr * kc * e) : 0;
  const buf = cPtr + (directC ? 0 : chunk * cBytes);
  const total = fixed + chunk * perBatch + tilesM * tilesN * bufBytes;
  if (total > MAX_HEAP_BYTES || !engine.reserve(total)) return false;

  const args = engine.i32;
  const w = ARGS / 4;
  const pw = PACK_ARGS / 4;
  for (let t = 0; t < batches; t++) {
    args[basesA / 4 + t] = aBase[t]! - spanA[0];
    args[basesB / 4 + t] = bBase[t]! - spanB[0];
  }
  if (raw) {
    const view = dtype === 'float32' ? engine.f32 : engine.f64;
    if (inA < 0) engine.stageIn(a!.data, spanA[0], spanA[1], view, stagedA);
    if (inB < 0) engine.stageIn(b!.data, spanB[0], spanB[1], view, stagedB);
    const words: [PackArg, number][] = [
      [PackArg.rawA, atA], [PackArg.rawB, atB], [PackArg.panelsA, Mp / mr], [PackArg.panelsB, Np / nr],
      [PackArg.m, M], [PackArg.n, N], [PackArg.k, K], [PackArg.kc, kc], [PackArg.sam, sam], [PackArg.sak, sak],
      [PackArg.sbk, sbk], [PackArg.sbn, sbn], [PackArg.dstA, aPtr], [PackArg.dstB, bPtr], [PackArg.aBytes, aBytes], [PackArg.bBytes, bBytes],
    ];
    for (const [word, v] of words) args[pw + word] = v;
  }
  const viaDirect = directA || directB || fuseA || fuseB;
  const product = `matmul_${fuseA ? 'fused_' : fuseB ? 'fusedb_' : viaDirect ? 'direct_' : ''}${dtype === 'float32' ? 'f32' : 'f64'}`;
  const cBatch = directC ? M * N * e : cBytes;
  if (viaDirect) {
    const words: [DirectArg, number][] = [
      [DirectArg.a, directA || fuseA ? atA : aPtr], [DirectArg.b, directB || fuseB ? atB : bPtr], [DirectArg.c, cPtr],
      [DirectArg.mp, Mp], [DirectArg.np, Np], [DirectArg.k, K], [DirectArg.kc, kc], [DirectArg.tilesM, tilesM], [DirectArg.tilesN, tilesN],
      [DirectArg.mc, mc], [DirectArg.nc, nc], [DirectArg.aDirect, directA ? 1 : 0], [DirectArg.aRow, sam * e], [DirectArg.aK, sak * e],
      [DirectArg.bDirect, directB ? 1 : 0], [DirectArg.bK, sbk * e], [DirectArg.aBatch, shareA ? 0 : aBytes], [DirectArg.bBatch, shareB ? 0 : bBytes],
      [DirectArg.cBatch, cBatch], [DirectArg.buf, buf], [DirectArg.bufBytes, bufBytes], [DirectArg.bCol, sbn * e],
    ];
    for (const [word, v] of words) args[w + word] = v;
  } else {
    const words: [MatmulArg, number][] = [
      [MatmulArg.a, aPtr], [MatmulArg.b, bPtr], [MatmulArg.c, cPtr], [MatmulArg.aBatch, shareA ? 0 : aBytes], [MatmulArg.bBatch, shareB ? 0 : bBytes],
      [MatmulArg.cBatch, cBatch], [MatmulArg.mp, Mp], [MatmulArg.np, Np], [MatmulArg.k, K], [MatmulArg.kc, kc], [MatmulArg.tilesM, tilesM],
      [MatmulArg.tilesN, tilesN], [MatmulArg.mc, mc], [MatmulArg.nc, nc],
    ];
    for (const [word, v] of words) args[w + word] = v;
  }
  for (let t0 = 0; t0 < batches; t0 += chunk) {
    const n = Math.min(chunk, batches - t0);
    if (directC) args[w + (viaDirect ? DirectArg.c : MatmulArg.c)] = outAt + t0 * M * N * e;
    if (viaDirect) {
      args[w + DirectArg.aBases] = basesA + 4 * t0;
      args[w + DirectArg.bBases] = basesB + 4 * t0;
    }
    const multiply = { name: product, arg: ARGS, n: n * tilesM * tilesN };
    if (raw) {
      // the shared operand is packed once, with the first chunk; packing and the product run as
      // the two phases of one pool job (interleaved against two dispatches: +1–3 % on squares,
      // +3–7 % on the batched attention products)
      const tasksA = directA || fuseA ? 0 : shareA ? (t0 === 0 ? Mp / mr : 0) : n * (Mp / mr);
      const tasksB = directB || fuseB ? 0 : shareB ? (t0 === 0 ? Np / nr : 0) : n * (Np / nr);
      args[pw + PackArg.aBases] = basesA + 4 * (shareA ? 0 : t0);
      args[pw + PackArg.bBases] = basesB + 4 * (shareB ? 0 : t0);
      args[pw + PackArg.tasksA] = tasksA;
      if (tasksA + tasksB === 0) engine.parallel(product, ARGS, multiply.n, threaded);
      else engine.parallel(dtype === 'float32' ? 'pack_f32' : 'pack_f64', PACK_ARGS, tasksA + tasksB, threaded, multiply);
    } else {
      const view = dtype === 'float32' ? engine.f32 : engine.f64;
      if (t0 === 0) engine.stagedIn += (inA < 0 ? numel(a!.shape) * e : 0) + (inB < 0 ? numel(b!.shape) * e : 0);
      for (let t = 0; t < n; t++) {
        if (!directA && !fuseA && (!shareA || (t0 === 0 && t === 0))) packA(a!.data, aBase[t0 + t]!, sam, sak, M, K, mr, kc, view, (aPtr + (shareA ? 0 : t * aBytes)) / e);
        if (!directB && !fuseB && (!shareB || (t0 === 0 && t === 0))) packB(b!.data, bBase[t0 + t]!, sbk, sbn, K, N, nr, kc, view, (bPtr + (shareB ? 0 : t * bBytes)) / e);
      }
      engine.parallel(product, ARGS, multiply.n, threaded);
    }
    if (directC) continue;
    const res = dtype === 'float32' ? engine.f32 : engine.f64;
    const foreignOut = outAt < 0;
    for (let t = 0; t < n; t++) {
      const c0 = (cPtr + t * cBytes) / e;
      const o0 = out.offset + (t0 + t) * M * N;
      if (Np === N) out.data.set(res.subarray(c0, c0 + M * N), o0);
      else for (let i = 0; i < M; i++) out.data.set(res.subarray(c0 + i * Np, c0 + i * Np + N), o0 + i * N);
      if (!foreignOut) continue;
      engine.stagedOut += M * N * e;
    }
  }
  return true;
}
