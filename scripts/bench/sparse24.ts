/**
 * @file Bench section `sparse24`: the 2:4 sparse matvec (`sparse24Linear`, one row of x: the
 * decode step) against the dense float32 matvec of the same masked weight (`linear`) at the
 * tiny-Llama shapes and 4096 × 4096, each on the wasm backend (the default: the SIMD 2:4 kernel)
 * and on the js backend (the oracle loops): dense wasm / 2:4 wasm is what the sparse kernel buys
 * where it runs, 2:4 js / 2:4 wasm what wasm buys the sparse loop. Then a batch of 2048 rows
 * (16 × 128 tokens, prefill) at the tiny-Llama shapes, wasm only.
 * Run alone: npm run bench -- --sections sparse24 [--quick]
 */
import * as q from '@qgrad/core';
import { type BenchContext, usPerCall } from './context.js';

/** [out, in] of the tiny Llama's Linears (gate/up, down, q/o, head) and the large square. */
const SHAPES: [number, number][] = [[384, 128], [128, 384], [128, 128], [256, 128], [4096, 4096]];

/** A random [O, K] weight with exactly two non-zeros in every group of four (top-2 |w|). */
function masked(O: number, K: number, g: q.Generator): q.Tensor {
  const w = q.randn([O, K], { generator: g }).dataSync() as Float32Array;
  for (let i = 0; i < w.length; i += 4) {
    const order = [0, 1, 2, 3].sort((a, b) => Math.abs(w[i + b]!) - Math.abs(w[i + a]!));
    w[i + order[2]!] = 0;
    w[i + order[3]!] = 0;
  }
  return q.fromTypedArray(w, [O, K], 'float32');
}

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  const reps = ctx.quick ? 3 : 7;
  const rows: (string | number)[][] = [];
  const results: Record<string, unknown>[] = [];
  for (const [O, K] of SHAPES) {
    const g = new q.Generator(O * 7 + K);
    const w = masked(O, K, g);
    const x = q.randn([1, K], { generator: g });
    const sw = q.sparse24Weight(w);
    const iters = O * K >= 1 << 22 ? 2 : 50;
    const time = (fn: () => q.Tensor) => usPerCall(() => q.tidy(() => void fn().dataSync()), iters, reps, ctx.median);
    // the same result first: a bench of a wrong kernel is no bench
    const dense = q.noGrad(() => q.linear(x, w));
    const sparse = q.noGrad(() => q.sparse24Linear(x, sw));
    const err = Math.max(...Array.from(sparse.sub(dense).abs().dataSync()));
    if (!(err < 1e-3)) throw new Error(`bench sparse24: sparse and dense matvec differ by ${err} at [${O}, ${K}]`);
    const denseWasm = q.withBackend('wasm', () => time(() => q.noGrad(() => q.linear(x, w))));
    const sparseWasm = q.withBackend('wasm', () => time(() => q.noGrad(() => q.sparse24Linear(x, sw))));
    const [xj, wj] = [x.to('js'), w.to('js')];
    const swj = { ...sw, values: sw.values.to('js'), indices: sw.indices.to('js') };
    const sparseJs = q.withBackend('js', () => time(() => q.noGrad(() => q.sparse24Linear(xj, swj))));
    const denseJs = q.withBackend('js', () => time(() => q.noGrad(() => q.linear(xj, wj))));
    rows.push([`${O}×${K}`, denseWasm, sparseWasm, sparseJs, denseJs, denseWasm / sparseWasm, sparseJs / sparseWasm]);
    results.push({ shape: [O, K], rows: 1, denseWasmUs: denseWasm, sparse24WasmUs: sparseWasm, sparse24JsUs: sparseJs, denseJsUs: denseJs });
  }
  ctx.table('sparse24: 2:4 sparse matvec vs dense float32 matvec of the same weight, µs per call (median); × > 1: 2:4 wasm faster', ['shape', 'dense wasm', '2:4 wasm', '2:4 js', 'dense js', '× dense wasm', '× 2:4 js'], rows);
  // a prefill-sized batch: the dense kernel's register blocking against the sparse kernel's gathers
  const batch: (string | number)[][] = [];
  for (const [O, K] of SHAPES.filter(([O]) => O < 4096)) {
    const g = new q.Generator(O * 5 + K);
    const w = masked(O, K, g);
    const x = q.randn([2048, K], { generator: g });
    const sw = q.sparse24Weight(w);
    const time = (fn: () => q.Tensor) => usPerCall(() => q.tidy(() => void fn().dataSync()), 3, reps, ctx.median);
    const denseWasm = q.withBackend('wasm', () => time(() => q.noGrad(() => q.linear(x, w))));
    const sparseWasm = q.withBackend('wasm', () => time(() => q.noGrad(() => q.sparse24Linear(x, sw))));
    batch.push([`2048×${K} · ${O}×${K}ᵀ`, denseWasm, sparseWasm, denseWasm / sparseWasm]);
    results.push({ shape: [O, K], rows: 2048, denseWasmUs: denseWasm, sparse24WasmUs: sparseWasm });
  }
  ctx.table('sparse24: 2048 rows (16 × 128 tokens) at the tiny-Llama shapes, wasm, µs per call (median)', ['product', 'dense wasm', '2:4 wasm', '× dense wasm'], batch);
  return { results };
}
