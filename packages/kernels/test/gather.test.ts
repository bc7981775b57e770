/**
 * @file The gather family (gather, scatterAdd, indexSelect, indexAdd): wasm against the js
 * oracle on strided, transposed and broadcast views with repeated indices (bit for bit, and
 * checked to have run in wasm), the same out-of-range errors on both backends (negative indices
 * included, as PyTorch), and the js whole-row path against its element path.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsKernels, numel, type KernelName, type KernelParams, type Backend } from '@qgrad/kernels';
import { type Arg, type FloatDType, intView, mismatch, out, permutation, size, view, NATIVE, nativeCalls } from './helpers.js';

/** The backend under test (each of NATIVE in turn). */
let backend!: Backend;

const DTYPES: FloatDType[] = ['float32', 'float64'];
const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });
const offset = fc.integer({ min: 0, max: 3 });

/** A float view of `shape`: a random storage order, maybe offset, maybe broadcast along some dims. */
const floatView = (dtype: FloatDType, shape: number[]) =>
  fc.record({ order: permutation(shape.length), offset, bcast: fc.subarray(shape.map((_, d) => d)), seed }).map(({ order, offset, bcast, seed }) => view(dtype, shape, order, offset, bcast, seed));

const indexView = (shape: number[], size: number) =>
  fc.record({ order: permutation(shape.length), offset, gap: fc.integer({ min: 1, max: 2 }), seed }).map(({ order, offset, gap, seed }) => intView(shape, order, offset, gap, 0, size, seed));

/** Prepends a leading dim so `shape` has at least 2048 elements (where wasm starts). */
const padded = (shape: number[]) => (numel(shape) >= 2048 ? { shape, lead: 0 } : { shape: [Math.ceil(2048 / numel(shape)), ...shape], lead: 1 });

const nativeCallsOf = (kernel: KernelName, dtype: FloatDType) => nativeCalls(backend, kernel, dtype);

/** Runs both backends, expects equal bits, and that the call ran natively (not the js fallback). */
function same<K extends KernelName>(kernel: K, dtype: FloatDType, inputs: Arg[], outShape: number[], params: KernelParams[K]): void {
  const ref = out(dtype, outShape);
  const got = out(dtype, outShape);
  (jsKernels[kernel] as (i: Arg[], o: Arg, p: typeof params) => void)(inputs, ref, params);
  const before = nativeCallsOf(kernel, dtype);
  backend.run(kernel, inputs, got, params);
  expect(nativeCallsOf(kernel, dtype), `${kernel} ran natively`).toBe(before + 1);
  // moves are exact; additions happen in the same order on both backends
  expect(mismatch(got.data, ref.data, 0)).toBe(-1);
}

/** gather: index of out's shape; x as large as it outside `dim` (one dim maybe one larger), size ≤ the index's dim. */
const gatherCase = (dtype: FloatDType) =>
  fc.array(size(), { minLength: 1, maxLength: 3 }).chain((s0) => {
    const { shape } = padded(s0);
    return fc.record({ dim: fc.nat(shape.length - 1), frac: fc.double({ min: 0, max: 1, noNaN: true }), grow: fc.nat(shape.length) }).chain(({ dim, frac, grow }) => {
      const sz = 1 + Math.floor(frac * (shape[dim]! - 1));
      const xShape = shape.map((n, d) => (d === dim ? sz : d === grow ? n + 1 : n));
      return fc.record({ x: floatView(dtype, xShape), index: indexView(shape, sz), dim: fc.constant(dim) });
    });
  });

/** indexSelect: x and a 1-D index of length L ≥ half of x's dim (so the output outweighs the copies). */
const selectCase = (dtype: FloatDType) =>
  fc.record({ s: fc.array(size(), { minLength: 1, maxLength: 3 }), pick: fc.nat(2), extra: fc.integer({ min: 0, max: 70 }) }).chain(({ s, pick, extra }) => {
    const d0 = pick % s.length;
    const L = Math.ceil(s[d0]! / 2) + extra;
    const { shape: outShape, lead } = padded(s.map((n, d) => (d === d0 ? L : n)));
    const dim = d0 + lead;
    const xShape = outShape.map((n, d) => (d === dim ? s[d0]! : n));
    return fc.record({ x: floatView(dtype, xShape), index: indexView([L], s[d0]!), dim: fc.constant(dim), outShape: fc.constant(outShape) });
  });

/**
 * scatterAdd: base (= out) of rank 1-3 with ≥ 2048 elements; index with at least twice base's
 * size along `dim` (maybe one smaller elsewhere), so the additions outnumber the table; src as
 * large as the index or one larger in some dim.
 */
const scatterCase = (dtype: FloatDType) =>
  fc.array(size(), { minLength: 1, maxLength: 3 }).chain((s0) => {
    const { shape } = padded(s0);
    return fc.record({ dim: fc.nat(shape.length - 1), extra: fc.nat(3), shrink: fc.nat(shape.length), grow: fc.nat(shape.length) }).chain(({ dim, extra, shrink, grow }) => {
      const iShape = shape.map((n, d) => (d === dim ? 2 * n + extra : d === shrink && n > 1 ? n - 1 : n));
      const sShape = iShape.map((n, d) => (d === grow ? n + 1 : n));
      return fc.record({ base: floatView(dtype, shape), index: indexView(iShape, shape[dim]!), src: floatView(dtype, sShape), dim: fc.constant(dim) });
    });
  });

/** indexAdd: base of ≥ 2048 elements, a 1-D index at least as long as base's dim, src of base's shape with dim → L. */
const indexAddCase = (dtype: FloatDType) =>
  fc.array(size(), { minLength: 1, maxLength: 3 }).chain((s0) => {
    const { shape } = padded(s0);
    return fc.record({ dim: fc.nat(shape.length - 1), extra: fc.integer({ min: 0, max: 70 }) }).chain(({ dim, extra }) => {
      const L = shape[dim]! + extra;
      return fc.record({ base: floatView(dtype, shape), index: indexView([L], shape[dim]!), src: floatView(dtype, shape.map((n, d) => (d === dim ? L : n))), dim: fc.constant(dim) });
    });
  });

describe.each(NATIVE)('$label gather family', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => {
    backend.dispose();
  });

  for (const dtype of DTYPES) {
    it(`gather equals the js kernel bit for bit in ${dtype} (strided x and index)`, () => {
      fc.assert(
        fc.property(gatherCase(dtype), ({ x, index, dim }) => same('gather', dtype, [x, index], [...index.shape], { dim })),
        { numRuns: 60 },
      );
    });

    it(`scatterAdd equals the js kernel bit for bit in ${dtype} (repeated targets sum in index order)`, () => {
      fc.assert(
        fc.property(scatterCase(dtype), ({ base, index, src, dim }) => same('scatterAdd', dtype, [base, index, src], [...base.shape], { dim })),
        { numRuns: 60 },
      );
    });

    it(`indexSelect equals the js kernel bit for bit in ${dtype} on any dim of strided and broadcast views`, () => {
      fc.assert(
        fc.property(selectCase(dtype), ({ x, index, dim, outShape }) => same('indexSelect', dtype, [x, index], outShape, { dim })),
        { numRuns: 60 },
      );
    });

    it(`indexAdd equals the js kernel bit for bit in ${dtype} on any dim of strided and broadcast views`, () => {
      fc.assert(
        fc.property(indexAddCase(dtype), ({ base, index, src, dim }) => same('indexAdd', dtype, [base, index, src], [...base.shape], { dim })),
        { numRuns: 60 },
      );
    });
  }

  it('looks up and accumulates an embedding table (2048 ids into [256, 128]) in wasm', () => {
    const table = view('float32', [256, 128], [0, 1], 0, [], 7);
    const ids = intView([2048], [0], 0, 1, 0, 256, 11);
    same('indexSelect', 'float32', [table, ids], [2048, 128], { dim: 0 });
    same('indexAdd', 'float32', [out('float32', [256, 128]), ids, view('float32', [2048, 128], [0, 1], 0, [], 13)], [256, 128], { dim: 0 });
  });

  it('scatters into a table larger than the additions in wasm when table and out are in its memory (a gather backward), and on js when not', () => {
    const own = (x: Arg): Arg => {
      const data = backend.alloc(x.dtype, x.data.length) as Arg['data'];
      data.set(x.data as never);
      return { ...x, data };
    };
    for (const dtype of DTYPES) {
      // two picks per row, sometimes the same class twice: the sums' order matters
      const index = intView([2048, 2], [0, 1], 0, 1, 0, 256, 17);
      const src = view(dtype, [2048, 2], [0, 1], 0, [], 19);
      const base = view(dtype, [2048, 256], [0, 1], 0, [], 23);
      const ref = out(dtype, [2048, 256]);
      jsKernels.scatterAdd([base, index, src], ref, { dim: 1 });
      const got = own(out(dtype, [2048, 256]));
      const before = nativeCallsOf('scatterAdd', dtype);
      backend.run('scatterAdd', [own(base), index, src], got, { dim: 1 });
      expect(nativeCallsOf('scatterAdd', dtype), 'ran natively').toBe(before + 1);
      expect(mismatch(got.data, ref.data, 0)).toBe(-1);
      // in place: base is out
      const into = own(base);
      backend.run('scatterAdd', [into, index, src], into, { dim: 1 });
      expect(nativeCallsOf('scatterAdd', dtype)).toBe(before + 2);
      expect(mismatch(into.data, ref.data, 0)).toBe(-1);
      // a host table would be staged in and out whole for 4096 additions: js runs it (where
      // this suite's backend moves every operand into its memory first, wasm does)
      const host = out(dtype, [2048, 256]);
      backend.run('scatterAdd', [base, index, src], host, { dim: 1 });
      expect(nativeCallsOf('scatterAdd', dtype)).toBe(before + (entry.label.includes('own memory') ? 3 : 2));
      expect(mismatch(host.data, ref.data, 0)).toBe(-1);
    }
  });

  const message = (f: () => void): string => {
    try {
      f();
    } catch (e) {
      return e instanceof RangeError ? e.message : `not a RangeError: ${String(e)}`;
    }
    return 'no error';
  };

  // a negative index is out of range, as in PyTorch: counting it from the end would be a silent wrong row
  it('throws the js RangeError (op, index, [0, size)) for a negative or too large index on wasm-sized calls', () => {
    fc.assert(
      fc.property(fc.constantFrom(...DTYPES), fc.constantFrom(-1, -256, 256, -257, 1000, 2 ** 31 - 1, -(2 ** 31)), fc.nat(2047), (dtype, bad, at) => {
        const ids = intView([8192], [0], 0, 1, 0, 256, at + 1);
        ids.data[at] = bad;
        const table = view(dtype, [256, 64], [0, 1], 0, [], 3);
        const calls: [KernelName, Arg[], number[], number][] = [
          ['indexSelect', [table, { ...ids, shape: [2048] }], [2048, 64], 0],
          ['indexAdd', [out(dtype, [256, 64]), { ...ids, shape: [2048] }, view(dtype, [2048, 64], [0, 1], 0, [], 5)], [256, 64], 0],
          ['gather', [view(dtype, [64, 256], [1, 0], 0, [], 3), { ...ids, shape: [64, 128], strides: [128, 1] }], [64, 128], 1],
          ['scatterAdd', [out(dtype, [8, 256]), { ...ids, shape: [8, 256], strides: [256, 1] }, view(dtype, [8, 256], [0, 1], 0, [], 5)], [8, 256], 1],
        ];
        for (const [kernel, inputs, outShape, dim] of calls) {
          const expected = message(() => (jsKernels[kernel] as (i: Arg[], o: Arg, p: { dim: number }) => void)(inputs, out(dtype, outShape), { dim }));
          expect(expected).toBe(`${kernel}: index ${bad} is out of range [0, 256)`);
          expect(message(() => backend.run(kernel, inputs, out(dtype, outShape), { dim } as never))).toBe(expected);
          // the same call with the index made valid runs in wasm: the error came from the wasm path
          const before = nativeCallsOf(kernel, dtype);
          ids.data[at] = 0;
          backend.run(kernel, inputs, out(dtype, outShape), { dim } as never);
          ids.data[at] = bad;
          expect(nativeCallsOf(kernel, dtype), `${kernel} ran natively`).toBe(before + 1);
        }
      }),
      { numRuns: 20 },
    );
  });
});

describe('js gather family: the whole-row path', () => {
  /** The same values as `x`, stored transposed, so the kernel takes its element-by-element path. */
  const strided = (x: Arg): Arg => {
    const r = x.shape.length;
    const order = x.shape.map((_, i) => r - 1 - i);
    const v = view(x.dtype as FloatDType, [...x.shape], order, 1, [], 1);
    jsKernels.copy([x], v, {});
    return v;
  };

  for (const dtype of DTYPES) {
    it(`indexSelect and indexAdd on contiguous operands equal the element path bit for bit in ${dtype}`, () => {
      fc.assert(
        fc.property(
          fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 3 }),
          fc.nat(2),
          fc.integer({ min: 0, max: 50 }),
          seed,
          (shape, pick, L, s) => {
            const dim = pick % shape.length;
            const n = shape[dim]!;
            const x = view(dtype, shape, shape.map((_, i) => i), 0, [], s);
            const ids = intView([L], [0], 0, 1, 0, n, s);
            const outShape = shape.map((m, d) => (d === dim ? L : m));
            const fast = out(dtype, outShape);
            const slow = out(dtype, outShape);
            jsKernels.indexSelect([x, ids], fast, { dim });
            jsKernels.indexSelect([strided(x), ids], slow, { dim });
            expect(mismatch(fast.data, slow.data, 0)).toBe(-1);
            const src = view(dtype, outShape, outShape.map((_, i) => i), 0, [], s + 1);
            const fastAdd = out(dtype, shape);
            const slowAdd = out(dtype, shape);
            jsKernels.indexAdd([x, ids, src], fastAdd, { dim });
            jsKernels.indexAdd([x, ids, strided(src)], slowAdd, { dim });
            expect(mismatch(fastAdd.data, slowAdd.data, 0)).toBe(-1);
          },
        ),
        { numRuns: 150 },
      );
    });
  }

  it('names the first out-of-range index in index order on both paths, and reads no index for an empty output', () => {
    const x = view('float64', [4, 3], [0, 1], 0, [], 2);
    const ids: Arg = { data: Int32Array.from([1, -1, 9]), dtype: 'int32', shape: [3], strides: [1], offset: 0 };
    for (const v of [x, strided(x)]) {
      expect(() => jsKernels.indexSelect([v, ids], out('float64', [3, 3]), { dim: 0 })).toThrow(new RangeError('indexSelect: index -1 is out of range [0, 4)'));
      expect(() => jsKernels.indexAdd([v, ids, out('float64', [3, 3])], out('float64', [4, 3]), { dim: 0 })).toThrow(new RangeError('indexAdd: index -1 is out of range [0, 4)'));
    }
    // an empty output reads no index (the general path's behaviour, kept by the row path)
    const none = view('float64', [0, 3], [0, 1], 0, [], 2);
    for (const v of [none, strided(none)]) expect(() => jsKernels.indexSelect([v, ids], out('float64', [0, 3]), { dim: 1 })).not.toThrow();
  });
});
