/**
 * @file wasm fused row kernels (softmax, log-softmax, rms/layer norm and their backward) against
 * the js oracle: random row lengths around the SIMD width, inputs with −∞ and large values, one
 * and two threads (the result must not depend on the thread count).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsBackend, jsKernels, numel, type KernelName, type NormParams, type SoftmaxParams, type Backend } from '@qgrad/kernels';
import { contiguous, mismatch, nativeCalls, out, randomArray, view, NATIVE } from './helpers.js';

/** The backend under test (each of NATIVE in turn), on one and two threads. */
let one!: Backend;
let two!: Backend;

const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });
/** [rows, n] with at least 1024 elements (below that js runs) and n not always a multiple of 4. */
const shape = fc
  .record({ n: fc.oneof(fc.constantFrom(1, 3, 4, 5, 7, 8, 33, 128), fc.integer({ min: 1, max: 300 })), extra: fc.integer({ min: 0, max: 40 }) })
  .map(({ n, extra }) => [Math.ceil(1024 / n) + extra, n]);

type RowKernel = 'softmax' | 'softmaxBackward' | 'norm' | 'normBackward' | 'rope';
const CASES: { kernel: RowKernel; params: SoftmaxParams | NormParams; inputs: number }[] = [
  { kernel: 'softmax', params: { axis: 1, log: false }, inputs: 1 },
  { kernel: 'softmax', params: { axis: 1, log: true }, inputs: 1 },
  { kernel: 'softmaxBackward', params: { axis: 1, log: false }, inputs: 2 },
  { kernel: 'softmaxBackward', params: { axis: 1, log: true }, inputs: 2 },
  { kernel: 'norm', params: { kind: 'rms', eps: 1e-6 }, inputs: 1 },
  { kernel: 'norm', params: { kind: 'layer', eps: 1e-5 }, inputs: 1 },
  { kernel: 'normBackward', params: { kind: 'rms', eps: 1e-6 }, inputs: 2 },
  { kernel: 'normBackward', params: { kind: 'layer', eps: 1e-5 }, inputs: 2 },
];

/**
 * Per-element absolute tolerance: f32 arithmetic (lane sums, x − mean) against the oracle's f64
 * leaves errors of a few ulp of the terms each output is made of, which can be far larger than
 * the output itself after cancellation (layer norm of two nearly equal values, rms backward of a
 * one-element row). So the bound scales with each row's terms, not with the result.
 */
function tolerance(kernel: RowKernel, params: SoftmaxParams | NormParams, args: { data: ArrayLike<number> }[], [rows, n]: number[]): Float64Array {
  const tol = new Float64Array(rows! * n!);
  for (let r = 0; r < rows!; r++) {
    const row = (j: number) => Array.from({ length: n! }, (_, i) => args[j]!.data[r * n! + i]!);
    const x = row(0);
    const absMax = (v: number[]) => Math.max(...v.map(Math.abs).filter(Number.isFinite), 0);
    let t: number;
    if (kernel === 'softmax') t = 'log' in params && params.log ? 2e-6 * absMax(x) + 1e-6 : 1e-6;
    else if (kernel === 'softmaxBackward') t = 2e-6 * absMax(row(1)) * n!;
    else {
      const layer = 'kind' in params && params.kind === 'layer';
      const mu = layer ? x.reduce((a, b) => a + b, 0) / n! : 0;
      const rstd = 1 / Math.sqrt(x.reduce((a, b) => a + (b - mu) ** 2, 0) / n! + (params as NormParams).eps);
      const spread = absMax(x) * rstd;
      t = kernel === 'norm' ? 1e-6 * spread : 1e-5 * rstd * absMax(row(1)) * (1 + spread) * (1 + spread);
    }
    tol.fill(t, r * n!, (r + 1) * n!);
  }
  return tol;
}

function run(backend: typeof one, kernel: RowKernel, inputs: ReturnType<typeof contiguous>[], sh: number[], params: never) {
  const o = out('float32', sh);
  backend.run(kernel as KernelName, inputs, o, params);
  return o;
}

describe.each(NATIVE)('$label fused row kernels', (entry) => {
  beforeAll(() => {
    one = entry.create({ threads: 1 });
    two = entry.create({ threads: 2 });
  });
  afterAll(() => {
    one.dispose();
    two.dispose();
  });

  for (const { kernel, params, inputs } of CASES)
    it(`${kernel} ${JSON.stringify(params)} equals the js kernel, and a two-thread backend gives the same bits`, () => {
      const ran = () => nativeCalls(one, kernel, 'float32');
      const before = ran();
      fc.assert(
        fc.property(shape, seed, fc.double({ min: 0.1, max: 30, noNaN: true }), (sh, s, spread) => {
          const args = Array.from({ length: inputs }, (_, j) => {
            const d = randomArray('float32', numel(sh), s + j).map((v) => v * spread);
            return contiguous(d, sh, 'float32');
          });
          // softmax backward takes a softmax output as y
          if (kernel === 'softmaxBackward') args[0] = run(one, 'softmax', [args[0]!], sh, params as never);
          const ref = out('float32', sh);
          jsKernels[kernel]([...args], ref, params as never);
          const a = run(one, kernel, args, sh, params as never);
          const b = run(two, kernel, args, sh, params as never);
          expect([...b.data]).toEqual([...a.data]);
          expect(mismatch(a.data, ref.data, 2e-5, tolerance(kernel, params, args, sh))).toBe(-1);
        }),
        { numRuns: 25 },
      );
      // every case ran in wasm (softmax backward also ran one softmax per case)
      expect(ran() - before).toBeGreaterThanOrEqual(25);
    });

  it('norm and normBackward with a weight row: bit-identical to the norm, the affine mul and its backward (g·w into normBackward, the column sum of g·y) on this backend and on js, rms and layer, 1 and 2 threads; float64 and strided operands on js', () => {
    const same = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).findIndex((v, i) => !Object.is(v, b[i]));
    type Runner = (k: KernelName, i: ReturnType<typeof contiguous>[], o: ReturnType<typeof out>, p: object) => void;
    const js: Runner = (k, i, o, p) => (jsKernels[k] as (i: unknown, o: unknown, p: unknown) => void)(i, o, p);
    /** The unfused ops: forward norm then mul by the broadcast row; backward g·w, normBackward, g·y and its sum over rows. */
    const composed = (r: Runner, x: ReturnType<typeof contiguous>, g: ReturnType<typeof contiguous>, w: ReturnType<typeof contiguous>, params: NormParams) => {
      const sh = [...x.shape];
      const [rows, n] = sh as [number, number];
      const dtype = x.dtype as 'float32' | 'float64';
      const wb = { ...w, shape: sh, strides: [0, w.strides[0]!] };
      const [y, fwd, gw, dx, gy] = [out(dtype, sh), out(dtype, sh), out(dtype, sh), out(dtype, sh), out(dtype, sh)];
      r('norm', [x], y, params);
      r('binary', [y, wb], fwd, { op: 'mul' });
      r('binary', [g, wb], gw, { op: 'mul' });
      r('normBackward', [x, gw], dx, params);
      r('binary', [g, y], gy, { op: 'mul' });
      const dw = out(dtype, [1, n]);
      r('reduce', [gy], dw, { op: 'sum', axes: [0] });
      const bwd = out(dtype, [rows + 1, n]);
      bwd.data.set(dx.data as never);
      bwd.data.set(dw.data as never, rows * n);
      return { fwd: fwd.data, bwd: bwd.data };
    };
    const fused = (r: Runner, x: ReturnType<typeof contiguous>, g: ReturnType<typeof contiguous>, w: ReturnType<typeof contiguous>, params: NormParams) => {
      const [rows, n] = x.shape as [number, number];
      const dtype = x.dtype as 'float32' | 'float64';
      const [fwd, bwd] = [out(dtype, [rows, n]), out(dtype, [rows + 1, n])];
      r('norm', [x, w], fwd, params);
      r('normBackward', [x, g, w], bwd, params);
      return { fwd: fwd.data, bwd: bwd.data };
    };
    const on = (b: Backend): Runner => (k, i, o, p) => b.run(k, i, o, p as never);
    const before = nativeCalls(one, 'normBackward', 'float32');
    fc.assert(
      fc.property(shape, seed, fc.constantFrom<NormParams>({ kind: 'rms', eps: 1e-6 }, { kind: 'layer', eps: 1e-5 }), (sh, s, params) => {
        const [x, g] = [0, 1].map((j) => contiguous(randomArray('float32', numel(sh), s + j).map((v) => v * 3), sh, 'float32'));
        const w = contiguous(randomArray('float32', sh[1]!, s + 2), [sh[1]!], 'float32');
        for (const [name, r] of [['one', on(one)], ['two', on(two)], ['js', js]] as const) {
          const want = composed(name === 'js' ? js : on(one), x!, g!, w, params);
          const got = fused(r, x!, g!, w, params);
          expect(same(got.fwd, want.fwd), `${name} forward`).toBe(-1);
          expect(same(got.bwd, want.bwd), `${name} backward`).toBe(-1);
        }
        // float64 and a strided x run on js, as its own unfused kernels
        const x64 = { ...x!, dtype: 'float64' as const, data: Float64Array.from(x!.data) };
        const [g64, w64] = [{ ...g!, dtype: 'float64' as const, data: Float64Array.from(g!.data) }, { ...w, dtype: 'float64' as const, data: Float64Array.from(w.data) }];
        const f64 = fused(on(one), x64, g64, w64, params);
        const j64 = composed(js, x64, g64, w64, params);
        expect(same(f64.fwd, j64.fwd)).toBe(-1);
        expect(same(f64.bwd, j64.bwd)).toBe(-1);
      }),
      { numRuns: 20 },
    );
    // each case's fused backward ran in wasm
    expect(nativeCalls(one, 'normBackward', 'float32') - before).toBeGreaterThanOrEqual(20);
  });

  it('splits large softmax jobs (plain, log, with a bias) over the pool with the same bits as one thread', () => {
    const sh = [3, 100, 301]; // 90,300 elements: past the pool threshold, rows not a multiple of 4
    const x = contiguous(randomArray('float32', numel(sh), 11).map((v) => v * 8), sh, 'float32');
    const bias = { data: randomArray('float32', 100 * 301, 12), dtype: 'float32' as const, shape: sh, strides: [0, 301, 1], offset: 0 };
    for (const [inputs, log] of [[[x], false], [[x], true], [[x, bias], false]] as const) {
      const a = run(one, 'softmax', [...inputs] as never, sh, { axis: 2, log } as never);
      const b = run(two, 'softmax', [...inputs] as never, sh, { axis: 2, log } as never);
      expect([...b.data]).toEqual([...a.data]);
    }
    expect(two.stats!().find((x) => x.kernel === 'softmax' && x.dtype === 'float32')?.pooled).toBeGreaterThanOrEqual(3);
  });

  it('softmax gives zeros where a row holds −∞ and NaN for a row of all −∞, as js', () => {
    const sh = [64, 32];
    const x = contiguous(randomArray('float32', numel(sh), 7), sh, 'float32');
    for (let r = 0; r < 64; r++) for (let j = r % 32; j < 32; j++) if ((r + j) % 3 === 0) x.data[r * 32 + j] = -Infinity;
    x.data.fill(-Infinity, 5 * 32, 6 * 32);
    for (const log of [false, true]) {
      const ref = out('float32', sh);
      jsKernels.softmax([x], ref, { axis: 1, log });
      const got = run(one, 'softmax', [x], sh, { axis: 1, log } as never);
      expect(mismatch(got.data, ref.data, 1e-5, 1e-6)).toBe(-1);
      expect(Number.isNaN(got.data[5 * 32])).toBe(true);
    }
  });

  it('softmax along an inner axis or over a strided view runs on js with the same result', () => {
    const x = view('float32', [40, 30], [1, 0], 0, [], 3); // transposed storage
    const js = () => one.stats!().find((s) => s.kernel === 'softmax' && s.dtype === 'float32')?.js ?? 0;
    const before = js();
    for (const axis of [0, 1]) {
      const ref = out('float32', [40, 30]);
      jsKernels.softmax([x], ref, { axis, log: false });
      const got = run(one, 'softmax', [x], [40, 30], { axis, log: false } as never);
      expect([...got.data]).toEqual([...ref.data]);
    }
    expect(js() - before).toBe(2);
  });
});

describe.each(NATIVE)('$label rope', (entry) => {
  beforeAll(() => {
    one = entry.create({ threads: 1 });
    two = entry.create({ threads: 2 });
  });
  afterAll(() => {
    one.dispose();
    two.dispose();
  });

  const problem = fc.record({ lead: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 2 }), t: fc.integer({ min: 1, max: 40 }), h8: fc.integer({ min: 1, max: 8 }), perRow: fc.boolean(), seed });
  for (const transpose of [false, true])
    it(`${transpose ? 'the adjoint' : 'the forward'} equals js with [T, D] or [1, D] tables broadcast over x, and a transposed x its contiguous copy bit for bit`, () => {
      const ran = () => nativeCalls(one, 'rope');
      const before = ran();
      fc.assert(
        fc.property(problem, ({ lead, t, h8, perRow, seed: s }) => {
          const n = 8 * h8;
          const shape = [...lead, Math.max(t, Math.ceil(1024 / (n * lead.reduce((a, b) => a * b, 1)))), n];
          const T = shape[shape.length - 2]!;
          // x as stored, or as a transposed view of a [..., D/8, T, 8]-ish layout: swap the last two leading dims when there are any
          const x0 = contiguous(randomArray('float32', numel(shape), s), shape, 'float32');
          const x = perRow || shape.length < 3 ? x0 : view('float32', shape, [...shape.keys()].map((d) => (d === shape.length - 3 ? shape.length - 2 : d === shape.length - 2 ? shape.length - 3 : d)), 0, [], s);
          const table = (k: number) => {
            const rows = perRow ? T : 1;
            // stored with 3 extra rows in front, read from an offset as a narrowed table would be
            const data = randomArray('float32', (rows + 3) * n, s + k);
            return { data, dtype: 'float32' as const, shape, strides: shape.map((_, d) => (d === shape.length - 1 ? 1 : d === shape.length - 2 && perRow ? n : 0)), offset: 3 * n };
          };
          const [c, sn] = [table(1), table(2)];
          const ref = out('float32', shape);
          jsKernels.rope([x, c, sn], ref, { transpose });
          const a = run(one, 'rope' as RowKernel, [x, c, sn] as never, shape, { transpose } as never);
          const b = run(two, 'rope' as RowKernel, [x, c, sn] as never, shape, { transpose } as never);
          expect([...b.data]).toEqual([...a.data]);
          expect(mismatch(a.data, ref.data, 1e-6, 1e-6)).toBe(-1);
          // a transposed x (read in place through its row offsets, or staged) gives the bits of its contiguous copy
          const xc = out('float32', shape);
          jsKernels.copy([x], xc, {});
          expect([...run(one, 'rope' as RowKernel, [xc, c, sn] as never, shape, { transpose } as never).data]).toEqual([...a.data]);
        }),
        { numRuns: 30 },
      );
      expect(ran() - before).toBe(60);
    });

  it('a scale gives the bits of the rotation then a mul by the scalar (forward), and of the mul then the adjoint (backward), on wasm and on js', () => {
    const [B, H, T, n] = [2, 3, 16, 32];
    const shape = [B, H, T, n];
    // x as attention's heads arrive: [B, T, H, n] seen as [B, H, T, n]
    const xt = contiguous(randomArray('float32', numel(shape), 31), [B, T, H, n], 'float32');
    const x = { ...xt, shape, strides: [T * H * n, n, H * n, 1] };
    const table = (k: number) => ({ ...contiguous(randomArray('float32', T * n, k), [T, n], 'float32'), shape, strides: [0, 0, n, 1] });
    const [c, sn] = [table(32), table(33)];
    const scale = 1 / Math.sqrt(n);
    const k = { data: new Float32Array([scale]), dtype: 'float32' as const, shape, strides: [0, 0, 0, 0], offset: 0 };
    const before = nativeCalls(one, 'rope');
    for (const [backend, name] of [[one, 'wasm'], [jsBackend, 'js']] as const) {
      const rotated = run(backend, 'rope', [x, c, sn] as never, shape, { transpose: false } as never);
      const want = out('float32', shape);
      backend.run('binary', [rotated, k], want, { op: 'mul' });
      expect([...run(backend, 'rope', [x, c, sn] as never, shape, { transpose: false, scale } as never).data], `${name} forward`).toEqual([...want.data]);
      const scaled = out('float32', shape);
      backend.run('binary', [x, k], scaled, { op: 'mul' });
      const back = run(backend, 'rope', [scaled, c, sn] as never, shape, { transpose: true } as never);
      expect([...run(backend, 'rope', [x, c, sn] as never, shape, { transpose: true, scale } as never).data], `${name} adjoint`).toEqual([...back.data]);
    }
    expect(nativeCalls(one, 'rope') - before).toBe(4);
  });

  it('writes a strided out (a gradient in the layout of heads split off a projection) with the bits of a contiguous out, in wasm where out is in its memory', () => {
    const [B, H, T, n] = [2, 3, 16, 32];
    const shape = [B, H, T, n];
    const table = (k: number) => ({ ...contiguous(randomArray('float32', T * n, k), [T, n], 'float32'), shape, strides: [0, 0, n, 1] });
    const [c, sn] = [table(41), table(42)];
    const x = contiguous(randomArray('float32', numel(shape), 43), shape, 'float32');
    // a host x and a transposed x (last dim strided) as the backward's k gradient arrives
    const xt = { ...contiguous(randomArray('float32', numel(shape), 44), [B, H, n, T], 'float32'), shape, strides: [H * n * T, n * T, 1, T] };
    for (const input of [x, xt])
      for (const transpose of [false, true]) {
        const want = run(one, 'rope', [input, c, sn] as never, shape, { transpose, scale: 0.5 } as never);
        // out: [B, T, H, n] memory seen as [B, H, T, n], in the backend's memory
        const data = one.alloc('float32', numel(shape)) as Float32Array;
        const o = { data, dtype: 'float32' as const, shape, strides: [T * H * n, n, H * n, 1], offset: 0 };
        const before = nativeCalls(one, 'rope');
        one.run('rope', [input, c, sn], o, { transpose, scale: 0.5 });
        expect(nativeCalls(one, 'rope') - before, 'ran in wasm').toBe(1);
        const got = out('float32', shape);
        jsKernels.copy([o], got, {});
        expect([...got.data]).toEqual([...want.data]);
        // js writes a strided out too
        const host = { ...o, data: new Float32Array(numel(shape)) };
        jsKernels.rope([input, c, sn], host, { transpose, scale: 0.5 });
        const ref = out('float32', shape);
        jsKernels.rope([input, c, sn], ref, { transpose, scale: 0.5 });
        const hostRows = out('float32', shape);
        jsKernels.copy([host], hostRows, {});
        expect([...hostRows.data]).toEqual([...ref.data]);
      }
  });
});

describe.each(NATIVE)('$label softmax with a bias', (entry) => {
  beforeAll(() => {
    one = entry.create({ threads: 1 });
    two = entry.create({ threads: 2 });
  });
  afterAll(() => {
    one.dispose();
    two.dispose();
  });

  it('masked lanes give +0, and NaN where js has it: a fully masked row, +∞ or NaN scores under a −∞ bias', () => {
    const [T, n] = [16, 128];
    const shape = [4, T, n];
    const xd = randomArray('float32', numel(shape), 7).map((v) => v * 4);
    xd[1 * n + 100] = Infinity; // row 1: +∞ − ∞ = NaN in a masked lane
    xd[2 * n + 120] = NaN; // row 2: a NaN score in a masked lane
    const data = new Float32Array(T * n).map((_, i) => (i % n > Math.floor(i / n) ? -Infinity : 0));
    data.fill(-Infinity, 3 * n, 4 * n); // row 3: fully masked
    const x = contiguous(xd, shape, 'float32');
    const bias = { data, dtype: 'float32' as const, shape, strides: [0, n, 1], offset: 0 };
    const ref = out('float32', shape);
    jsKernels.softmax([x, bias], ref, { axis: 2, log: false });
    const got = run(one, 'softmax', [x, bias] as never, shape, { axis: 2, log: false } as never);
    for (let i = 0; i < got.data.length; i++) {
      const [g, r] = [got.data[i]!, ref.data[i]!];
      if (Number.isNaN(r) || r === 0) expect(Object.is(g, r)).toBe(true);
    }
    expect(Number.isNaN(got.data[1 * n + 5]!) && Number.isNaN(got.data[2 * n + 5]!) && Number.isNaN(got.data[3 * n])).toBe(true);
    expect(mismatch(got.data, ref.data, 2e-5, 1e-6)).toBe(-1);
  });

  it('equals js for [T, n] and [1, n] bias rows broadcast over x, −∞ entries included', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 70 }), fc.boolean(), seed, (b, t, n, perRow, s) => {
        const T = Math.max(t, Math.ceil(1024 / (b * n)));
        const shape = [b, T, n];
        const x = contiguous(randomArray('float32', numel(shape), s).map((v) => v * 4), shape, 'float32');
        const rows = perRow ? T : 1;
        const data = randomArray('float32', rows * n, s + 1).map((v, i) => (i % n > (i / n) % n + 1 ? -Infinity : v));
        const bias = { data, dtype: 'float32' as const, shape, strides: [0, perRow ? n : 0, 1], offset: 0 };
        const ref = out('float32', shape);
        jsKernels.softmax([x, bias], ref, { axis: 2, log: false });
        const got = run(one, 'softmax', [x, bias] as never, shape, { axis: 2, log: false } as never);
        const got2 = run(two, 'softmax', [x, bias] as never, shape, { axis: 2, log: false } as never);
        expect([...got2.data]).toEqual([...got.data]);
        expect(mismatch(got.data, ref.data, 2e-5, 1e-6)).toBe(-1);
      }),
      { numRuns: 40 },
    );
  });
});
