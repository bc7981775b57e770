/**
 * @file The gpu backend against the js oracle in float32 (fast-check: random shapes, transposed,
 * offset and broadcast views), each suite twice: operands in host arrays (uploaded per call) and
 * operands in the backend's own device buffers, chained on the device. Plus device residency
 * (alloc/write/readSync/free, memory counts, textures released), and the one-time fallback
 * warning. Where no gpu mode works (no display, no `gl` build), one line says why and the suites
 * are skipped; CI runs this file under `xvfb-run -a` (.ci/run).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BACKENDS, jsKernels, numel, type AdamStepParams, type Backend, type KernelArg, type KernelName, type KernelParams, type TypedArray, type UnaryOp, type BinaryOp } from '@qgrad/kernels';
import { openDevice } from '../src/gpu/device.js';
import { type Arg, convGeometry, intView, mismatch, out, permutation, size, view } from './helpers.js';

const entry = BACKENDS.find((b) => b.name === 'gpu')!;
const available = entry.available();
type Info = { mode: string | null; message: string };
const info = () => (entry.instance() as unknown as { info(): Info }).info();
if (!available) console.log(`gpu suites skipped: ${info().message}`);

const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });
/** Rank 1-3 of awkward sizes. */
const shape = fc.array(size(), { minLength: 1, maxLength: 3 });
const anyView = (s: number[], broadcast: boolean) =>
  fc.record({ order: permutation(s.length), offset: fc.integer({ min: 0, max: 3 }), bcast: fc.subarray(s.map((_, d) => d)), seed }).map(({ order, offset, bcast, seed }) =>
    view('float32', s, order, offset, broadcast ? bcast : [], seed),
  );

/** How operands reach the backend: as the tests' arrays, or first moved into its own buffers. */
type Placement = 'host arrays' | 'device buffers';

let backend!: Backend;
let placement: Placement = 'host arrays';

/** Runs `kernel` on the gpu with the operands placed per `placement`; the result lands in `got`. */
function runGpu<K extends KernelName>(kernel: K, inputs: readonly Arg[], got: Arg, params: KernelParams[K]): void {
  if (placement === 'host arrays') return backend.run(kernel, inputs, got, params);
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
  backend.run(kernel, inputs.map(place), place(got), params);
  // every buffer back (adamStep writes its state inputs too), then freed
  for (const a of [...inputs, got]) {
    const b = bufs.get(a.data);
    if (b === undefined) continue;
    a.data.set(backend.readSync(b, a.dtype, a.data.length) as never);
    backend.free(b);
    bufs.delete(a.data);
  }
}

/** The oracle and the gpu on the same problem; returns both results. */
function both<K extends KernelName>(kernel: K, inputs: readonly Arg[], shape: number[], params: KernelParams[K], dtype: 'float32' | 'int32' = 'float32') {
  const make = (): Arg => (dtype === 'int32' ? { data: new Int32Array(numel(shape)), dtype, shape, strides: out('float32', shape).strides, offset: 0 } : out('float32', shape));
  const ref = make();
  const got = make();
  (jsKernels[kernel] as (i: readonly Arg[], o: Arg, p: KernelParams[K]) => void)(inputs, ref, params);
  runGpu(kernel, inputs, got, params);
  expect(backend.ranOn!(kernel, dtype === 'int32' ? 'float32' : ref.dtype)).toBe('gpu');
  return { ref: ref.data, got: got.data };
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

const UNARY: UnaryOp[] = ['neg', 'abs', 'sqrt', 'floor', 'ceil', 'trunc', 'roundHalfEven', 'relu', 'reluGrad', 'square', 'reciprocal', 'rsqrt', 'exp', 'sigmoid', 'silu', 'sign'];
const BINARY: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'reluBackward'];

describe.skipIf(!available).each(['host arrays', 'device buffers'] as Placement[])('gpu kernels (operands in %s) equal the js oracle in float32', (where) => {
  beforeAll(() => {
    backend = entry.create();
    placement = where;
  });
  afterAll(() => backend.dispose());

  it('unary ops on strided views', () => {
    fc.assert(
      fc.property(fc.constantFrom(...UNARY), shape.chain((s) => anyView(s, false)), (op, x) => {
        const scaled: Arg = { ...x, data: x.data.map((v) => v * 4) };
        const { ref, got } = both('unary', [scaled], [...x.shape], { op });
        // GPU exp/sqrt/division are approximations a few ulp wide (GLSL allows more than IEEE)
        expect(mismatch(got, ref, ['exp', 'sigmoid', 'silu', 'rsqrt', 'sqrt', 'reciprocal'].includes(op) ? 2e-6 : 0, 1e-37)).toBe(-1);
      }),
      { numRuns: 40 },
    );
  });

  it('binary ops with broadcasting (stride 0) and transposes', () => {
    fc.assert(
      fc.property(fc.constantFrom(...BINARY), shape.chain((s) => fc.tuple(anyView(s, true), anyView(s, true))), (op, [a, b]) => {
        const { ref, got } = both('binary', [a, b], [...a.shape], { op });
        expect(mismatch(got, ref, 2.4e-7)).toBe(-1);
      }),
      { numRuns: 40 },
    );
  });

  it('strided copy and where', () => {
    fc.assert(
      fc.property(shape.chain((s) => fc.tuple(anyView(s, true), anyView(s, true), anyView(s, true))), ([x, a, b]) => {
        const r1 = both('copy', [x], [...x.shape], {});
        expect(mismatch(r1.got, r1.ref, 0)).toBe(-1);
        const cond: Arg = { ...x, dtype: 'float32', data: x.data.map((v) => (v > 0 ? 1 : 0)) };
        const r2 = both('where', [cond, a, b], [...x.shape], {});
        expect(mismatch(r2.got, r2.ref, 0)).toBe(-1);
      }),
      { numRuns: 25 },
    );
  });

  it('batched matmul with transposed and broadcast operands', () => {
    const dims = fc.record({ batch: fc.integer({ min: 1, max: 3 }), m: size(), k: size(), n: size(), ta: fc.boolean(), tb: fc.boolean(), bcast: fc.boolean(), s1: seed, s2: seed });
    fc.assert(
      fc.property(dims, ({ batch, m, k, n, ta, tb, bcast, s1, s2 }) => {
        const a = view('float32', [batch, m, k], ta ? [0, 2, 1] : [0, 1, 2], 1, [], s1);
        const b = view('float32', [batch, k, n], tb ? [0, 2, 1] : [0, 1, 2], 2, bcast ? [0] : [], s2);
        const { ref, got } = both('matmul', [a, b], [batch, m, n], {});
        expect(mismatch(got, ref, 1e-5, 1e-5 * Math.sqrt(k))).toBe(-1);
      }),
      { numRuns: 40 },
    );
  });

  it('reductions over any axes, and argmax/argmin', () => {
    const problem = shape.chain((s) => fc.record({ x: anyView(s, false), axes: fc.subarray(s.map((_, d) => d), { minLength: 1 }), op: fc.constantFrom('sum' as const, 'max' as const, 'min' as const, 'absmax' as const, 'prod' as const) }));
    fc.assert(
      fc.property(problem, ({ x, axes, op }) => {
        const outShape = x.shape.map((n, d) => (axes.includes(d) ? 1 : n));
        const { ref, got } = both('reduce', [x], outShape, { op, axes });
        // a float32 running sum of n terms |x| ≤ 1 drifts from the exact sum by ~0.2·u·n (u = 2⁻²⁴,
        // the rounding errors add up like a random walk over partial sums of size ~√n): u·n is ~6σ;
        // 1e-5·√n alone failed about once in ten runs once n reached ~266k (error 8e-3 seen)
        // a product of many |x| < 1 can land below float32's normal range, which GPUs may flush to 0
        const n = numel(x.shape);
        expect(mismatch(got, ref, 1e-5, op === 'sum' ? Math.max(1e-5 * Math.sqrt(n), 2 ** -24 * n) : op === 'prod' ? 2 ** -126 : 0)).toBe(-1);
        const axis = axes[0]!;
        const arg = both('argReduce', [x], x.shape.map((n, d) => (d === axis ? 1 : n)), { op: op === 'min' ? 'argmin' : 'argmax', axis }, 'int32');
        expect(mismatch(arg.got, arg.ref, 0)).toBe(-1);
      }),
      { numRuns: 40 },
    );
  });

  it('softmax and log-softmax (with a broadcast bias) along any axis, and their backward', () => {
    fc.assert(
      fc.property(shape.chain((s) => fc.record({ x: anyView(s, false), bias: anyView(s, true), g: anyView(s, true), axis: fc.integer({ min: 0, max: s.length - 1 }), log: fc.boolean(), withBias: fc.boolean() })), ({ x, bias, g, axis, log, withBias }) => {
        const scaled: Arg = { ...x, data: x.data.map((v) => v * 8) };
        const fwd = both('softmax', withBias ? [scaled, bias] : [scaled], [...x.shape], { axis, log });
        expect(mismatch(fwd.got, fwd.ref, 2e-6, 1e-6)).toBe(-1);
        const y = out('float32', [...x.shape]);
        y.data.set(fwd.ref);
        const bwd = both('softmaxBackward', [y, g], [...x.shape], { axis, log });
        expect(mismatch(bwd.got, bwd.ref, 1e-5, 1e-5)).toBe(-1);
      }),
      { numRuns: 30 },
    );
  });

  it('fakeQuantize and its fused backward (per tensor and per channel; every offset and rounding)', () => {
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
    fc.assert(
      fc.property(problem, ({ x, g, perChannel, offset, rounding, bits, seed }) => {
        const s = x.shape;
        const ch = perChannel ? s[s.length - 1]! : 1;
        const scales = Float32Array.from({ length: ch }, (_, i) => 0.02 + ((seed + 7 * i) % 13) / 100);
        const zeros = Float32Array.from({ length: ch }, (_, i) => ((seed >> 3) + i) % 3 - 1 + 0.3);
        const bstr = s.map((_, d) => (perChannel && d === s.length - 1 ? 1 : 0));
        const sc: Arg = { data: scales, dtype: 'float32', shape: s, strides: bstr, offset: 0 };
        const zp: Arg = { data: zeros, dtype: 'float32', shape: s, strides: bstr, offset: 0 };
        const p = { qmin: -(2 ** (bits - 1)), qmax: 2 ** (bits - 1) - 1, rounding, offset };
        const fwd = both('fakeQuantize', [x, sc, zp], [...s], p);
        // a value one float32 ulp from a rounding tie may land on either side: at most one step off
        expect(mismatch(fwd.got, fwd.ref, 1e-6, scales.reduce((m, v) => Math.max(m, v)) * 1.001)).toBe(-1);
        expect(fwd.got.filter((v, i) => Math.abs(v - fwd.ref[i]!) > 1e-6).length).toBeLessThanOrEqual(Math.max(1, numel(s) / 500));
        const bwd = both('fakeQuantizeBackward', [x, sc, zp, g], [3, ...s], { ...p, gradFactor: 0.7 });
        expect(bwd.got.filter((v, i) => Math.abs(v - bwd.ref[i]!) > 1e-5 * (1 + Math.abs(bwd.ref[i]!))).length).toBeLessThanOrEqual(Math.max(3, numel(s) / 100));
      }),
      { numRuns: 40 },
    );
  });
  it('gather, indexSelect, scatterAdd and indexAdd on strided views with repeated indices', () => {
    fc.assert(
      fc.property(indexProblem, ({ dim, index, x, src, L, flip, seed }) => {
        // moves are exact; the scatters add in index order as js does, so float32 sums round alike
        const g = both('gather', [x, index], [...index.shape], { dim });
        expect(mismatch(g.got, g.ref, 0)).toBe(-1);
        const sc = both('scatterAdd', [x, index, src], [...x.shape], { dim });
        expect(mismatch(sc.got, sc.ref, 1e-6, 1e-7)).toBe(-1);
        const ids = intView([L], [0], 1, 2, 0, x.shape[dim]!, seed);
        const sel = both('indexSelect', [x, ids], x.shape.map((n, d) => (d === dim ? L : n)), { dim });
        expect(mismatch(sel.got, sel.ref, 0)).toBe(-1);
        const order = x.shape.map((_, d) => d);
        const rows = view('float32', x.shape.map((n, d) => (d === dim ? L : n)), flip ? order.reverse() : order, 0, [], seed);
        const add = both('indexAdd', [x, ids, rows], [...x.shape], { dim });
        expect(mismatch(add.got, add.ref, 1e-6, 1e-7)).toBe(-1);
      }),
      { numRuns: 30 },
    );
  });

  it('im2col and col2im for any conv geometry and input layout', () => {
    fc.assert(
      fc.property(convGeometry, fc.boolean(), (g, transposed) => {
        const p = { kernel: g.kernel, stride: g.stride, padding: g.padding, dilation: g.dilation, padValue: g.padValue };
        const x = view('float32', [g.N, g.C, g.H, g.W], g.order, 1, [], g.seed);
        const colShape = [g.N, g.C * g.kernel[0] * g.kernel[1], g.oh * g.ow];
        const fwd = both('im2col', [x], colShape, p);
        expect(mismatch(fwd.got, fwd.ref, 0)).toBe(-1);
        // each image element sums its taps in the js order (kernel row, then column)
        const cols = view('float32', colShape, transposed ? [0, 2, 1] : [0, 1, 2], 2, [], g.seed);
        const adj = both('col2im', [cols], [g.N, g.C, g.H, g.W], { ...p, padValue: 0 });
        expect(mismatch(adj.got, adj.ref, 1e-6, 1e-7)).toBe(-1);
      }),
      { numRuns: 30 },
    );
  });

  it('RMS and layer norm and their backward, and rope (both directions), on strided and broadcast views', () => {
    const problem = shape.chain((s) => {
      const even = [...s.slice(0, -1), 2 * Math.ceil(s[s.length - 1]! / 2)];
      return fc.record({ x: anyView(s, false), g: anyView(s, true), kind: fc.constantFrom('rms' as const, 'layer' as const), shift: fc.double({ min: -4, max: 4, noNaN: true }), rx: anyView(even, false), cos: anyView(even, true), sin: anyView(even, true), transpose: fc.boolean() });
    });
    fc.assert(
      fc.property(problem, ({ x, g, kind, shift, rx, cos, sin, transpose }) => {
        // an offset mean makes layer norm's centring matter; float32 row sums against js's float64
        const shifted: Arg = { ...x, data: x.data.map((v) => v + shift) };
        const p = { kind, eps: 1e-5 };
        const tol = normTolerances(shifted, g, p);
        const fwd = both('norm', [shifted], [...x.shape], p);
        expect(mismatch(fwd.got, fwd.ref, 1e-5, tol.forward)).toBe(-1);
        const bwd = both('normBackward', [shifted, g], [...x.shape], p);
        expect(mismatch(bwd.got, bwd.ref, 1e-5, tol.backward)).toBe(-1);
        const r = both('rope', [rx, cos, sin], [...rx.shape], { transpose });
        expect(mismatch(r.got, r.ref, 1e-6, 1e-7)).toBe(-1);
      }),
      { numRuns: 30 },
    );
  });

  it('the fast Walsh–Hadamard transform in blocks of every power of two up to 256', () => {
    const problem = fc.record({ logB: fc.integer({ min: 0, max: 8 }), rows: fc.integer({ min: 1, max: 5 }), blocks: fc.integer({ min: 1, max: 3 }), transposed: fc.boolean(), normalize: fc.boolean(), seed });
    fc.assert(
      fc.property(problem, ({ logB, rows, blocks, transposed, normalize, seed }) => {
        const b = 2 ** logB;
        const x = view('float32', [rows, b * blocks], transposed ? [1, 0] : [0, 1], 1, [], seed);
        const { ref, got } = both('fwht', [x], [rows, b * blocks], { blockSize: b, normalize });
        // float32 rounding at each of the log₂ b passes, on sums of up to b terms of |x| ≤ 1
        expect(mismatch(got, ref, 1e-6, 2e-7 * Math.max(1, logB) * (normalize ? 1 : Math.sqrt(b)))).toBe(-1);
      }),
      { numRuns: 30 },
    );
  });

  it('Adam and AdamW steps update the parameter and both moments in place (strided gradient)', () => {
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
    fc.assert(
      fc.property(problem, ({ shape: s, transposed, decoupled, maximize, weightDecay, beta1, step, seed }) => {
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
        runGpu('adamStep', [got.p, got.g, got.m, got.v], got.p, params);
        expect(backend.ranOn!('adamStep', 'float32')).toBe('gpu');
        expect(mismatch(got.m.data, ref.m.data, 1e-6, 1e-7)).toBe(-1);
        expect(mismatch(got.v.data, ref.v.data, 1e-6, 1e-9)).toBe(-1);
        // GLSL's float32 division and sqrt are not correctly rounded (2.5 ulp and more), and the
        // update m̂/(√v̂ + ε) reaches ~50·lr where v is tiny: the error is a few ulp of the larger
        // of p and the update, not of the new p (p + Δ can cancel: −0.0493 + 0.0442 was seen)
        const tol = Float32Array.from(p0, (p, i) => 1e-5 * params.lr + 2 ** -21 * (Math.abs(p) + Math.abs(ref.p.data[i]! - p)));
        expect(mismatch(got.p.data, ref.p.data, 2.4e-7, tol)).toBe(-1);
      }),
      { numRuns: 30 },
    );
  });
});

describe.skipIf(!available)('gpu backend storage', () => {
  it('keeps tensors on the device between kernels; free releases their textures; memory() counts buffers', () => {
    const b = entry.create() as Backend & { deviceMemory(): { textures: number } };
    const n = 1000;
    const x = b.alloc('float32', n);
    b.write(x, 'float32', Float32Array.from({ length: n }, (_, i) => i / 100));
    const arg = (data: unknown): KernelArg => ({ data, dtype: 'float32', shape: [n], strides: [1], offset: 0 });
    const before = b.memory();
    const textures = b.deviceMemory().textures;
    // a chain of 50 kernels: each result stays a texture, and the previous one is freed
    let cur = x;
    for (let i = 0; i < 50; i++) {
      const next = b.alloc('float32', n);
      b.run('binary', [arg(cur), arg(x)], arg(next), { op: 'add' });
      if (cur !== x) b.free(cur);
      cur = next;
    }
    expect(b.memory().buffers).toBe(before.buffers + 1);
    // x and the last result on the device: nothing else left behind
    expect(b.deviceMemory().textures - textures).toBe(2);
    const values = b.readSync(cur, 'float32', n);
    expect(mismatch(values, Float32Array.from({ length: n }, (_, i) => Math.fround((51 * i) / 100)), 1e-5)).toBe(-1);
    b.free(cur);
    b.free(x);
    expect(b.memory()).toEqual({ bytes: before.bytes - 4 * n, buffers: before.buffers - 1 });
    expect(b.deviceMemory().textures).toBe(textures);
    expect(() => b.readSync(cur, 'float32', n)).toThrow(/already freed/);
    expect(() => b.free(cur)).toThrow(/freed twice/);
    b.dispose();
  });

  it('runs a call it declines (float64) on js with one warning naming it, keeping the result correct', () => {
    const b = entry.create();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const x = b.alloc('float64', 8);
    b.write(x, 'float64', Float64Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
    const o = b.alloc('float64', 8);
    const a = (data: unknown): KernelArg => ({ data, dtype: 'float64', shape: [2, 4], strides: [4, 1], offset: 0 });
    b.run('fwht', [a(x)], a(o), { blockSize: 4, normalize: false });
    b.run('fwht', [a(x)], a(o), { blockSize: 4, normalize: false });
    expect(warn.mock.calls.filter((c) => String(c[0]).includes("'fwht' (float64)"))).toHaveLength(1);
    warn.mockRestore();
    expect(b.ranOn!('fwht', 'float64')).toBe('js');
    expect(Array.from(b.readSync(o, 'float64', 8) as TypedArray)).toEqual([6, -2, -4, 0, 22, -2, -4, 0]);
    expect(b.stats!().find((s) => s.kernel === 'fwht' && s.dtype === 'float64')?.js).toBe(2);
    b.dispose();
  });

  it('an out-of-range index (device-resident or not) fails with the js RangeError naming the op', () => {
    const b = entry.create();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const table = b.alloc('float32', 12);
    b.write(table, 'float32', Float32Array.from({ length: 12 }, (_, i) => i));
    const ids = b.alloc('int32', 3);
    const t: KernelArg = { data: table, dtype: 'float32', shape: [4, 3], strides: [3, 1], offset: 0 };
    const idx: KernelArg = { data: ids, dtype: 'int32', shape: [3], strides: [1], offset: 0 };
    const o = b.alloc('float32', 9);
    const outArg: KernelArg = { data: o, dtype: 'float32', shape: [3, 3], strides: [3, 1], offset: 0 };
    b.write(ids, 'int32', Int32Array.from([3, 0, 2]));
    b.run('indexSelect', [t, idx], outArg, { dim: 0 });
    expect(b.ranOn!('indexSelect', 'float32')).toBe('gpu');
    expect(Array.from(b.readSync(o, 'float32', 9))).toEqual([9, 10, 11, 0, 1, 2, 6, 7, 8]);
    for (const bad of [4, -1]) {
      b.write(ids, 'int32', Int32Array.from([1, bad, 0]));
      expect(() => b.run('indexSelect', [t, idx], outArg, { dim: 0 })).toThrow(new RangeError(`indexSelect: index ${bad} is out of range [0, 4)`));
    }
    warn.mockRestore();
    b.dispose();
  });

  it('a full kernel cache destroys only kernels none of whose outputs is alive', () => {
    // gpu.js's Kernel.destroy deletes every texture the kernel made, and a texture reads back
    // through its kernel: evicting the kernel of a live output once made it unreadable (CI, rarely)
    const { device } = openDevice();
    const d = device!;
    d.capacity = 3;
    const t = d.upload(Float32Array.from([1, 2, 3, 4]));
    const u = d.run('function (a) { return a[this.thread.x] + 1.0; }', 4, [t], [4]);
    for (let i = 0; i < 6; i++) d.release(d.run(`function (a) { return a[this.thread.x] * ${i + 2}.0; }`, 4, [t], [4]), 4);
    expect(Array.from(t.toArray())).toEqual([1, 2, 3, 4]);
    expect(Array.from(u.toArray())).toEqual([2, 3, 4, 5]);
    // the two kernels with live outputs stay, the freed ones were evicted down to capacity
    expect(d.compiled).toBe(3);
    d.release(u, 4);
    d.release(t, 4);
    expect(d.textures).toBe(0);
    d.dispose();
  });

  it('reports the mode it chose', () => {
    expect(['webgpu', 'webgl2', 'headlessgl', 'webgl']).toContain(info().mode);
    expect(info().message).toMatch(/gpu\.js in \w+ mode/);
  });
});
