/**
 * @file float32 matmul micro-benchmark: median GFLOP/s of qgrad-js and qgrad-wasm (1 and 2
 * threads) over shape specs — squares 64…1024 and the products of one tiny-Llama training step
 * (`llamaMatmulShapes`). `benchMatmul` takes extra contenders so a combined harness can add peers.
 * Run: npx tsx scripts/bench/matmul.ts [--sizes 64,128 | --llama] [--reps 7] [--cpu] [--host-arrays]; writes
 * bench-results/matmul.json. --cpu times CPU time instead of wall time, 1 thread only (A/B runs on
 * a shared machine); --host-arrays hands qgrad plain typed arrays instead of buffers of its backend.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { tinyLlamaConfig, type LlamaConfig } from '@qgrad/nn';
import { createWasmBackend, jsBackend, type Backend, type KernelArg, type TypedArray } from '@qgrad/kernels';

/**
 * One product to time: `batch` independent (m×k)·(k×n) products. A transposed operand is stored
 * as its transpose — A as batch × [k, m], B as batch × [n, k] (a weight [out, in] read as Wᵀ) —
 * and each contender multiplies it as the strided/transposed view its own API offers.
 */
export interface MatmulShape {
  name: string;
  batch: number;
  m: number;
  k: number;
  n: number;
  transposeA?: boolean;
  transposeB?: boolean;
}

/** The n×n product of contiguous operands, named by n. */
export const squareShape = (n: number): MatmulShape => ({ name: String(n), batch: 1, m: n, k: n, n });

/** Multiply-adds of one call (FLOPs are twice this). */
export const macs = (s: MatmulShape): number => s.batch * s.m * s.k * s.n;

/**
 * Every matmul one fp32 training step of a Llama runs in qgrad (defaults: the tiny Llama of
 * scripts/bench/llama.ts, batch 16 × seq 128), with its count per step and the operand layouts
 * qgrad passes — checked against the `matmul` kernel calls of a traced tiny-Llama step (111 calls).
 * A linear layer folds batch into rows: forward x·Wᵀ with Wᵀ a transposed view, input gradient
 * g·W (contiguous), weight gradient xᵀ·g (xᵀ a transposed view, K = tokens). Attention runs
 * batched over batch × heads; not modelled: its operands' head-interleaved row strides and the
 * stride-0 broadcast of each KV head over its query heads (here each product has its own operands).
 */
export function llamaMatmulShapes(cfg: LlamaConfig = tinyLlamaConfig, batch = 16, seq = 128): (MatmulShape & { count: number })[] {
  const { dim, nLayers: layers, nHeads: heads, nKvHeads: kvHeads, hiddenDim: hidden, vocabSize: vocab } = cfg;
  const tokens = batch * seq;
  const hd = cfg.headDim ?? dim / heads;
  const bh = batch * heads;
  type Product = Omit<MatmulShape, 'name'> & { who: string; op: string; count: number };
  const linears: [string, number, number, number][] = [
    // name, in features, out features, occurrences per step
    ['q', dim, heads * hd, layers],
    ['k', dim, kvHeads * hd, layers],
    ['v', dim, kvHeads * hd, layers],
    ['o', heads * hd, dim, layers],
    ['gate', dim, hidden, layers],
    ['up', dim, hidden, layers],
    ['down', hidden, dim, layers],
    ['head', dim, vocab, 1],
  ];
  const products: Product[] = [
    ...linears.map(([who, i, o, count]) => ({ who, op: 'fwd x·Wᵀ', batch: 1, m: tokens, k: i, n: o, transposeB: true, count })),
    ...linears.map(([who, i, o, count]) => ({ who, op: 'dX g·W', batch: 1, m: tokens, k: o, n: i, count })),
    ...linears.map(([who, i, o, count]) => ({ who, op: 'dW xᵀ·g', batch: 1, m: i, k: tokens, n: o, transposeA: true, count })),
    { who: 'attn', op: 'q·kᵀ', batch: bh, m: seq, k: hd, n: seq, transposeB: true, count: layers },
    { who: 'attn', op: 'p·v', batch: bh, m: seq, k: seq, n: hd, count: layers },
    { who: 'attn', op: 'dP g·vᵀ', batch: bh, m: seq, k: hd, n: seq, transposeB: true, count: layers },
    { who: 'attn', op: 'dS·k', batch: bh, m: seq, k: seq, n: hd, count: layers },
    { who: 'attn', op: 'dV pᵀ·g', batch: bh, m: seq, k: seq, n: hd, transposeA: true, count: layers },
    { who: 'attn', op: 'dKᵀ qᵀ·dS', batch: bh, m: hd, k: seq, n: seq, transposeA: true, count: layers },
  ];
  // one row per distinct shape and layout (q and o, gate and up … share theirs), counts summed
  const rows = new Map<string, { who: string[]; ops: string[]; p: Product; count: number }>();
  for (const p of products) {
    const key = [p.batch, p.m, p.k, p.n, !!p.transposeA, !!p.transposeB].join();
    const row = rows.get(key) ?? rows.set(key, { who: [], ops: [], p, count: 0 }).get(key)!;
    if (!row.who.includes(p.who)) row.who.push(p.who);
    if (!row.ops.includes(p.op)) row.ops.push(p.op);
    row.count += p.count;
  }
  return [...rows.values()].map(({ who, ops, p, count }) => ({
    name: `${who.join(',')} ${ops.join(', ')}`,
    batch: p.batch, m: p.m, k: p.k, n: p.n,
    ...(p.transposeA && { transposeA: true }),
    ...(p.transposeB && { transposeB: true }),
    count,
  }));
}

/** The stored shape of operand a ([..., m, k], or [..., k, m] when transposed) or b ([..., k, n] / [..., n, k]). */
export function storedShape(s: MatmulShape, which: 'a' | 'b'): number[] {
  const lead = s.batch === 1 ? [] : [s.batch];
  if (which === 'a') return [...lead, ...(s.transposeA ? [s.k, s.m] : [s.m, s.k])];
  return [...lead, ...(s.transposeB ? [s.n, s.k] : [s.k, s.n])];
}

/** Test operands for `s` in storage order: a holds batch·m·k values, b batch·k·n. */
function operands(s: MatmulShape): [Float32Array, Float32Array] {
  const a = new Float32Array(s.batch * s.m * s.k);
  const b = new Float32Array(s.batch * s.k * s.n);
  for (let i = 0; i < a.length; i++) a[i] = Math.sin(i) * 0.5;
  for (let i = 0; i < b.length; i++) b[i] = Math.cos(i) * 0.5;
  return [a, b];
}

/** One contender: `prepare(shape, a, b)` returns a function computing one product of that shape. */
export interface MatmulContender {
  name: string;
  /** Largest product worth timing, in multiply-adds (slow contenders skip bigger ones). */
  maxMacs?: number;
  prepare(shape: MatmulShape, a: Float32Array, b: Float32Array): (() => void) | Promise<() => void>;
  /** Called untimed before each run: peers sharing one global engine (tfjs) select theirs here. */
  activate?(): void | Promise<void>;
  dispose?(): void | Promise<void>;
}

export interface MatmulResult {
  contender: string;
  /** The shape's name (for squares, its size). */
  shape: string;
  batch: number;
  m: number;
  k: number;
  n: number;
  reps: number;
  medianMs: number;
  gflops: number;
}

/** The view of an operand of `rows`×`cols` per batch as stored (transposed: stored cols×rows). */
function view(data: Float32Array, batch: number, rows: number, cols: number, transposed = false): KernelArg<TypedArray> {
  const strides = transposed ? [1, rows] : [cols, 1];
  return batch === 1
    ? { data, dtype: 'float32', shape: [rows, cols], strides, offset: 0 }
    : { data, dtype: 'float32', shape: [batch, rows, cols], strides: [rows * cols, ...strides], offset: 0 };
}

/**
 * A contender running the `matmul` kernel of a qgrad backend on the views qgrad's ops pass. The
 * operands and the output live in buffers the backend allocated, as a tensor's do (wasm: its own
 * memory; the peers' tensors are likewise in theirs), copied in untimed; `hostArrays` passes plain
 * typed arrays instead, which the wasm backend copies in and out on every call.
 */
export function qgradContender(name: string, backend: Backend<TypedArray>, maxMacs?: number, hostArrays = false): MatmulContender {
  const held: TypedArray[] = [];
  const own = (values: Float32Array): Float32Array => {
    if (hostArrays) return values;
    const data = backend.alloc('float32', values.length) as Float32Array;
    backend.write(data, 'float32', values);
    held.push(data);
    return data;
  };
  return {
    name,
    maxMacs,
    prepare(s, a, b) {
      const inputs = [view(own(a), s.batch, s.m, s.k, s.transposeA), view(own(b), s.batch, s.k, s.n, s.transposeB)];
      const out = view(own(new Float32Array(s.batch * s.m * s.n)), s.batch, s.m, s.n);
      return () => backend.run('matmul', inputs, out, {});
    },
    dispose: () => {
      for (const data of held.splice(0)) backend.free(data);
      backend.dispose();
    },
  };
}

export function defaultContenders(options: { hostArrays?: boolean } = {}): MatmulContender[] {
  return [
    qgradContender('qgrad-js', jsBackend, 256 ** 3),
    qgradContender('qgrad-wasm-1t', createWasmBackend({ threads: 1 }), undefined, options.hostArrays),
    qgradContender('qgrad-wasm-2t', createWasmBackend({ threads: 2 }), undefined, options.hostArrays),
  ];
}

/** The median (the mean of the middle two for an even count). */
export const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/**
 * Times every contender on every shape (`shapes`, else squares of `sizes`), interleaving
 * contenders rep by rep so machine noise hits them alike; reps default to what fits in
 * `budgetMs` (default 400) per contender and shape, at least 5 and at most 50; each timed call
 * directly follows an untimed one of the same contender.
 */
export async function benchMatmul(
  options: { sizes?: number[]; shapes?: MatmulShape[]; reps?: number; budgetMs?: number; contenders?: MatmulContender[]; log?: (line: string) => void; clock?: 'wall' | 'cpu' } = {},
): Promise<MatmulResult[]> {
  const shapes = options.shapes ?? (options.sizes ?? [64, 128, 256, 512, 1024]).map(squareShape);
  const contenders = options.contenders ?? defaultContenders();
  const log = options.log ?? ((l: string) => console.log(l));
  const budget = options.budgetMs ?? 400;
  // CPU time of this process (every thread's, pool workers' polling included): the figure to
  // compare on a machine shared with other work, where wall time depends on the neighbours
  const cpu = options.clock === 'cpu';
  const w = Math.max(5, ...shapes.map((s) => s.name.length));
  const results: MatmulResult[] = [];
  log(`${'shape'.padStart(w)}  ${contenders.map((c) => c.name.padStart(14)).join('  ')}   (median GFLOP/s${cpu ? ' of CPU time' : ''})`);
  for (const s of shapes) {
    const [a, b] = operands(s);
    const active = contenders.filter((c) => macs(s) <= (c.maxMacs ?? Infinity));
    // one after the other: a contender prepares its operands on the engine it has just activated
    const runs: (() => void)[] = [];
    for (const c of active) {
      await c.activate?.();
      runs.push(await c.prepare(s, a, b));
    }
    // each timed call follows an untimed call of the same contender: caches, worker threads and
    // memory are warm, as in PyTorch's back-to-back loop (scripts/bench/torch_bench.py), while
    // contenders still alternate so machine noise hits them alike
    const time = async (i: number): Promise<number> => {
      await active[i]!.activate?.();
      runs[i]!();
      if (cpu) {
        const c0 = process.cpuUsage();
        runs[i]!();
        const c = process.cpuUsage(c0);
        return (c.user + c.system) / 1000;
      }
      const t = performance.now();
      runs[i]!();
      return performance.now() - t;
    };
    // warm up (tier-up to optimised code) and estimate one run's time
    const first: number[] = [];
    for (let i = 0; i < runs.length; i++) {
      await time(i);
      first.push(await time(i));
    }
    const reps = options.reps ?? Math.max(5, Math.min(50, Math.floor(budget / Math.max(...first, 0.01))));
    const times = runs.map(() => [] as number[]);
    for (let r = 0; r < reps; r++) for (let i = 0; i < runs.length; i++) times[i]!.push(await time(i));
    const row = contenders.map((c) => {
      const i = active.indexOf(c);
      if (i < 0) return '-'.padStart(14);
      const ms = median(times[i]!);
      const gflops = (2 * macs(s)) / (ms * 1e6);
      results.push({ contender: c.name, shape: s.name, batch: s.batch, m: s.m, k: s.k, n: s.n, reps, medianMs: ms, gflops });
      return gflops.toFixed(1).padStart(14);
    });
    log(`${s.name.padStart(w)}  ${row.join('  ')}`);
  }
  for (const c of contenders) await c.dispose?.();
  return results;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const sizes = flag('--sizes')?.split(',').map(Number);
  const reps = flag('--reps') ? Number(flag('--reps')) : undefined;
  // the machines are shared: record how busy this one was
  const loadBefore = loadavg()[0];
  const shapes = argv.includes('--llama') ? llamaMatmulShapes() : undefined;
  const options = { clock: argv.includes('--cpu') ? ('cpu' as const) : ('wall' as const), hostArrays: argv.includes('--host-arrays') };
  // CPU time only on 1 thread: the kernel reads other threads' CPU time as the scheduler last
  // booked it (per tick), coarse against a call of a millisecond
  const contenders = defaultContenders(options).filter((c) => options.clock === 'wall' || !c.name.endsWith('-2t'));
  const results = await benchMatmul({ sizes, shapes, reps, clock: options.clock, contenders });
  if (shapes) {
    // one step's products: Σ count · FLOPs over Σ count · median time, for contenders that ran every shape
    const step: string[] = [];
    for (const name of new Set(results.map((r) => r.contender))) {
      const rs = shapes.map((s) => [s, results.find((r) => r.contender === name && r.shape === s.name)] as const);
      if (rs.some(([, r]) => !r)) continue;
      const flops = rs.reduce((sum, [s]) => sum + s.count * 2 * macs(s), 0);
      const ms = rs.reduce((sum, [s, r]) => sum + s.count * r!.medianMs, 0);
      step.push(`${name} ${(flops / (ms * 1e6)).toFixed(1)}`);
    }
    console.log(`one step's products (GFLOP/s): ${step.join(', ')}`);
  }
  const machine = { cpu: cpus()[0]?.model, cores: cpus().length, loadBefore, loadAfter: loadavg()[0] };
  console.log(`load average ${machine.loadBefore.toFixed(1)} → ${machine.loadAfter.toFixed(1)} on ${machine.cores} cores`);
  const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../bench-results');
  mkdirSync(dir, { recursive: true });
  const file = resolve(dir, 'matmul.json');
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), node: process.version, machine, options, results }, null, 2));
  console.log(`wrote ${file}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await main();
