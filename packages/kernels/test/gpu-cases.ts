/**
 * @file The gpu backend's equality cases against the js oracle in float32 (fast-check: random
 * shapes, transposed, offset and broadcast views), with their tolerances. Shared by gpu.test.ts
 * (Node, headless-gl) and the browser page of test/browser/gpu.test.ts (WebGL2, WebGPU): no vitest
 * here, a failed check throws. Results are read back with the async `read`, which is the only
 * read-back WebGPU has.
 */
import fc from 'fast-check';
import { jsKernels, numel, packBase3, type AdamStepParams, type Backend, type BinaryOp, type KernelArg, type KernelName, type KernelParams, type UnaryOp } from '@qgrad/kernels';
import { type Arg, convGeometry, intView, mismatch, out, permutation, randomArray, size, view } from './helpers.js';

/** How operands reach the backend: as the tests' arrays, or first moved into its own buffers. */
export type Placement = 'host arrays' | 'device buffers';

/** What one run of the cases needs, and what it found. */
export interface GpuCaseContext {
  backend: Backend;
  placement: Placement;
  /** Multiplies every case's fast-check run count (the browser runs fewer, to fit its time). */
  runs: number;
  /** Seed of every fast-check run (undefined: a fresh one per run, printed on failure). */
  seed?: number;
  /** Largest |gpu − js| per kernel over all elements compared (NaN pairs skipped). */
  maxError: Map<string, number>;
}

/**
 * Adds `x` (float32, `n` values) to itself `steps` times on the device, each result a fresh buffer and
 * the previous one freed: the residency chain of the storage tests. Returns the last result (x·(steps + 1)).
 */
export function chainOnDevice<D>(b: Backend<D>, x: D, n: number, steps: number): D {
  const arg = (data: D): KernelArg<D> => ({ data, dtype: 'float32', shape: [n], strides: [1], offset: 0 });
  let cur = x;
  for (let i = 0; i < steps; i++) {
    const next = b.alloc('float32', n);
    b.run('binary', [arg(cur), arg(x)], arg(next), { op: 'add' });
    if (cur !== x) b.free(cur);
    cur = next;
  }
  return cur;
}

/** One equality case: a sentence for the test name, and the check (throws on a mismatch). */
export interface GpuCase {
  name: string;
  run(ctx: GpuCaseContext): Promise<void>;
}

const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });
/** Rank 1-3 of awkward sizes. */
const shape = fc.array(size(), { minLength: 1, maxLength: 3 });
const anyView = (s: number[], broadcast: boolean) =>
  fc.record({ order: permutation(s.length), offset: fc.integer({ min: 0, max: 3 }), bcast: fc.subarray(s.map((_, d) => d)), seed }).map(({ order, offset, bcast, seed }) =>
    view('float32', s, order, offset, broadcast ? bcast : [], seed),
  );

function fail(message: string): never {
  throw new Error(message);
}

/** Records the largest |got − ref| of `kernel`. */
function record(ctx: GpuCaseContext, kernel: string, got: ArrayLike<number>, ref: ArrayLike<number>): void {
  let worst = ctx.maxError.get(kernel) ?? 0;
  for (let i = 0; i < Math.min(got.length, ref.length); i++) {
    const e = Math.abs(got[i]! - ref[i]!);
    if (e > worst) worst = e; // NaN compares false: skipped
  }
  ctx.maxError.set(kernel, worst);
}

/** Records the largest |got − ref| of `kernel`, then throws unless every element is within atol + rtol·|ref|. */
function close(ctx: GpuCaseContext, kernel: string, got: ArrayLike<number>, ref: ArrayLike<number>, rtol: number, atol: number | ArrayLike<number> = 0): void {
  record(ctx, kernel, got, ref);
  const i = mismatch(got, ref, rtol, atol);
  if (i >= 0) fail(`${kernel}: gpu ${got[i]} against js ${ref[i]} at element ${i} of ${ref.length} (rtol ${rtol}, atol ${typeof atol === 'number' ? atol : atol[i]})`);
}

/** Runs `kernel` on the gpu with the operands placed per `ctx.placement`; the result lands in `got`. */
async function runGpu<K extends KernelName>(ctx: GpuCaseContext, kernel: K, inputs: readonly Arg[], got: Arg, params: KernelParams[K]): Promise<void> {
  const { backend } = ctx;
  if (ctx.placement === 'host arrays') return backend.run(kernel, inputs, got, params);
  const bufs = new Map<unknown, unknown>();
  const place = (a: Arg): KernelArg => {
    let b = bufs.get(a.data);
    if (!b) {
      b = backend.alloc(a.dtype, a.data.length);
      backend.write(b, a.dtype, a.data);
      bufs.set(a.data, b);
    }
    return { ...a, data: b };
  };
  try {
    backend.run(kernel, inputs.map(place), place(got), params);
  } catch (e) {
    for (const b of bufs.values()) backend.free(b);
    throw e;
  }
  // every buffer back (adamStep writes its state inputs too), then freed
  for (const a of [...inputs, got]) {
    const b = bufs.get(a.data);
    if (b === undefined) continue;
    a.data.set((await backend.read(b, a.dtype, a.data.length)) as never);
    backend.free(b);
    bufs.delete(a.data);
  }
}

/** The oracle and the gpu on the same problem; returns both results. */
async function both<K extends KernelName>(ctx: GpuCaseContext, kernel: K, inputs: readonly Arg[], shape: number[], params: KernelParams[K], dtype: 'float32' | 'int32' = 'float32') {
  const make = (): Arg => (dtype === 'int32' ? { data: new Int32Array(numel(shape)), dtype, shape, strides: out('float32', shape).strides, offset: 0 } : out('float32', shape));
  const ref = make();
  const got = make();
  (jsKernels[kernel] as (i: readonly Arg[], o: Arg, p: KernelParams[K]) => void)(inputs, ref, params);
  await runGpu(ctx, kernel, inputs, got, params);
  // the fallback counts a call under its first input's dtype (packedGather: its int32 indices)
  const ran = ctx.backend.ranOn!(kernel, inputs[0]?.dtype ?? ref.dtype);
  if (ran !== 'gpu') fail(`${kernel} ran on ${ran}, not on the gpu`);
  return { ref: ref.data, got: got.data };
}

/** fc.assert over an async property, with the context's run count and seed. */
function assertAll<T extends unknown[]>(ctx: GpuCaseContext, numRuns: number, arbitraries: { [I in keyof T]: fc.Arbitrary<T[I]> }, check: (...values: T) => Promise<void>): Promise<void> {
  const property = fc.asyncProperty(...(arbitraries as unknown as [fc.Arbitrary<unknown>]), check as (...v: unknown[]) => Promise<void>);
  return fc.assert(property, { numRuns: Math.max(1, Math.round(numRuns * ctx.runs)), ...(ctx.seed !== undefined && { seed: ctx.seed }) });
}

/** A contiguous 1-D operand over `data` from element `offset`. */
const flat = (data: Float32Array | Uint8Array | Int8Array, dtype: Arg['dtype'], offset = 0): Arg => ({ data, dtype, shape: [data.length - offset], strides: [1], offset });

/**
 * The weight operands of the packed cases for `rows` rows in `G` groups: `bytes` as uint8 or int8
 * codes after `lead` bytes of padding (a codes view that starts at an offset), a random level
 * table of `levels` entries, scales in [0.01, 1.01) and zero points; `zero` maps the random
 * values in [−1, 1) to the zero points.
 */
function packedWeight(bytes: Uint8Array, c: { int8: boolean; lead: number; seed: number }, levels: number, rows: number, G: number, zero: (v: number) => number) {
  const padded = new Uint8Array(c.lead + bytes.length);
  padded.set(bytes, c.lead);
  return {
    codes: c.int8 ? flat(new Int8Array(padded.buffer), 'int8', c.lead) : flat(padded, 'uint8', c.lead),
    table: flat(randomArray('float32', levels, c.seed ^ 0x77) as Float32Array, 'float32'),
    scale: flat(Float32Array.from(randomArray('float32', rows * G, c.seed ^ 0x55), (v) => 0.01 + Math.abs(v)), 'float32'),
    zero: flat(Float32Array.from(randomArray('float32', rows * G, c.seed ^ 0x99), zero), 'float32'),
  };
}

/** Random bytes: every field of every bit width takes all its values. */
const randomBytes = (n: number, seed: number) => Uint8Array.from(randomArray('float64', n, seed ^ 0x1234), (r) => Math.floor((r + 1) * 128) & 0xff);

/** Runs `kernel` on the gpu (operands placed per `ctx.placement`) and checks that it throws `expected` (class and message). */
async function rejects<K extends KernelName>(ctx: GpuCaseContext, kernel: K, inputs: readonly Arg[], shape: number[], params: KernelParams[K], expected: Error): Promise<void> {
  try {
    await runGpu(ctx, kernel, inputs, out('float32', shape), params);
  } catch (e) {
    if (!(e instanceof Error) || e.constructor !== expected.constructor || e.message !== expected.message) fail(`${kernel}: expected ${expected.name} '${expected.message}', got ${e instanceof Error ? `${e.name} '${e.message}'` : String(e)}`);
    return;
  }
  fail(`${kernel}: expected ${expected.name} '${expected.message}', but it ran`);
}

/** An int32 index view of `shape` with values in [0, size): a random storage order, maybe offset or sliced. */
const indexView = (s: number[], sz: number) =>
  fc.record({ order: permutation(s.length), offset: fc.integer({ min: 0, max: 3 }), gap: fc.integer({ min: 1, max: 2 }), seed }).map(({ order, offset, gap, seed }) => intView(s, order, offset, gap, 0, sz, seed));

/** gather/scatterAdd problems: `shape` is the index's, `table` the indexed tensor's (`dim` of size sz, maybe one larger elsewhere). */
const indexProblem = shape.chain((s) =>
  fc.record({ dim: fc.nat(s.length - 1), sz: fc.integer({ min: 1, max: 9 }), grow: fc.nat(s.length) }).chain(({ dim, sz, grow }) => {
    const table = s.map((n, d) => (d === dim ? sz : d === grow ? n + 1 : n));
    return fc.record({ dim: fc.constant(dim), index: indexView(s, sz), x: anyView(table, true), src: anyView(s, true), L: fc.integer({ min: 1, max: 40 }), flip: fc.boolean(), seed });
  }),
);

/**
 * Per-element absolute tolerances of norm and normBackward in float32: the row sums round at
 * about 1e-5 of their terms (rows up to 70), so y = (x − μ)·rstd is off by ~1e-5·rstd·max|x|,
 * and dx = rstd·(g − mean g − y·mean(g·y)) by ~1e-5·rstd·max|g|·(1 + that error's rstd·max|x|·max|y|):
 * where the terms cancel (a row of one element under RMS norm: dx ∝ 1 − y² ≈ eps/x²) float32
 * keeps little of the result, which is the format's limit, not the kernel's.
 */
function normTolerances(x: Arg, g: Arg, { kind, eps }: { kind: 'rms' | 'layer'; eps: number }): { forward: Float64Array; backward: Float64Array } {
  const rowMajor = (a: Arg) => {
    const o = out('float32', [...a.shape]);
    jsKernels.copy([a], o, {});
    return o.data;
  };
  const [xs, gs] = [rowMajor(x), rowMajor(g)];
  const D = x.shape[x.shape.length - 1]!;
  const forward = new Float64Array(xs.length);
  const backward = new Float64Array(xs.length);
  for (let r = 0; r < xs.length; r += D) {
    const row = Array.from(xs.subarray(r, r + D));
    const mu = kind === 'layer' ? row.reduce((a, v) => a + v, 0) / D : 0;
    const rstd = 1 / Math.sqrt(row.reduce((a, v) => a + (v - mu) ** 2, 0) / D + eps);
    const maxX = Math.max(...row.map(Math.abs));
    const maxG = Math.max(...Array.from(gs.subarray(r, r + D), Math.abs));
    const maxY = Math.max(...row.map((v) => Math.abs(v - mu) * rstd));
    forward.fill(1e-5 * rstd * maxX, r, r + D);
    backward.fill(1e-5 * rstd * maxG * (1 + rstd * maxX * maxY), r, r + D);
  }
  return { forward, backward };
}

const UNARY: UnaryOp[] = ['neg', 'abs', 'sqrt', 'floor', 'ceil', 'trunc', 'roundHalfEven', 'relu', 'reluGrad', 'square', 'reciprocal', 'rsqrt', 'exp', 'sigmoid', 'silu', 'siluGrad', 'sign'];
const BINARY: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'reluBackward'];

/** Every equality case, in the order the suites run them. */
export const GPU_CASES: readonly GpuCase[] = [
  {
    name: 'unary ops on strided views',
    run: (ctx) =>
      assertAll(ctx, 40, [fc.constantFrom(...UNARY), shape.chain((s) => anyView(s, false))], async (op, x) => {
        const scaled: Arg = { ...x, data: x.data.map((v) => v * 4) };
        const { ref, got } = await both(ctx, 'unary', [scaled], [...x.shape], { op });
        // GPU exp/sqrt/division are approximations a few ulp wide (GLSL allows more than IEEE)
        // siluGrad = σ(x)(1 + x(1 − σ(x))) crosses 0 at x ≈ −1.28 by cancellation of O(1) terms: an
        // absolute bound of a few ulp of 1 there, not a relative one (seed 123770234: 1.3e-8 off at −1.4e-4)
        close(ctx, 'unary', got, ref, ['exp', 'sigmoid', 'silu', 'siluGrad', 'rsqrt', 'sqrt', 'reciprocal'].includes(op) ? 2e-6 : 0, op === 'siluGrad' ? 1e-6 : 1e-37);
      }),
  },
  {
    name: 'binary ops with broadcasting (stride 0) and transposes',
    run: (ctx) =>
      assertAll(ctx, 40, [fc.constantFrom(...BINARY), shape.chain((s) => fc.tuple(anyView(s, true), anyView(s, true)))], async (op, [a, b]) => {
        const { ref, got } = await both(ctx, 'binary', [a, b], [...a.shape], { op });
        close(ctx, 'binary', got, ref, 2.4e-7);
      }),
  },
  {
    name: 'strided copy and where',
    run: (ctx) =>
      assertAll(ctx, 25, [shape.chain((s) => fc.tuple(anyView(s, true), anyView(s, true), anyView(s, true)))], async ([x, a, b]) => {
        const r1 = await both(ctx, 'copy', [x], [...x.shape], {});
        close(ctx, 'copy', r1.got, r1.ref, 0);
        const cond: Arg = { ...x, dtype: 'float32', data: x.data.map((v) => (v > 0 ? 1 : 0)) };
        const r2 = await both(ctx, 'where', [cond, a, b], [...x.shape], {});
        close(ctx, 'where', r2.got, r2.ref, 0);
      }),
  },
  {
    name: 'batched matmul with transposed and broadcast operands',
    run: (ctx) => {
      const dims = fc.record({ batch: fc.integer({ min: 1, max: 3 }), m: size(), k: size(), n: size(), ta: fc.boolean(), tb: fc.boolean(), bcast: fc.boolean(), s1: seed, s2: seed });
      return assertAll(ctx, 40, [dims], async ({ batch, m, k, n, ta, tb, bcast, s1, s2 }) => {
        const a = view('float32', [batch, m, k], ta ? [0, 2, 1] : [0, 1, 2], 1, [], s1);
        const b = view('float32', [batch, k, n], tb ? [0, 2, 1] : [0, 1, 2], 2, bcast ? [0] : [], s2);
        const { ref, got } = await both(ctx, 'matmul', [a, b], [batch, m, n], {});
        close(ctx, 'matmul', got, ref, 1e-5, 1e-5 * Math.sqrt(k));
      });
    },
  },
  {
    name: 'reductions over any axes, and argmax/argmin',
    run: (ctx) => {
      const problem = shape.chain((s) => fc.record({ x: anyView(s, false), axes: fc.subarray(s.map((_, d) => d), { minLength: 1 }), op: fc.constantFrom('sum' as const, 'max' as const, 'min' as const, 'absmax' as const, 'prod' as const) }));
      return assertAll(ctx, 40, [problem], async ({ x, axes, op }) => {
        const outShape = x.shape.map((n, d) => (axes.includes(d) ? 1 : n));
        const { ref, got } = await both(ctx, 'reduce', [x], outShape, { op, axes });
        // a float32 running sum of n terms |x| ≤ 1 drifts from the exact sum by ~0.2·u·n (u = 2⁻²⁴,
        // the rounding errors add up like a random walk over partial sums of size ~√n): u·n is ~6σ;
        // 1e-5·√n alone failed about once in ten runs once n reached ~266k (error 8e-3 seen)
        // a product of many |x| < 1 can land below float32's normal range, which GPUs may flush to 0
        const n = numel(x.shape);
        close(ctx, 'reduce', got, ref, 1e-5, op === 'sum' ? Math.max(1e-5 * Math.sqrt(n), 2 ** -24 * n) : op === 'prod' ? 2 ** -126 : 0);
        const axis = axes[0]!;
        const arg = await both(ctx, 'argReduce', [x], x.shape.map((n, d) => (d === axis ? 1 : n)), { op: op === 'min' ? 'argmin' : 'argmax', axis }, 'int32');
        close(ctx, 'argReduce', arg.got, arg.ref, 0);
      });
    },
  },
  {
    // Mesa's llvmpipe ends a thread's loops after 65535 iterations without a word (gpu/operands.ts
    // MAX_LOOP): a one-pass sum of 70,000 elements returned the sum of the first 65,535
    name: 'reductions longer than a shader loop may run (split across threads)',
    run: async (ctx) => {
      const cases: [number[], number[], number[]][] = [[[70_000], [0], [0]], [[67, 33, 70], [2, 1, 0], [0, 1, 2]], [[3, 40_000], [1, 0], [1]], [[300, 300], [0, 1], [0, 1]]];
      for (const [s, order, axes] of cases) {
        const x = view('float32', s, order, 1, [], 7);
        const n = axes.reduce((a, d) => a * s[d]!, 1);
        for (const op of ['sum', 'max', 'min', 'absmax'] as const) {
          const { ref, got } = await both(ctx, 'reduce', [x], s.map((k, d) => (axes.includes(d) ? 1 : k)), { op, axes });
          close(ctx, 'reduce', got, ref, 1e-5, op === 'sum' ? Math.max(1e-5 * Math.sqrt(n), 2 ** -24 * n) : 0);
        }
      }
    },
  },
  {
    name: 'softmax and log-softmax (with a broadcast bias) along any axis, and their backward',
    run: (ctx) =>
      assertAll(
        ctx,
        30,
        [shape.chain((s) => fc.record({ x: anyView(s, false), bias: anyView(s, true), g: anyView(s, true), axis: fc.integer({ min: 0, max: s.length - 1 }), log: fc.boolean(), withBias: fc.boolean() }))],
        async ({ x, bias, g, axis, log, withBias }) => {
          const scaled: Arg = { ...x, data: x.data.map((v) => v * 8) };
          const fwd = await both(ctx, 'softmax', withBias ? [scaled, bias] : [scaled], [...x.shape], { axis, log });
          close(ctx, 'softmax', fwd.got, fwd.ref, 2e-6, 1e-6);
          const y = out('float32', [...x.shape]);
          y.data.set(fwd.ref);
          const bwd = await both(ctx, 'softmaxBackward', [y, g], [...x.shape], { axis, log });
          close(ctx, 'softmaxBackward', bwd.got, bwd.ref, 1e-5, 1e-5);
        },
      ),
  },
  {
    name: 'fakeQuantize and its fused backward (per tensor and per channel; every offset and rounding)',
    run: (ctx) => {
      const problem = shape.chain((s) =>
        fc.record({
          x: anyView(s, false),
          g: anyView(s, true),
          perChannel: fc.boolean(),
          offset: fc.constantFrom('roundedZeroPoint' as const, 'zeroPoint' as const, 'beta' as const),
          rounding: fc.constantFrom('halfEven' as const, 'halfAway' as const, 'floor' as const),
          bits: fc.integer({ min: 2, max: 8 }),
          seed,
        }),
      );
      return assertAll(ctx, 40, [problem], async ({ x, g, perChannel, offset, rounding, bits, seed }) => {
        const s = x.shape;
        const ch = perChannel ? s[s.length - 1]! : 1;
        const scales = Float32Array.from({ length: ch }, (_, i) => 0.02 + ((seed + 7 * i) % 13) / 100);
        const zeros = Float32Array.from({ length: ch }, (_, i) => ((seed >> 3) + i) % 3 - 1 + 0.3);
        const bstr = s.map((_, d) => (perChannel && d === s.length - 1 ? 1 : 0));
        const sc: Arg = { data: scales, dtype: 'float32', shape: s, strides: bstr, offset: 0 };
        const zp: Arg = { data: zeros, dtype: 'float32', shape: s, strides: bstr, offset: 0 };
        const p = { qmin: -(2 ** (bits - 1)), qmax: 2 ** (bits - 1) - 1, rounding, offset };
        const fwd = await both(ctx, 'fakeQuantize', [x, sc, zp], [...s], p);
        // a value one float32 ulp from a rounding tie may land on either side: at most one step off
        close(ctx, 'fakeQuantize', fwd.got, fwd.ref, 1e-6, scales.reduce((m, v) => Math.max(m, v)) * 1.001);
        const flips = fwd.got.filter((v, i) => Math.abs(v - fwd.ref[i]!) > 1e-6).length;
        if (flips > Math.max(1, numel(s) / 500)) fail(`fakeQuantize: ${flips} of ${numel(s)} elements a step off`);
        const bwd = await both(ctx, 'fakeQuantizeBackward', [x, sc, zp, g], [3, ...s], { ...p, gradFactor: 0.7 });
        record(ctx, 'fakeQuantizeBackward', bwd.got, bwd.ref); // the count below is the check
        const off = bwd.got.filter((v, i) => Math.abs(v - bwd.ref[i]!) > 1e-5 * (1 + Math.abs(bwd.ref[i]!))).length;
        if (off > Math.max(3, numel(s) / 100)) fail(`fakeQuantizeBackward: ${off} of ${3 * numel(s)} gradients off`);
      });
    },
  },
  {
    name: 'gather, indexSelect, scatterAdd and indexAdd on strided views with repeated indices',
    run: (ctx) =>
      assertAll(ctx, 30, [indexProblem], async ({ dim, index, x, src, L, flip, seed }) => {
        // moves are exact; the scatters add in index order as js does, so float32 sums round alike
        const g = await both(ctx, 'gather', [x, index], [...index.shape], { dim });
        close(ctx, 'gather', g.got, g.ref, 0);
        const sc = await both(ctx, 'scatterAdd', [x, index, src], [...x.shape], { dim });
        close(ctx, 'scatterAdd', sc.got, sc.ref, 1e-6, 1e-7);
        const ids = intView([L], [0], 1, 2, 0, x.shape[dim]!, seed);
        const sel = await both(ctx, 'indexSelect', [x, ids], x.shape.map((n, d) => (d === dim ? L : n)), { dim });
        close(ctx, 'indexSelect', sel.got, sel.ref, 0);
        const order = x.shape.map((_, d) => d);
        const rows = view('float32', x.shape.map((n, d) => (d === dim ? L : n)), flip ? order.reverse() : order, 0, [], seed);
        const add = await both(ctx, 'indexAdd', [x, ids, rows], [...x.shape], { dim });
        close(ctx, 'indexAdd', add.got, add.ref, 1e-6, 1e-7);
      }),
  },
  {
    name: 'im2col and col2im for any conv geometry and input layout',
    run: (ctx) =>
      assertAll(ctx, 30, [convGeometry, fc.boolean()], async (g, transposed) => {
        const p = { kernel: g.kernel, stride: g.stride, padding: g.padding, dilation: g.dilation, padValue: g.padValue };
        const x = view('float32', [g.N, g.C, g.H, g.W], g.order, 1, [], g.seed);
        const colShape = [g.N, g.C * g.kernel[0] * g.kernel[1], g.oh * g.ow];
        const fwd = await both(ctx, 'im2col', [x], colShape, p);
        close(ctx, 'im2col', fwd.got, fwd.ref, 0);
        // each image element sums its taps in the js order (kernel row, then column)
        const cols = view('float32', colShape, transposed ? [0, 2, 1] : [0, 1, 2], 2, [], g.seed);
        const adj = await both(ctx, 'col2im', [cols], [g.N, g.C, g.H, g.W], { ...p, padValue: 0 });
        close(ctx, 'col2im', adj.got, adj.ref, 1e-6, 1e-7);
      }),
  },
  {
    name: 'RMS and layer norm and their backward, and rope (both directions), on strided and broadcast views',
    run: (ctx) => {
      const problem = shape.chain((s) => {
        const even = [...s.slice(0, -1), 2 * Math.ceil(s[s.length - 1]! / 2)];
        return fc.record({ x: anyView(s, false), g: anyView(s, true), kind: fc.constantFrom('rms' as const, 'layer' as const), shift: fc.double({ min: -4, max: 4, noNaN: true }), rx: anyView(even, false), cos: anyView(even, true), sin: anyView(even, true), transpose: fc.boolean() });
      });
      return assertAll(ctx, 30, [problem], async ({ x, g, kind, shift, rx, cos, sin, transpose }) => {
        // an offset mean makes layer norm's centring matter; float32 row sums against js's float64
        const shifted: Arg = { ...x, data: x.data.map((v) => v + shift) };
        const p = { kind, eps: 1e-5 };
        const tol = normTolerances(shifted, g, p);
        const fwd = await both(ctx, 'norm', [shifted], [...x.shape], p);
        close(ctx, 'norm', fwd.got, fwd.ref, 1e-5, tol.forward);
        const bwd = await both(ctx, 'normBackward', [shifted, g], [...x.shape], p);
        close(ctx, 'normBackward', bwd.got, bwd.ref, 1e-5, tol.backward);
        const r = await both(ctx, 'rope', [rx, cos, sin], [...rx.shape], { transpose });
        close(ctx, 'rope', r.got, r.ref, 1e-6, 1e-7);
      });
    },
  },
  {
    name: 'the fast Walsh–Hadamard transform in blocks of every power of two up to 256',
    run: (ctx) => {
      const problem = fc.record({ logB: fc.integer({ min: 0, max: 8 }), rows: fc.integer({ min: 1, max: 5 }), blocks: fc.integer({ min: 1, max: 3 }), transposed: fc.boolean(), normalize: fc.boolean(), seed });
      return assertAll(ctx, 30, [problem], async ({ logB, rows, blocks, transposed, normalize, seed }) => {
        const b = 2 ** logB;
        const x = view('float32', [rows, b * blocks], transposed ? [1, 0] : [0, 1], 1, [], seed);
        const { ref, got } = await both(ctx, 'fwht', [x], [rows, b * blocks], { blockSize: b, normalize });
        // float32 rounding at each of the log₂ b passes, on sums of up to b terms of |x| ≤ 1
        close(ctx, 'fwht', got, ref, 1e-6, 2e-7 * Math.max(1, logB) * (normalize ? 1 : Math.sqrt(b)));
      });
    },
  },
  {
    name: 'Adam and AdamW steps update the parameter and both moments in place (strided gradient)',
    run: (ctx) => {
      const problem = fc.record({
        shape: fc.tuple(size(), size()),
        transposed: fc.boolean(),
        decoupled: fc.boolean(),
        maximize: fc.boolean(),
        weightDecay: fc.constantFrom(0, 0.01, 0.1),
        beta1: fc.constantFrom(0, 0.3, 0.9),
        step: fc.integer({ min: 1, max: 50 }),
        seed,
      });
      return assertAll(ctx, 30, [problem], async ({ shape: s, transposed, decoupled, maximize, weightDecay, beta1, step, seed }) => {
        const params: AdamStepParams = { lr: 1e-3, beta1, beta2: 0.999, eps: 1e-8, weightDecay, decoupled, maximize, step };
        const state = () => {
          const p = view('float32', s, [0, 1], 0, [], seed);
          const m = view('float32', s, [0, 1], 0, [], seed + 1);
          const v = view('float32', s, [0, 1], 0, [], seed + 2);
          v.data.forEach((x, i) => (v.data[i] = x * x));
          return { p, m, v, g: view('float32', s, transposed ? [1, 0] : [0, 1], 1, [], seed + 3) };
        };
        const ref = state();
        const got = state();
        const p0 = Float32Array.from(ref.p.data);
        jsKernels.adamStep([ref.p, ref.g, ref.m, ref.v], ref.p, params);
        await runGpu(ctx, 'adamStep', [got.p, got.g, got.m, got.v], got.p, params);
        const ran = ctx.backend.ranOn!('adamStep', 'float32');
        if (ran !== 'gpu') fail(`adamStep ran on ${ran}, not on the gpu`);
        close(ctx, 'adamStep (m)', got.m.data, ref.m.data, 1e-6, 1e-7);
        close(ctx, 'adamStep (v)', got.v.data, ref.v.data, 1e-6, 1e-9);
        // GLSL's float32 division and sqrt are not correctly rounded (2.5 ulp and more), and the
        // update m̂/(√v̂ + ε) reaches ~50·lr where v is tiny: the error is a few ulp of the larger
        // of p and the update, not of the new p (p + Δ can cancel: −0.0493 + 0.0442 was seen)
        const tol = Float32Array.from(p0, (p, i) => 1e-5 * params.lr + 2 ** -21 * (Math.abs(p) + Math.abs(ref.p.data[i]! - p)));
        close(ctx, 'adamStep (param)', got.p.data, ref.p.data, 2.4e-7, tol);
      });
    },
  },
  {
    name: 'packedMatmul over 1/2/4/8-bit fields of uint8 and int8 bytes, groups, zero points and bias',
    run: (ctx) => {
      const problem = fc.record({
        N: fc.integer({ min: 1, max: 5 }), O: fc.integer({ min: 1, max: 9 }), groups: fc.integer({ min: 1, max: 3 }),
        // odd group sizes start groups (and rows) mid-byte
        groupSize: fc.constantFrom(1, 3, 8, 17, 32), bits: fc.constantFrom(1, 2, 4, 8), zeroPoint: fc.boolean(), bias: fc.boolean(), int8: fc.boolean(), lead: fc.nat(3), transposed: fc.boolean(), seed,
      });
      return assertAll(ctx, 30, [problem], async (c) => {
        const K = c.groups * c.groupSize;
        const x = view('float32', [c.N, K], c.transposed ? [1, 0] : [0, 1], 1, [], c.seed);
        // NF4-like levels; int grids are a special case
        const w = packedWeight(randomBytes(Math.ceil((c.O * K * c.bits) / 8), c.seed), c, 2 ** c.bits, c.O, c.groups, (v) => Math.round(v * 4) / 2);
        const bias = flat(randomArray('float32', c.O, c.seed ^ 0x42) as Float32Array, 'float32');
        const inputs = [x, w.codes, w.table, w.scale, ...(c.zeroPoint ? [w.zero] : []), ...(c.bias ? [bias] : [])];
        const { ref, got } = await both(ctx, 'packedMatmul', inputs, [c.N, c.O], { bits: c.bits, outFeatures: c.O, groupSize: c.groupSize, zeroPoint: c.zeroPoint, bias: c.bias });
        // the fields are exact; float32 sums of K terms |x·s·(L − z)| ≤ 1.01·(1 + max|z|), in another
        // order than js's float64: matmul's bound scaled by the term size (max seen 1.9e-6, headless-gl)
        close(ctx, 'packedMatmul', got, ref, 1e-5, 1e-5 * Math.sqrt(K) * 1.01 * (c.zeroPoint ? 3 : 1));
      });
    },
  },
  {
    name: 'packedMatmul over base-3 trits (whole and partial 256-blocks, every section), groups, zero points and bias',
    run: (ctx) => {
      const problem = fc.record({
        N: fc.integer({ min: 1, max: 4 }), O: fc.integer({ min: 1, max: 6 }), groups: fc.integer({ min: 1, max: 3 }),
        // around the sections (160, 80, 16 trits) and the 256-block: whole blocks, partial ones, tails only
        groupSize: fc.constantFrom(1, 3, 5, 16, 17, 48, 80, 96, 160, 176, 240, 251, 256, 272), zeroPoint: fc.boolean(), bias: fc.boolean(), int8: fc.boolean(), lead: fc.nat(3), transposed: fc.boolean(), seed,
      });
      return assertAll(ctx, 30, [problem], async (c) => {
        const K = c.groups * c.groupSize;
        const x = view('float32', [c.N, K], c.transposed ? [1, 0] : [0, 1], 1, [], c.seed);
        const trits = Uint8Array.from(randomArray('float64', c.O * K, c.seed ^ 0x3333), (v) => Math.min(2, Math.floor((v + 1) * 1.5)));
        const w = packedWeight(packBase3(trits, c.O, K), c, 3, c.O, c.groups, (v) => Math.round(v * 4) / 2);
        const bias = flat(randomArray('float32', c.O, c.seed ^ 0x42) as Float32Array, 'float32');
        const inputs = [x, w.codes, w.table, w.scale, ...(c.zeroPoint ? [w.zero] : []), ...(c.bias ? [bias] : [])];
        const { ref, got } = await both(ctx, 'packedMatmul', inputs, [c.N, c.O], { bits: 2, outFeatures: c.O, groupSize: c.groupSize, zeroPoint: c.zeroPoint, bias: c.bias, packing: 'base3' });
        // the trits are exact, as the fields are: the same bound as the case above (max seen 1.7e-5
        // where K reaches 816 and |y| tens, headless-gl)
        close(ctx, 'packedMatmul (base3)', got, ref, 1e-5, 1e-5 * Math.sqrt(K) * 1.01 * (c.zeroPoint ? 3 : 1));
      });
    },
  },
  {
    name: 'packedGather decodes the rows looked up, bit for bit (1/2/4/8 bits, groups mid-byte, zero points, β offsets); an index out of range is js\'s RangeError',
    run: (ctx) => {
      const problem = fc.record({
        V: fc.integer({ min: 1, max: 9 }), groups: fc.integer({ min: 1, max: 3 }), groupSize: fc.constantFrom(1, 3, 5, 8, 17, 32), bits: fc.constantFrom(1, 2, 4, 8),
        zeroPoint: fc.boolean(), beta: fc.boolean(), int8: fc.boolean(), lead: fc.nat(3),
        idxShape: fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 2 }), idxLead: fc.nat(2), bad: fc.boolean(), at: fc.nat(), seed,
      });
      return assertAll(ctx, 30, [problem], async (c) => {
        const D = c.groups * c.groupSize;
        const w = packedWeight(randomBytes(Math.ceil((c.V * D * c.bits) / 8), c.seed), c, 2 ** c.bits, c.V, c.groups, (v) => v);
        const idx = intView(c.idxShape, c.idxShape.map((_, d) => d), c.idxLead, 1, 0, c.V, c.seed);
        const N = numel(c.idxShape);
        const params = { bits: c.bits, rows: c.V, groupSize: c.groupSize, zeroPoint: c.zeroPoint, ...(c.beta && { offset: 'beta' as const }) };
        const inputs = [idx, w.codes, w.table, w.scale, ...(c.zeroPoint ? [w.zero] : [])];
        const { ref, got } = await both(ctx, 'packedGather', inputs, [N, D], params);
        // one float32 operation after another, each rounded as js rounds it
        close(ctx, 'packedGather', got, ref, 0);
        const pos = c.at % N;
        const wrong = c.bad ? c.V : -1;
        idx.data[c.idxLead + pos] = wrong;
        await rejects(ctx, 'packedGather', inputs, [N, D], params, new RangeError(`packedGather: index ${wrong} (at position ${pos}) is out of range [0, ${c.V})`));
      });
    },
  },
];
