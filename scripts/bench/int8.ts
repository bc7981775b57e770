/**
 * @file Bench section `int8`: the int8 matmul (`int8Matmul`, int32 accumulation, float32 out scaled
 * per row and column) against the float32 matmul (`matmul`) at the Linear products of one
 * tiny-Llama training step (forward x·Wᵀ, dX = g·W, dW = xᵀ·g, the layouts qgrad's ops pass), on
 * 1 and 2 threads, operands already in wasm memory as tensors are; also the int8 product of float32
 * operands the kernel quantizes while packing (haloLinear's). Ratios are float32 time / int8
 * time (> 1: int8 faster); the step row sums count × median time over the shapes. Then the whole
 * layer: HALO's haloLinear forward + backward (rotations, per-line quantization and three int8
 * products, or fp8's E4M3 rounding and three float32 products) against linear's in float32, in
 * CPU time, on the default backend, after the rotations alone.
 * Run alone: npm run bench -- --sections int8 [--quick]
 */
import * as q from '@qgrad/core';
import { createWasmBackend, type DType, type KernelArg, type TypedArray, type WasmBackend } from '@qgrad/kernels';
import { tinyLlamaConfig } from '@qgrad/nn';
import { haloLinear } from '@qgrad/quant';
import { type BenchContext, cpuMs, usPerCall } from './context.js';
import { llamaMatmulShapes, storedShape, type MatmulShape } from './matmul.js';

type Arg = KernelArg<TypedArray>;

/** A [rows, cols] view of stored data (transposed: stored [cols, rows]). */
function view(data: TypedArray, dtype: DType, rows: number, cols: number, transposed = false): Arg {
  return { data, dtype, shape: [rows, cols], strides: transposed ? [1, rows] : [cols, 1], offset: 0 };
}

const KINDS = ['fp32', 'int8', 'int8q'] as const;
type Kind = (typeof KINDS)[number];

/**
 * The float32 product, the int8 one, and the int8 one from float32 operands quantized by the
 * kernel as it packs them (what haloLinear runs), of one shape on one backend, operands in its memory.
 */
function contenders(be: WasmBackend, s: MatmulShape): Record<Kind, () => void> {
  const [na, nb] = [s.m * s.k, s.k * s.n];
  const fill = <T extends TypedArray>(dtype: DType, n: number, f: (i: number) => number): T => {
    const d = be.alloc(dtype, n) as T;
    for (let i = 0; i < n; i++) d[i] = f(i);
    return d;
  };
  // the float values are the int8 ones over 127, so both products are the same up to rounding
  const qa = (i: number) => (Math.round(Math.sin(i) * 127) | 0);
  const qb = (i: number) => (Math.round(Math.cos(i) * 127) | 0);
  const fa = view(fill('float32', na, (i) => qa(i) / 127), 'float32', s.m, s.k, s.transposeA);
  const fb = view(fill('float32', nb, (i) => qb(i) / 127), 'float32', s.k, s.n, s.transposeB);
  const ia = view(fill('int8', na, qa), 'int8', s.m, s.k, s.transposeA);
  const ib = view(fill('int8', nb, qb), 'int8', s.k, s.n, s.transposeB);
  const sa = { ...view(fill('float32', s.m, () => 1 / 127), 'float32', 1, s.m), shape: [s.m], strides: [1] };
  const sb = { ...view(fill('float32', s.n, () => 1 / 127), 'float32', 1, s.n), shape: [s.n], strides: [1] };
  const fo = view(be.alloc('float32', s.m * s.n), 'float32', s.m, s.n);
  const io = view(be.alloc('float32', s.m * s.n), 'float32', s.m, s.n);
  const qo = view(be.alloc('float32', s.m * s.n), 'float32', s.m, s.n);
  return {
    fp32: () => be.run('matmul', [fa, fb], fo, {}),
    int8: () => be.run('int8Matmul', [ia, ib, sa, sb], io, {}),
    int8q: () => be.run('int8Matmul', [fa, fb, sa, sb], qo, {}),
  };
}

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  // the Linear products only (batch 1); attention's batched products stay float
  const shapes = llamaMatmulShapes().filter((s) => s.batch === 1);
  const reps = ctx.quick ? 5 : 25;
  const perShape: Record<string, unknown>[] = [];
  const rows: (string | number)[][] = [];
  const step: Record<string, number> = Object.fromEntries(['1t', '2t'].flatMap((t) => KINDS.map((k) => [`${k} ${t}`, 0])));
  const backends = [1, 2].map((threads) => createWasmBackend({ threads }));
  for (const s of shapes) {
    const label = `${s.m}×${s.k}${s.transposeA ? 'ᵀ' : ''}·${s.k}×${s.n}${s.transposeB ? 'ᵀ' : ''}`;
    const ms: Record<string, number> = {};
    for (const be of backends) {
      const t = `${be.threads}t`;
      const c = contenders(be, s);
      // alternate the two rep by rep, each timed call right after an untimed one of its own
      const times: Record<Kind, number[]> = { fp32: [], int8: [], int8q: [] };
      for (let r = 0; r < reps; r++) {
        for (const k of KINDS) {
          c[k]();
          const t0 = performance.now();
          c[k]();
          times[k].push(performance.now() - t0);
        }
      }
      for (const k of KINDS) {
        ms[`${k} ${t}`] = ctx.median(times[k]);
        step[`${k} ${t}`]! += s.count * ms[`${k} ${t}`]!;
      }
    }
    perShape.push({ name: s.name, shape: storedShape(s, 'a').join('×') + ' · ' + storedShape(s, 'b').join('×'), m: s.m, k: s.k, n: s.n, transposeA: !!s.transposeA, transposeB: !!s.transposeB, count: s.count, ms });
    const gops = (t: number) => (2 * s.m * s.k * s.n) / (t * 1e6);
    rows.push([`${s.name}: ${label}`, s.count, ...['1t', '2t'].flatMap((t) => [gops(ms[`fp32 ${t}`]!), gops(ms[`int8 ${t}`]!), ms[`fp32 ${t}`]! / ms[`int8 ${t}`]!, ms[`fp32 ${t}`]! / ms[`int8q ${t}`]!])]);
  }
  for (const be of backends) be.dispose();
  rows.push(['one step\'s Linear products (Σ count·ms)', shapes.reduce((n, s) => n + s.count, 0), ...['1t', '2t'].flatMap((t) => [step[`fp32 ${t}`]!, step[`int8 ${t}`]!, step[`fp32 ${t}`]! / step[`int8 ${t}`]!, step[`fp32 ${t}`]! / step[`int8q ${t}`]!])]);
  ctx.table(
    'int8 matmul (int32 accumulation, scaled float32 out) vs float32 matmul, tiny-Llama Linear products (median GOP/s; step row in ms; × = fp32 time / int8 time, > 1 is int8 faster; ×q: int8 from float32 operands quantized while packing)',
    ['product', '×/step', 'fp32 1t', 'int8 1t', '× 1t', '×q 1t', 'fp32 2t', 'int8 2t', '× 2t', '×q 2t'],
    rows,
  );
  const ratio = (k: Kind, t: string) => step[`fp32 ${t}`]! / step[`${k} ${t}`]!;
  return { shapes: perShape, stepMs: step, ratio: { '1t': ratio('int8', '1t'), '2t': ratio('int8', '2t') }, ratioQuantizeInPack: { '1t': ratio('int8q', '1t'), '2t': ratio('int8q', '2t') }, rotations: rotations(ctx), layers: layers(ctx) };
}

/**
 * The block Hadamard rotations haloLinear runs (hadamard, float32, contiguous rows) at the tiny
 * Llama's sizes over 16 × 128 tokens: along in/out features (blocks of 128) and along the tokens
 * for dW (blocks of 256), µs per call on the default wasm backend.
 */
function rotations(ctx: BenchContext): Record<string, number> {
  const { dim, hiddenDim } = tinyLlamaConfig;
  const cases: [number, number, number][] = [[2048, dim, 128], [2048, hiddenDim, 128], [dim, 2048, 256], [hiddenDim, 2048, 256]];
  const g = new q.Generator(5);
  const out: Record<string, number> = {};
  const rows: (string | number)[][] = [];
  for (const [r, c, b] of cases) {
    const x = q.withBackend('wasm', () => q.randn([r, c], { generator: g }));
    const us = q.withBackend('wasm', () => usPerCall(() => q.tidy(() => void q.hadamard(x, { blockSize: b })), 20, ctx.quick ? 3 : 9, ctx.median));
    out[`${r}x${c}/${b}`] = us;
    rows.push([`[${r}, ${c}] blocks of ${b}`, us, (r * c * Math.log2(b)) / (us * 1e3)]);
  }
  ctx.table('hadamard (fwht) float32 rotations of haloLinear, wasm (median µs per call; G butterflies/s)', ['rotation', 'µs', 'G bfly/s'], rows);
  return out;
}

/**
 * haloLinear in int8 and in fp8 (E4M3, emulated) vs linear, forward + backward, at the tiny
 * Llama's Linear sizes over 16 × 128 tokens. Timed in process CPU time (`process.cpuUsage`, all
 * threads), since wall time on a loaded machine measures the neighbours; ratios are paired per
 * round (each contender's step against float's step of the same round), then the median.
 * fp8 with roundToFp as ~20 tensor ops (98637c3) and as one fpRound kernel pass dividing by the
 * row scales (dccf842), CPU ms, median of 3 runs of `QGRAD_THREADS=1 npm run bench -- --sections
 * int8` (2-vCPU machine, load average 5–14), fp32 of the same runs beside:
 *   q,o 200 → 15.3 (fp32 6.0, 5.7); gate,up 432 → 31.3 (fp32 15.4, 17.7);
 *   down 540 → 35.0 (fp32 15.8, 18.0); head 301 → 21.8 (fp32 10.9, 10.7).
 */
function layers(ctx: BenchContext): Record<string, LayerFigures> {
  const prev = q.getBackend();
  q.setBackend('wasm');
  const { dim, hiddenDim, vocabSize } = tinyLlamaConfig;
  const sizes: [string, number, number][] = [['q,o', dim, dim], ['gate,up', dim, hiddenDim], ['down', hiddenDim, dim], ['head', dim, vocabSize]];
  const g = new q.Generator(3);
  const reps = ctx.quick ? 3 : 11;
  const out: Record<string, LayerFigures> = {};
  const rows: (string | number)[][] = [];
  for (const [name, i, o] of sizes) {
    const x = q.randn([2048, i], { generator: g, requiresGrad: true });
    const w = q.randn([o, i], { generator: g, requiresGrad: true });
    const step = (f: (x: q.Tensor, w: q.Tensor) => q.Tensor) => () =>
      q.tidy(() => {
        f(x, w).sum().backward();
        x.grad = null;
        w.grad = null;
      });
    const runs: Record<LayerKind, () => void> = {
      fp32: step((a, b) => q.linear(a, b)),
      int8: step((a, b) => haloLinear(a, b)),
      fp8: step((a, b) => haloLinear(a, b, null, { format: 'fp8' })),
    };
    const ts: Record<LayerKind, number[]> = { fp32: [], int8: [], fp8: [] };
    for (let r = 0; r < reps; r++) {
      for (const k of LAYER_KINDS) {
        runs[k]();
        ts[k].push(cpuMs(runs[k]));
      }
    }
    const ratio = (k: LayerKind) => ctx.median(ts.fp32.map((t, r) => t / ts[k][r]!));
    out[name] = { fp32: ctx.median(ts.fp32), int8: ctx.median(ts.int8), fp8: ctx.median(ts.fp8), 'fp32/int8': ratio('int8'), 'fp32/fp8': ratio('fp8') };
    rows.push([`${name}: 2048×${i} → ${o}`, out[name]!.fp32, out[name]!.int8, out[name]!.fp8, out[name]!['fp32/int8'], out[name]!['fp32/fp8']]);
  }
  const threads = (q.currentBackend() as { threads?: number }).threads ?? 1;
  q.setBackend(prev);
  ctx.table(
    `haloLinear (int8; fp8 = E4M3 emulated in float32) vs linear, forward + backward of one layer (median CPU ms over all threads, ${threads} thread(s); × = fp32 / halo paired per round, > 1 is halo faster)`,
    ['layer', 'fp32 ms', 'int8 ms', 'fp8 ms', '× int8', '× fp8'],
    rows,
  );
  return out;
}

const LAYER_KINDS = ['fp32', 'int8', 'fp8'] as const;
type LayerKind = (typeof LAYER_KINDS)[number];
type LayerFigures = Record<LayerKind | 'fp32/int8' | 'fp32/fp8', number>;
