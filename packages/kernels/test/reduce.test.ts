/**
 * @file wasm reductions (sum/max/min, argmax/argmin) against the js oracle over runs of axes.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsKernels, numel, type ReduceOp, type Backend } from '@qgrad/kernels';
import { type FloatDType, mismatch, out, permutation, size, view, NATIVE } from './helpers.js';

/** The backend under test (each of NATIVE in turn). */
let backend!: Backend;

const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/** Input [..] of rank 1-4 (≥ 2048 elements), a run of axes to reduce, and a storage order. */
const problem = fc
  .array(size(), { minLength: 1, maxLength: 3 })
  .map((s) => (numel(s) >= 2048 ? s : [Math.ceil(2048 / numel(s)), ...s]))
  .chain((s) =>
    fc.record({
      shape: fc.constant(s),
      start: fc.integer({ min: 0, max: s.length - 1 }),
      len: fc.integer({ min: 1, max: s.length }),
      order: fc.oneof(fc.constant(s.map((_, i) => i)), permutation(s.length)),
      offset: fc.integer({ min: 0, max: 3 }),
      seed,
    }),
  )
  .map(({ shape, start, len, order, offset, seed }) => ({
    shape,
    axes: shape.map((_, i) => i).slice(start, Math.min(shape.length, start + len)),
    order,
    offset,
    seed,
  }));

describe.each(NATIVE)('$label reduce', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => {
    backend.dispose();
  });

  for (const dtype of ['float32', 'float64'] as FloatDType[])
    for (const op of ['sum', 'max', 'min', 'absmax'] as ReduceOp[])
      it(`${op} over a run of axes equals the js kernel in ${dtype}`, () => {
        fc.assert(
          fc.property(problem, ({ shape, axes, order, offset, seed }) => {
            const x = view(dtype, shape, order, offset, [], seed);
            const outShape = shape.map((n, d) => (axes.includes(d) ? 1 : n));
            const ref = out(dtype, outShape);
            const got = out(dtype, outShape);
            jsKernels.reduce([x], ref, { op, axes });
            backend.run('reduce', [x], got, { op, axes });
            // contiguous inputs always have the [kept, reduced, kept] layout wasm handles
            // (reducing only size-1 axes is a copy, left to js)
            if (order.every((d, i) => d === i) && axes.some((d) => shape[d]! > 1)) expect(backend.ranOn!('reduce', dtype)).toBe(entry.name);
            // sums: both accumulate in f64, in different orders
            expect(mismatch(got.data, ref.data, op === 'sum' ? (dtype === 'float32' ? 1e-7 : 1e-13) : 0, op === 'sum' && dtype === 'float64' ? 1e-13 : 0)).toBe(-1);
          }),
          { numRuns: 60 },
        );
        const s = backend.stats!().find((x) => x.kernel === 'reduce' && x.dtype === dtype);
        expect(s?.native).toBeGreaterThan(0);
      });

  for (const dtype of ['float32', 'float64'] as FloatDType[])
    it(`argmax/argmin equal the js kernel in ${dtype}, ties and NaN included`, () => {
      fc.assert(
        fc.property(problem, fc.constantFrom('argmax' as const, 'argmin' as const), fc.boolean(), ({ shape, axes, order, offset, seed }, op, nan) => {
          const axis = axes[0]!;
          const x = view(dtype, shape, order, offset, [], seed);
          // few distinct values so ties are common; first occurrence must win
          x.data = x.data.map((v, i) => (nan && i % 997 === 5 ? NaN : Math.round(v * 4)));
          const outShape = shape.map((n, d) => (d === axis ? 1 : n));
          const ref = { ...out('float32', outShape), data: new Int32Array(numel(outShape)), dtype: 'int32' as const };
          const got = { ...ref, data: new Int32Array(numel(outShape)) };
          jsKernels.argReduce([x], ref, { op, axis });
          backend.run('argReduce', [x], got, { op, axis });
          expect([...got.data]).toEqual([...ref.data]);
          if (order.every((d, i) => d === i)) expect(backend.ranOn!('argReduce', dtype)).toBe(entry.name);
        }),
        { numRuns: 60 },
      );
    });

  it('float32 sums over a dim of 2 (the pair kernel) are bit-identical to js: ±0, ±∞, NaN, subnormals, far-apart magnitudes', () => {
    const special = [0, -0, 1, -1, 1e30, -1e30, 3e38, 3e38, 1e-45, -1e-45, 1e-40, Infinity, -Infinity, NaN, 0.1, 16777217, 1e-8, 2 ** -24];
    let k = 0;
    for (const [p, q] of [[1, 4], [3, 5], [17, 130], [2, 4096], [700, 3]]) {
      const n = p * 2 * q;
      const data = new Float32Array(n + 1);
      for (let i = 0; i < data.length; i++) data[i] = i % 3 === 0 ? special[k++ % special.length]! : Math.fround(Math.sin(i) * 10 ** ((i % 13) - 6));
      const x = { data, dtype: 'float32' as const, shape: [p, 2, q], strides: [2 * q, q, 1], offset: 1 };
      const ref = out('float32', [p, 1, q]);
      const got = out('float32', [p, 1, q]);
      jsKernels.reduce([x], ref, { op: 'sum', axes: [1] });
      backend.run('reduce', [x], got, { op: 'sum', axes: [1] });
      expect(Array.from(got.data).findIndex((v, i) => !Object.is(v, ref.data[i]))).toBe(-1);
      if (n >= 2048) expect(backend.ranOn!('reduce', 'float32')).toBe(entry.name);
    }
  });

  it('a transposed dense view reduced over one axis (in storage order, then copied) gives the bits of its contiguous copy reduced', () => {
    for (const dtype of ['float32', 'float64'] as FloatDType[])
      for (const op of ['sum', 'max', 'absmax'] as ReduceOp[])
        for (const [shape, order, axis] of [[[16, 2, 2, 32, 128], [0, 1, 2, 4, 3], 2], [[6, 3, 40, 24], [2, 0, 3, 1], 1], [[5, 7, 64], [2, 1, 0], 2]] as [number[], number[], number][]) {
          const x = view(dtype, shape, order, 1, [], 99);
          const c = out(dtype, shape);
          jsKernels.copy([x], c, {});
          const outShape = shape.map((n, d) => (d === axis ? 1 : n));
          const [got, ref] = [out(dtype, outShape), out(dtype, outShape)];
          backend.run('reduce', [x], got, { op, axes: [axis] });
          backend.run('reduce', [c], ref, { op, axes: [axis] });
          expect(Array.from(got.data).findIndex((v, i) => !Object.is(v, ref.data[i]))).toBe(-1);
          expect(backend.ranOn!('reduce', dtype)).toBe(entry.name);
        }
  });

  it('propagates NaN through max, min and absmax; absmax takes |x| of negative values', () => {
    const data = new Float32Array(4096).map((_, i) => (i % 3 ? i : -2 * i));
    data[1234] = NaN;
    const x = { data, dtype: 'float32' as const, shape: [64, 64], strides: [64, 1], offset: 0 };
    for (const op of ['max', 'min', 'absmax'] as ReduceOp[])
      for (const axes of [[0], [1], [0, 1]]) {
        const shape = [axes.includes(0) ? 1 : 64, axes.includes(1) ? 1 : 64];
        const ref = out('float32', shape);
        const got = out('float32', shape);
        jsKernels.reduce([x], ref, { op, axes });
        backend.run('reduce', [x], got, { op, axes });
        expect(mismatch(got.data, ref.data, 0)).toBe(-1);
        if (op === 'absmax' && axes.length === 2) expect(Number.isNaN(got.data[0])).toBe(true);
      }
    const row = { data: Float32Array.from({ length: 4096 }, (_, i) => (i === 77 ? -5000 : i % 100)), dtype: 'float32' as const, shape: [4096], strides: [1], offset: 0 };
    const got = out('float32', [1]);
    backend.run('reduce', [row], got, { op: 'absmax', axes: [0] });
    expect(got.data[0]).toBe(5000);
    // −∞ gives +∞; a NaN of either sign (any payload) beats +∞, in a vector lane or in the scalar
    // tail (4099 = 512 passes of 8, then 3); rows (axis 1) and columns (axis 0) of the same data
    const negNaN = new Float32Array(new Uint32Array([0xffc00001]).buffer)[0]!;
    for (const [at, v, want] of [[77, -Infinity, Infinity], [78, negNaN, NaN], [4097, NaN, NaN], [4098, negNaN, NaN], [5, negNaN, NaN]] as const) {
      const d = Float32Array.from({ length: 4099 }, (_, i) => (i % 100) - 50);
      d[at] = v;
      if (want === Infinity) d[1000] = -Infinity;
      backend.run('reduce', [{ data: d, dtype: 'float32', shape: [4099], strides: [1], offset: 0 }], got, { op: 'absmax', axes: [0] });
      expect(got.data[0]).toBe(want);
      const cols = out('float32', [1, 4099]);
      const colsRef = out('float32', [1, 4099]);
      const x2 = { data: Float32Array.from({ length: 3 * 4099 }, (_, i) => d[i % 4099]! * (1 + Math.floor(i / 4099))), dtype: 'float32' as const, shape: [3, 4099], strides: [4099, 1], offset: 0 };
      backend.run('reduce', [x2], cols, { op: 'absmax', axes: [0] });
      jsKernels.reduce([x2], colsRef, { op: 'absmax', axes: [0] });
      expect(mismatch(cols.data, colsRef.data, 0)).toBe(-1);
      expect(backend.ranOn!('reduce', 'float32')).toBe(entry.name);
    }
  });
});
