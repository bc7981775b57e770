/**
 * @file The page side of test/browser/wasm-threads.test.ts, bundled by esbuild for the browser:
 * what the wasm backend says about its threads on this page, pooled matmuls and softmaxes on one
 * and two threads against each other and the js oracle, and 1024² matmul timings.
 */
import { backendInfo } from '@qgrad/core';
import { createWasmBackend, jsKernels, wasmBackend, type KernelArg, type KernelName, type KernelParams, type WasmBackend } from '@qgrad/kernels';
import { Engine, newHeap } from '../../packages/kernels/src/wasm/runtime.js';
import { POOL_TASKS } from '../../packages/kernels/test/pool-tasks.js';

/** What the page and the default wasm backend say about threads. */
export interface PageInfo {
  isolated: boolean;
  hardwareConcurrency: number;
  /** backendInfo('wasm') from @qgrad/core once the default backend's workers are up. */
  info: string;
  /** A two-thread backend's info right after it is created, before the page yields. */
  beforeYield: string;
}

/** One pooled call: the same on 1 and 2 threads bit for bit, and its largest error against js over its bound. */
export interface CaseReport {
  name: string;
  bitEqual: boolean;
  /** max |wasm − js| / allowed, ≤ 1 when within the bound. */
  errorOverBound: number;
}

export interface EqualityReport {
  threads: number;
  message: string;
  cases: CaseReport[];
  /** Kernel calls the two-thread backend handed to its pool, per kernel. */
  pooled: Record<string, number>;
}

type Arg = KernelArg<Float32Array>;

/** A contiguous float32 view of `shape` with seeded values in [-1, 1). */
function arg(shape: number[], seed: number): Arg {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 31 - 1;
  }
  return { data, dtype: 'float32', shape, strides: shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1)), offset: 0 };
}

const empty = (shape: number[]): Arg => ({ ...arg(shape, 1), data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
const abs = (x: Arg): Arg => ({ ...x, data: x.data.map(Math.abs) });
/** b [.., K, N] viewed transposed, as [.., N, K] stored. */
const transposed = (shape: number[], seed: number): Arg => {
  const r = shape.length;
  const stored = arg([...shape.slice(0, -2), shape[r - 1]!, shape[r - 2]!], seed);
  const s = stored.strides;
  return { ...stored, shape, strides: [...s.slice(0, -2), s[r - 1]!, s[r - 2]!] };
};

function run<K extends KernelName>(b: WasmBackend, kernel: K, inputs: Arg[], out: Arg, params: KernelParams[K]): Float32Array {
  b.run(kernel, inputs, out, params);
  return out.data;
}

const sameBits = (x: Float32Array, y: Float32Array) => x.length === y.length && new Uint8Array(x.buffer).every((v, i) => v === new Uint8Array(y.buffer)[i]);

async function info(): Promise<PageInfo> {
  const fresh = createWasmBackend({ threads: 2 });
  const beforeYield = fresh.info().message;
  fresh.dispose();
  // core's wasm backend, whose engine and workers start on first use
  await wasmBackend.ready();
  const page = globalThis as { crossOriginIsolated?: boolean; navigator?: { hardwareConcurrency: number } };
  return { isolated: page.crossOriginIsolated === true, hardwareConcurrency: page.navigator?.hardwareConcurrency ?? 0, info: backendInfo('wasm'), beforeYield };
}

/**
 * Whether a Web Worker computes: task_meet's two tasks meet only when two threads run them at
 * once (the page's main thread alone runs task 0, gives up waiting, then task 1). One result per
 * job, 1 where they met; on an isolated page only (alone, each job spins ~0.5 s).
 */
async function meet(jobs: number): Promise<number[]> {
  const e = new Engine(POOL_TASKS, { threads: 2, relaxed: false }, newHeap()!);
  const at = e.scratch / 4;
  const met: number[] = [];
  try {
    await e.started();
    e.reserve(64);
    for (let j = 0; j < jobs; j++) {
      e.i32.fill(0, at, at + 2);
      e.parallel('task_meet', e.scratch, 2);
      met.push(e.i32[at + 1]!);
    }
  } finally {
    e.dispose();
  }
  return met;
}

/** Pooled matmuls (plain, transposed b, batched) and softmaxes on 1 and 2 threads and on js. */
async function equality(): Promise<EqualityReport> {
  const one = createWasmBackend({ threads: 1, matmulMinMacs: 0 });
  const two = createWasmBackend({ threads: 2, matmulMinMacs: 0 });
  const { threads, message } = await two.ready();
  const cases: CaseReport[] = [];
  const matmuls: [string, number[], number, number, number, boolean][] = [
    ['matmul 257×513·513×129', [], 257, 513, 129, false],
    ['matmul 300×700·(260×700)ᵀ', [], 300, 700, 260, true],
    ['matmul 8×(65×129·129×160)', [8], 65, 129, 160, false],
    ['matmul 512×512·512×512', [], 512, 512, 512, false],
  ];
  for (const [name, batch, M, K, N, transB] of matmuls) {
    const a = arg([...batch, M, K], M + K);
    const b = transB ? transposed([...batch, K, N], N) : arg([...batch, K, N], N);
    const shape = [...batch, M, N];
    const ref = run(one, 'matmul', [a, b], empty(shape), {});
    const got = run(two, 'matmul', [a, b], empty(shape), {});
    const js = empty(shape);
    const bound = empty(shape);
    jsKernels.matmul([a, b], js, {});
    jsKernels.matmul([abs(a), abs(b)], bound, {});
    // error of a length-K float32 dot product: K·eps·Σ|a||b|, doubled as the Node suite does
    const over = got.reduce((m, v, i) => Math.max(m, Math.abs(v - js.data[i]!) / (2 * K * 2 ** -24 * bound.data[i]! + 1e-30)), 0);
    cases.push({ name, bitEqual: sameBits(ref, got), errorOverBound: over });
  }
  for (const [rows, n] of [[512, 1024], [64, 4099]] as const) {
    const x = arg([rows, n], rows + n);
    const params = { axis: 1, log: false };
    const ref = run(one, 'softmax', [x], empty([rows, n]), params);
    const got = run(two, 'softmax', [x], empty([rows, n]), params);
    const js = empty([rows, n]);
    jsKernels.softmax([x], js, params);
    // the Node suite's softmax tolerance: 2e-5 relative + 1e-6
    const over = got.reduce((m, v, i) => Math.max(m, Math.abs(v - js.data[i]!) / (2e-5 * Math.abs(js.data[i]!) + 1e-6)), 0);
    cases.push({ name: `softmax [${rows}, ${n}]`, bitEqual: sameBits(ref, got), errorOverBound: over });
  }
  const pooled = Object.fromEntries(two.stats().filter((s) => s.pooled > 0).map((s) => [s.kernel, s.pooled]));
  one.dispose();
  two.dispose();
  return { threads, message, cases, pooled };
}

/** Milliseconds per 1024² float32 matmul on 1 and 2 threads, operands in each backend's memory, alternated, median of `reps`. */
async function timing(reps: number): Promise<{ one: number; two: number; threads: number; message: string }> {
  const n = 1024;
  const backends = [createWasmBackend({ threads: 1 }), createWasmBackend({ threads: 2 })] as const;
  const { threads, message } = await backends[1].ready();
  const operands = backends.map((b) => {
    const place = (x: Arg): Arg => {
      const data = b.alloc('float32', x.data.length) as Float32Array;
      data.set(x.data);
      return { ...x, data };
    };
    return { a: place(arg([n, n], 1)), b: place(arg([n, n], 2)), out: place(empty([n, n])) };
  });
  const times: number[][] = [[], []];
  for (let r = 0; r < reps + 1; r++) {
    for (const i of [0, 1] as const) {
      const { a, b, out } = operands[i]!;
      const t0 = performance.now();
      backends[i].run('matmul', [a, b], out, {});
      // the first round warms both up (scratch, code, workers' caches)
      if (r > 0) times[i]!.push(performance.now() - t0);
    }
  }
  const median = (t: number[]) => t.sort((x, y) => x - y)[t.length >> 1]!;
  for (const b of backends) b.dispose();
  return { one: median(times[0]!), two: median(times[1]!), threads, message };
}

Object.assign(globalThis, { qgradWasm: { info, meet, equality, timing } });
