/**
 * @file Elementwise kernels (unary, binary with broadcasting, copy, exp/sigmoid) of every native
 * backend against the js oracle, and the backend's fallback bookkeeping.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isContiguous, jsKernels, numel, type BinaryOp, type UnaryOp, type Backend } from '@qgrad/kernels';
import { type Arg, type FloatDType, mismatch, NATIVE, nativeCalls, out, permutation, size, view } from './helpers.js';

/** The backend under test (each of NATIVE in turn). */
let backend!: Backend;

/** A shape of rank 1-3 from awkward sizes, padded with a leading dim so wasm (≥ 2048 elements) runs. */
const shape = fc.array(size(), { minLength: 1, maxLength: 3 }).map((s) => {
  const n = numel(s);
  return n >= 2048 ? s : [Math.ceil(2048 / n), ...s];
});

const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });
const DTYPES: FloatDType[] = ['float32', 'float64'];
const rtol = (d: FloatDType) => (d === 'float32' ? 2e-7 : 1e-15);

/** A view of `s` in a random storage order, maybe offset, maybe broadcast along some dims. */
const anyView = (dtype: FloatDType, s: number[], allowBroadcast: boolean) =>
  fc.record({ order: permutation(s.length), offset: fc.integer({ min: 0, max: 3 }), bcast: fc.subarray(s.map((_, d) => d)), seed }).map(({ order, offset, bcast, seed }) =>
    view(dtype, s, order, offset, allowBroadcast ? bcast : [], seed),
  );

const UNARY: UnaryOp[] = ['neg', 'abs', 'sqrt', 'floor', 'ceil', 'trunc', 'roundHalfEven', 'relu', 'reluGrad', 'square', 'reciprocal', 'rsqrt'];
const BINARY: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'reluBackward'];

describe.each(NATIVE)('$label elementwise', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 2 });
  });
  afterAll(() => {
    backend.dispose();
  });

  for (const dtype of DTYPES) {
    it(`unary ops equal the js kernels in ${dtype} on strided views`, () => {
      fc.assert(
        fc.property(fc.constantFrom(...UNARY), shape.chain((s) => anyView(dtype, s, false)), (op, x) => {
          const ref = out(dtype, [...x.shape]);
          const got = out(dtype, [...x.shape]);
          // scale so floor/round see values on both sides of integers
          const scaled: Arg = { ...x, data: x.data.map((v) => v * 4) };
          jsKernels.unary([scaled], ref, { op });
          backend.run('unary', [scaled], got, { op });
          expect(mismatch(got.data, ref.data, op === 'rsqrt' ? 2 * rtol(dtype) : 0)).toBe(-1);
          expect(backend.ranOn!('unary', dtype)).toBe(entry.name);
        }),
        { numRuns: 80 },
      );
    });

    it(`binary ops equal the js kernels in ${dtype} with broadcasting (stride 0) and transposes`, () => {
      fc.assert(
        fc.property(
          fc.constantFrom(...BINARY),
          shape.chain((s) => fc.tuple(anyView(dtype, s, true), anyView(dtype, s, true))),
          (op, [a, b]) => {
            const ref = out(dtype, [...a.shape]);
            const got = out(dtype, [...a.shape]);
            jsKernels.binary([a, b], ref, { op });
            backend.run('binary', [a, b], got, { op });
            // exact: IEEE add/sub/mul/div/min/max round once, as the oracle's f64 result rounded to the dtype
            expect(mismatch(got.data, ref.data, 0)).toBe(-1);
          },
        ),
        { numRuns: 100 },
      );
    });

    it(`strided copy equals the js copy in ${dtype}`, () => {
      const ran = () => nativeCalls(backend, 'copy', dtype);
      const before = ran();
      let strided = 0;
      fc.assert(
        fc.property(shape.chain((s) => anyView(dtype, s, true)), (x) => {
          const ref = out(dtype, [...x.shape]);
          const got = out(dtype, [...x.shape]);
          jsKernels.copy([x], ref, {});
          backend.run('copy', [x], got, {});
          expect(mismatch(got.data, ref.data, 0)).toBe(-1);
          // a contiguous view is a memcpy, which js does; every strided one must have run in wasm
          if (!isContiguous(x.shape, x.strides)) strided++;
        }),
        { numRuns: 60 },
      );
      expect(ran() - before).toBe(strided);
    });
  }

  it('exp, sigmoid, silu and its derivative (f32 SIMD approximations) stay within 1e-6 relative of the oracle', () => {
    fc.assert(
      fc.property(fc.constantFrom<UnaryOp>('exp', 'sigmoid', 'silu', 'siluGrad'), shape.chain((s) => anyView('float32', s, false)), fc.double({ min: 0.1, max: 60, noNaN: true }), (op, x, scale) => {
        const scaled: Arg = { ...x, data: x.data.map((v) => v * scale) };
        const ref = out('float32', [...x.shape]);
        const got = out('float32', [...x.shape]);
        jsKernels.unary([scaled], ref, { op });
        backend.run('unary', [scaled], got, { op });
        // siluGrad = σ·(1 + x·(1 − σ)) cancels near x ≈ −1.28: an absolute bound there
        expect(mismatch(got.data, ref.data, 1e-6, op === 'siluGrad' ? 1e-6 : 1e-37)).toBe(-1);
        expect(backend.ranOn!('unary', 'float32')).toBe(entry.name);
      }),
      { numRuns: 60 },
    );
  });

  it('exp, sigmoid, silu and siluGrad handle infinities, NaN, overflow and subnormal results like the oracle', () => {
    const special = [NaN, Infinity, -Infinity, 0, -0, 88.72, 88.73, 89, -87.3, -90, -100, -103.9, -104, -200, 1e-8, -1e-8, 20, -20];
    const data = Float32Array.from({ length: 4096 }, (_, i) => special[i % special.length]! + (i >= special.length * 100 ? (i % 977) / 10 - 50 : 0));
    const x: Arg = { data, dtype: 'float32', shape: [4096], strides: [1], offset: 0 };
    for (const op of ['exp', 'sigmoid', 'silu', 'siluGrad'] as UnaryOp[]) {
      const ref = out('float32', [4096]);
      const got = out('float32', [4096]);
      jsKernels.unary([x], ref, { op });
      backend.run('unary', [x], got, { op });
      // subnormal results carry fewer bits: compare them absolutely (silu scales a subnormal σ by x)
      expect(mismatch(got.data, ref.data, 1e-6, op === 'exp' || op === 'sigmoid' ? 2e-45 : op === 'silu' ? 1e-40 : 1e-6)).toBe(-1);
    }
  });

  it('reluGrad is 0 exactly where x ≤ 0 (NaN gives 1, as threshold_backward passes g), in SIMD lanes and the scalar tail', () => {
    const special = [NaN, Infinity, -Infinity, 0, -0, 1e-45, -1e-45, 3, -3];
    const want = special.map((v) => (v <= 0 ? 0 : 1));
    for (const dtype of DTYPES) {
      // past the size where maps go to wasm; whole vectors, then a scalar tail of three
      const n = 4099;
      const data = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
      for (let i = 0; i < n; i++) data[i] = special[i % special.length]!;
      const got = out(dtype, [n]);
      backend.run('unary', [{ data, dtype, shape: [n], strides: [1], offset: 0 }], got, { op: 'reluGrad' });
      expect(backend.ranOn!('unary', dtype)).toBe(entry.name);
      expect(Array.from(got.data).every((v, i) => Object.is(v, want[i % special.length]))).toBe(true);
    }
  });

  it('reluBackward selects: +0 where x ≤ 0 whatever g is (±∞, NaN), g elsewhere (NaN x included)', () => {
    const xs = [NaN, -1, 0, -0, 2, Infinity, -Infinity, 1e-45, -1e-45];
    const gs = [5, Infinity, NaN, -3, -0, NaN, -Infinity, -2, 4];
    for (const dtype of DTYPES) {
      const n = 4099;
      const make = (vals: number[]): Arg => {
        const data = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
        for (let i = 0; i < n; i++) data[i] = vals[i % vals.length]!;
        return { data, dtype, shape: [n], strides: [1], offset: 0 };
      };
      const [g, x] = [make(gs), make(xs)];
      const got = out(dtype, [n]);
      const ref = out(dtype, [n]);
      backend.run('binary', [g, x], got, { op: 'reluBackward' });
      expect(backend.ranOn!('binary', dtype)).toBe(entry.name);
      jsKernels.binary([g, x], ref, { op: 'reluBackward' });
      for (const res of [got, ref]) expect(Array.from(res.data).every((v, i) => Object.is(v, xs[i % 9]! <= 0 ? 0 : (g.data[i] as number)))).toBe(true);
    }
  });

  it('siluBackward is g·siluGrad(x) in one pass: float32 bit-identical to the siluGrad map then the mul map (strided and broadcast g too), near the js oracle; float64 on js', () => {
    const special = [NaN, Infinity, -Infinity, 0, -0, 88.8, -90, -104, -200, 1e-8, 20, -20, 3, -3];
    fc.assert(
      fc.property(shape.chain((s) => fc.tuple(anyView('float32', s, true), anyView('float32', s, false))), fc.boolean(), ([g, x], spice) => {
        if (spice) for (let i = 0; i < x.data.length; i += 7) x.data[i] = special[i % special.length]!;
        const sh = [...x.shape];
        const [got, d, two, ref] = [out('float32', sh), out('float32', sh), out('float32', sh), out('float32', sh)];
        backend.run('binary', [g, x], got, { op: 'siluBackward' });
        backend.run('unary', [x], d, { op: 'siluGrad' });
        backend.run('binary', [g, d], two, { op: 'mul' });
        expect(Array.from(got.data).findIndex((v, i) => !Object.is(v, two.data[i]))).toBe(-1);
        jsKernels.binary([g, x], ref, { op: 'siluBackward' });
        // the f32 exp is within 1 ulp of the oracle's; subnormal σ carry fewer bits
        expect(mismatch(got.data, ref.data, 1e-5, 1e-37)).toBe(-1);
      }),
      { numRuns: 40 },
    );
    const n = 4099;
    const g64 = { data: Float64Array.from({ length: n }, (_, i) => Math.cos(i)), dtype: 'float64' as const, shape: [n], strides: [1], offset: 0 };
    const x64 = { ...g64, data: Float64Array.from({ length: n }, (_, i) => Math.sin(i) * 8) };
    const [got, ref] = [out('float64', [n]), out('float64', [n])];
    backend.run('binary', [g64, x64], got, { op: 'siluBackward' });
    jsKernels.binary([g64, x64], ref, { op: 'siluBackward' });
    expect(mismatch(got.data, ref.data, 0)).toBe(-1);
    expect(backend.ranOn!('binary', 'float64')).toBe('js');
  });

  it('siluMul is silu(a)·b in one pass: float32 bit-identical to the silu map then the mul map (strided and broadcast b too), near the js oracle; js float32 bit-identical to its own two kernels; float64 on js', () => {
    const special = [NaN, Infinity, -Infinity, 0, -0, 88.8, -90, -104, -200, 1e-8, 20, -20, 3, -3];
    fc.assert(
      fc.property(shape.chain((s) => fc.tuple(anyView('float32', s, false), anyView('float32', s, true))), fc.boolean(), ([a, b], spice) => {
        if (spice) for (let i = 0; i < a.data.length; i += 7) a.data[i] = special[i % special.length]!;
        const sh = [...a.shape];
        const [got, s, two, ref, jsS, jsTwo] = [out('float32', sh), out('float32', sh), out('float32', sh), out('float32', sh), out('float32', sh), out('float32', sh)];
        backend.run('binary', [a, b], got, { op: 'siluMul' });
        expect(backend.ranOn!('binary', 'float32')).toBe(entry.name);
        backend.run('unary', [a], s, { op: 'silu' });
        backend.run('binary', [s, b], two, { op: 'mul' });
        expect(Array.from(got.data).findIndex((v, i) => !Object.is(v, two.data[i]))).toBe(-1);
        jsKernels.binary([a, b], ref, { op: 'siluMul' });
        jsKernels.unary([a], jsS, { op: 'silu' });
        jsKernels.binary([jsS, b], jsTwo, { op: 'mul' });
        expect(Array.from(ref.data).findIndex((v, i) => !Object.is(v, jsTwo.data[i]))).toBe(-1);
        // the f32 exp is within 1 ulp of the oracle's; subnormal silu values carry fewer bits
        expect(mismatch(got.data, ref.data, 1e-5, 1e-37)).toBe(-1);
      }),
      { numRuns: 40 },
    );
    const n = 4099;
    const a64 = { data: Float64Array.from({ length: n }, (_, i) => Math.sin(i) * 8), dtype: 'float64' as const, shape: [n], strides: [1], offset: 0 };
    const b64 = { ...a64, data: Float64Array.from({ length: n }, (_, i) => Math.cos(i)) };
    const [got, ref] = [out('float64', [n]), out('float64', [n])];
    backend.run('binary', [a64, b64], got, { op: 'siluMul' });
    jsKernels.binary([a64, b64], ref, { op: 'siluMul' });
    expect(mismatch(got.data, ref.data, 0)).toBe(-1);
    expect(backend.ranOn!('binary', 'float64')).toBe('js');
  });

  it('swigluBackward writes d gate = (g·up)·siluGrad(gate) and d up = g·silu(gate) in one pass: float32 bit-identical to the maps it replaces (1 and 2 threads, vector tail, special values, strided and broadcast operands); js bit-identical to its own kernels in float32 and float64', () => {
    const one = entry.create({ threads: 1 });
    const special = [NaN, Infinity, -Infinity, 0, -0, 88.8, -90, -104, -200, 1e-8, 20, -20, 3, -3, 1e-40];
    /** The separate maps: g·up, its siluBackward with gate, and g·silu(gate). */
    const composed = (run: (k: string, i: Arg[], o: Arg, p: object) => void, g: Arg, gate: Arg, up: Arg, dtype: FloatDType): Float32Array | Float64Array => {
      const sh = [...g.shape];
      const n = numel(sh);
      const [gu, dgate, s, dup] = [out(dtype, sh), out(dtype, sh), out(dtype, sh), out(dtype, sh)];
      run('binary', [g, up], gu, { op: 'mul' });
      run('binary', [gu, gate], dgate, { op: 'siluBackward' });
      run('unary', [gate], s, { op: 'silu' });
      run('binary', [g, s], dup, { op: 'mul' });
      const both = dtype === 'float32' ? new Float32Array(2 * n) : new Float64Array(2 * n);
      both.set(dgate.data as never);
      both.set(dup.data as never, n);
      return both;
    };
    const same = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).findIndex((v, i) => !Object.is(v, b[i]));
    try {
      const js = (k: string, i: Arg[], o: Arg, p: object) => (jsKernels as Record<string, (i: Arg[], o: Arg, p: object) => void>)[k]!(i, o, p);
      // contiguous float32 (offsets included): in wasm, on the pool past 2¹⁵ elements
      for (const [sh, spice] of [[[3, 7, 101], true], [[40_003], true], [[64, 515], false]] as [number[], boolean][]) {
        const [g, gate, up] = [1, 2, 3].map((seed) => view('float32', sh, sh.map((_, d) => d), seed, [], seed));
        if (spice) for (let i = 0; i < gate!.data.length; i += 5) gate!.data[i] = special[i % special.length]!;
        const want = composed((k, i, o, p) => one.run(k as never, i, o, p as never), g!, gate!, up!, 'float32');
        for (const b of [backend, one]) {
          const got = out('float32', [2, ...sh]);
          b.run('swigluBackward', [g!, gate!, up!], got, {});
          expect(b.ranOn!('swigluBackward', 'float32'), `${sh}`).toBe(entry.name);
          expect(same(got.data, want), `${sh}`).toBe(-1);
        }
        const ref = out('float32', [2, ...sh]);
        js('swigluBackward', [g!, gate!, up!], ref, {});
        expect(same(ref.data, composed(js, g!, gate!, up!, 'float32'))).toBe(-1);
        // the f32 exp is within 1 ulp of the oracle's; subnormal values carry fewer bits
        expect(mismatch(want, ref.data, 1e-5, 1e-6)).toBe(-1);
      }
      // strided and broadcast operands (copied contiguous first) give the maps' bits too; float64 runs on js
      fc.assert(
        fc.property(fc.constantFrom<FloatDType>('float32', 'float64'), shape.chain((s) => fc.tuple(anyView('float32', s, true), anyView('float32', s, false), anyView('float32', s, true))), (dtype, views) => {
          const [g, gate, up] = views.map((v) => ({ ...v, dtype, data: dtype === 'float32' ? v.data : Float64Array.from(v.data) })) as [Arg, Arg, Arg];
          const got = out(dtype, [2, ...g.shape]);
          backend.run('swigluBackward', [g, gate, up], got, {});
          expect(backend.ranOn!('swigluBackward', dtype)).toBe(dtype === 'float32' ? entry.name : 'js');
          const run = dtype === 'float32' ? (k: string, i: Arg[], o: Arg, p: object) => backend.run(k as never, i, o, p as never) : js;
          expect(same(got.data, composed(run, g, gate, up, dtype))).toBe(-1);
        }),
        { numRuns: 30 },
      );
    } finally {
      one.dispose();
    }
  });

  it('splits large compute-bound maps over the pool (rows, or along one long row) with the same bits as one thread', () => {
    const one = entry.create({ threads: 1 });
    try {
      // [rows, n] shapes past the parallel thresholds: many rows, one long row, a broadcast
      // operand (stride 0), a transposed operand, and sizes that are not multiples of 4
      const cases: [number[], number[], number[]][] = [
        [[300, 1001], [0, 1], [0, 1]],
        [[1, 300_001], [0, 1], [0, 1]],
        [[513, 517], [1, 0], [0, 1]],
      ];
      for (const [s, orderA, orderB] of cases) {
        const a = view('float32', s, orderA, 1, [], 5);
        const b = view('float32', s, orderB, 0, s[0]! > 1 ? [0] : [], 6);
        for (const [kernel, op, ins] of [['unary', 'silu', [a]], ['unary', 'sqrt', [{ ...a, data: a.data.map(Math.abs) }]], ['binary', 'div', [a, b]]] as const) {
          const got = out('float32', s);
          const ref = out('float32', s);
          backend.run(kernel, ins as never, got, { op } as never);
          one.run(kernel, ins as never, ref, { op } as never);
          expect(mismatch(got.data, ref.data, 0, 0), `${op} ${s}`).toBe(-1);
        }
      }
      const pooled = (kernel: string) => backend.stats!().find((s) => s.kernel === kernel && s.dtype === 'float32')?.pooled ?? 0;
      expect(pooled('unary')).toBeGreaterThanOrEqual(6);
      expect(pooled('binary')).toBeGreaterThanOrEqual(3);
      expect(one.stats!().every((s) => s.pooled === 0)).toBe(true);
    } finally {
      one.dispose();
    }
  });

  it('splits large cheap maps of tensors in its own memory over the pool (rows, or one long row), equal to js', () => {
    const two = entry.create({ threads: 2 });
    try {
      const own = (x: Arg): Arg => {
        const data = two.alloc(x.dtype, x.data.length) as Arg['data'];
        data.set(x.data as never);
        return { ...x, data };
      };
      const cases: [number[], number[]][] = [
        [[1, 600_001], []],
        [[700, 1001], [0]],
      ];
      for (const [s, bcast] of cases) {
        const a = own(view('float32', s, [0, 1], 1, [], 7));
        const b = own(view('float32', s, [0, 1], 0, bcast, 8));
        for (const op of ['mul', 'add', 'maximum'] as const) {
          const got = own(out('float32', s));
          const ref = out('float32', s);
          two.run('binary', [a, b], got, { op });
          jsKernels.binary([a, b], ref, { op });
          expect(mismatch(got.data, ref.data, 0), `${op} ${s}`).toBe(-1);
        }
      }
      const stat = two.stats!().find((x) => x.kernel === 'binary' && x.dtype === 'float32');
      expect(stat?.native).toBe(6);
      // a backend with a two-thread pool used it for every one of these calls
      if ((two as { threads?: number }).threads === 2) expect(stat?.pooled).toBe(6);
    } finally {
      two.dispose();
    }
  });

  it('copies into a strided output view (slice assignment) like the js kernel', () => {
    const single = entry.create({ threads: 1 });
    fc.assert(
      fc.property(shape.chain((s) => fc.tuple(anyView('float32', s, true), permutation(s.length))), ([x, order]) => {
        // out: a permuted view into a larger buffer, as when assigning into a slice
        const o = view('float32', [...x.shape], order, 5, [], 1);
        const ref = { ...o, data: o.data.slice() };
        const got = { ...o, data: o.data.slice() };
        jsKernels.copy([x], ref, {});
        single.run('copy', [x], got, {});
        expect(mismatch(got.data, ref.data, 0)).toBe(-1);
      }),
      { numRuns: 30 },
    );
    single.dispose();
  });

  it('falls back to js for small sizes, other dtypes and ops without a wasm kernel', () => {
    const x = view('float32', [3, 5], [0, 1], 0, [], 1);
    const o = out('float32', [3, 5]);
    backend.run('unary', [x], o, { op: 'exp' });
    expect(backend.ranOn!('unary', 'float32')).toBe('js');
    const i = { data: new Int32Array(4096).fill(3), dtype: 'int32' as const, shape: [4096], strides: [1], offset: 0 };
    const io = { ...i, data: new Int32Array(4096) };
    backend.run('unary', [i], io, { op: 'neg' });
    expect(io.data[0]).toBe(-3);
    expect(backend.ranOn!('unary', 'int32')).toBe('js');
    const stats = backend.stats!();
    expect(stats.find((s) => s.kernel === 'unary' && s.dtype === 'int32')?.js).toBeGreaterThan(0);
  });

  it('propagates NaN and infinities like the oracle', () => {
    const vals = [NaN, Infinity, -Infinity, 0, -0, 1, -1, 3.5];
    const data = Float32Array.from({ length: 4096 }, (_, i) => vals[i % vals.length]!);
    const x: Arg = { data, dtype: 'float32', shape: [4096], strides: [1], offset: 0 };
    const y: Arg = { data: data.slice().reverse(), dtype: 'float32', shape: [4096], strides: [1], offset: 0 };
    for (const op of BINARY) {
      const ref = out('float32', [4096]);
      const got = out('float32', [4096]);
      jsKernels.binary([x, y], ref, { op });
      backend.run('binary', [x, y], got, { op });
      expect(mismatch(got.data, ref.data, 0)).toBe(-1);
    }
  });

  it('ran the property tests above natively, not in the js fallback', () => {
    // (copy is checked in its own test: contiguous copies are a memcpy in js by design)
    for (const kernel of ['unary', 'binary'] as const)
      for (const dtype of DTYPES) {
        const s = backend.stats!().find((x) => x.kernel === kernel && x.dtype === dtype);
        expect(s?.native, `${kernel} ${dtype}`).toBeGreaterThan(3 * (s?.js ?? 0));
      }
  });
});
