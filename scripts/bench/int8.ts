/**
 * @file Bench section `int8`: the int8 matmul (`int8Matmul`, int32 accumulation, float32 out scaled
 * per row and column) against the float32 matmul (`matmul`) at the Linear products of one
 * tiny-Llama training step (forward x·Wᵀ, dX = g·W, dW = xᵀ·g, the layouts qgrad's ops pass), on
 * 1 and 2 threads, operands already in wasm memory as tensors are. Ratios are float32 time / int8
 * time (> 1: int8 faster); the step row sums count × median time over the shapes.
 * Run alone: npm run bench -- --sections int8 [--quick]
 */
import { createWasmBackend, type DType, type KernelArg, type TypedArray, type WasmBackend } from '@qgrad/kernels';
import type { BenchContext } from './context.js';
import { llamaMatmulShapes, storedShape, type MatmulShape } from './matmul.js';

type Arg = KernelArg<TypedArray>;

/** A [rows, cols] view of stored data (transposed: stored [cols, rows]). */
function view(data: TypedArray, dtype: DType, rows: number, cols: number, transposed = false): Arg {
  return { data, dtype, shape: [rows, cols], strides: transposed ? [1, rows] : [cols, 1], offset: 0 };
}

/** The float32 and the int8 product of one shape on one backend, operands in its memory. */
function contenders(be: WasmBackend, s: MatmulShape): { fp32: () => void; int8: () => void } {
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
  return {
    fp32: () => be.run('matmul', [fa, fb], fo, {}),
    int8: () => be.run('int8Matmul', [ia, ib, sa, sb], io, {}),
  };
}

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  // the Linear products only (batch 1); attention's batched products stay float
  const shapes = llamaMatmulShapes().filter((s) => s.batch === 1);
  const reps = ctx.quick ? 5 : 25;
  const perShape: Record<string, unknown>[] = [];
  const rows: (string | number)[][] = [];
  const step: Record<string, number> = { 'fp32 1t': 0, 'int8 1t': 0, 'fp32 2t': 0, 'int8 2t': 0 };
  const backends = [1, 2].map((threads) => createWasmBackend({ threads }));
  for (const s of shapes) {
    const label = `${s.m}×${s.k}${s.transposeA ? 'ᵀ' : ''}·${s.k}×${s.n}${s.transposeB ? 'ᵀ' : ''}`;
    const ms: Record<string, number> = {};
    for (const be of backends) {
      const t = `${be.threads}t`;
      const c = contenders(be, s);
      // alternate the two rep by rep, each timed call right after an untimed one of its own
      const times: Record<'fp32' | 'int8', number[]> = { fp32: [], int8: [] };
      for (let r = 0; r < reps; r++) {
        for (const k of ['fp32', 'int8'] as const) {
          c[k]();
          const t0 = performance.now();
          c[k]();
          times[k].push(performance.now() - t0);
        }
      }
      ms[`fp32 ${t}`] = ctx.median(times.fp32);
      ms[`int8 ${t}`] = ctx.median(times.int8);
      step[`fp32 ${t}`]! += s.count * ms[`fp32 ${t}`]!;
      step[`int8 ${t}`]! += s.count * ms[`int8 ${t}`]!;
    }
    perShape.push({ name: s.name, shape: storedShape(s, 'a').join('×') + ' · ' + storedShape(s, 'b').join('×'), m: s.m, k: s.k, n: s.n, transposeA: !!s.transposeA, transposeB: !!s.transposeB, count: s.count, ms });
    const gops = (t: number) => (2 * s.m * s.k * s.n) / (t * 1e6);
    rows.push([`${s.name}: ${label}`, s.count, ...['1t', '2t'].flatMap((t) => [gops(ms[`fp32 ${t}`]!), gops(ms[`int8 ${t}`]!), ms[`fp32 ${t}`]! / ms[`int8 ${t}`]!])]);
  }
  for (const be of backends) be.dispose();
  rows.push(['one step\'s Linear products (Σ count·ms)', shapes.reduce((n, s) => n + s.count, 0), step['fp32 1t']!, step['int8 1t']!, step['fp32 1t']! / step['int8 1t']!, step['fp32 2t']!, step['int8 2t']!, step['fp32 2t']! / step['int8 2t']!]);
  ctx.table(
    'int8 matmul (int32 accumulation, scaled float32 out) vs float32 matmul, tiny-Llama Linear products (median GOP/s; step row in ms; × = fp32 time / int8 time, > 1 is int8 faster)',
    ['product', '×/step', 'fp32 1t', 'int8 1t', '× 1t', 'fp32 2t', 'int8 2t', '× 2t'],
    rows,
  );
  return { shapes: perShape, stepMs: step, ratio: { '1t': step['fp32 1t']! / step['int8 1t']!, '2t': step['fp32 2t']! / step['int8 2t']! } };
}
