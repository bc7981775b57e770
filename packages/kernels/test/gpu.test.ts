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
import { BACKENDS, jsKernels, numel, type Backend, type KernelArg, type KernelName, type KernelParams, type TypedArray, type UnaryOp, type BinaryOp } from '@qgrad/kernels';
import { type Arg, mismatch, out, permutation, size, view } from './helpers.js';

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
  const o = place(got);
  backend.run(kernel, inputs.map(place), o, params);
  got.data.set(backend.readSync(o.data, got.dtype, got.data.length) as never);
  for (const b of bufs.values()) backend.free(b);
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
        expect(mismatch(got, ref, 1e-5, op === 'sum' ? 1e-5 * Math.sqrt(numel(x.shape)) : 0)).toBe(-1);
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

  it('runs a kernel it lacks on js with one warning naming it, keeping the result correct', () => {
    const b = entry.create();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const x = b.alloc('float32', 8);
    b.write(x, 'float32', Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
    const o = b.alloc('float32', 8);
    const a = (data: unknown): KernelArg => ({ data, dtype: 'float32', shape: [2, 4], strides: [4, 1], offset: 0 });
    b.run('fwht', [a(x)], a(o), { blockSize: 4, normalize: false });
    b.run('fwht', [a(x)], a(o), { blockSize: 4, normalize: false });
    expect(warn.mock.calls.filter((c) => String(c[0]).includes("'fwht'"))).toHaveLength(1);
    warn.mockRestore();
    expect(b.ranOn!('fwht', 'float32')).toBe('js');
    expect(Array.from(b.readSync(o, 'float32', 8) as TypedArray)).toEqual([6, -2, -4, 0, 22, -2, -4, 0]);
    expect(b.stats!().find((s) => s.kernel === 'fwht')?.js).toBe(2);
    b.dispose();
  });

  it('reports the mode it chose', () => {
    expect(['webgpu', 'webgl2', 'headlessgl', 'webgl']).toContain(info().mode);
    expect(info().message).toMatch(/gpu\.js in \w+ mode/);
  });
});
