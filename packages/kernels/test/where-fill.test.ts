/**
 * @file wasm `where` (uint8 condition, float a and b, all broadcast by strides) against the js
 * oracle bit for bit, checked to have run in wasm; `fill` through the wasm backend (which keeps
 * it on js's TypedArray.fill, see wasm/elementwise.ts).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contiguousStrides, jsKernels, numel, type Backend } from '@qgrad/kernels';
import { type Arg, type FloatDType, mismatch, out, permutation, size, view, NATIVE, nativeCalls } from './helpers.js';

/** The backend under test (each of NATIVE in turn). */
let backend!: Backend;

const DTYPES: FloatDType[] = ['float32', 'float64'];
const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/** Rank 1-4 from awkward sizes, padded with a leading dim so wasm (≥ 2048 elements) runs. */
const shape = fc.array(size(), { minLength: 1, maxLength: 4 }).filter((s) => numel(s) <= 40_000).map((s) => (numel(s) >= 2048 ? s : [Math.ceil(2048 / numel(s)), ...s]));

/** A uint8 condition like `view`: storage order, offset, broadcast dims; values 0, 1, 2 or 255. */
function condView(shape: number[], order: number[], offset: number, broadcast: number[], seed: number): Arg {
  const stored = shape.map((n, d) => (broadcast.includes(d) ? 1 : n));
  const storage = contiguousStrides(order.map((d) => stored[d]!));
  const strides = shape.map(() => 0);
  order.forEach((d, i) => (strides[d] = broadcast.includes(d) ? 0 : storage[i]!));
  const data = new Uint8Array(offset + numel(stored));
  let s = seed >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = [0, 1, 2, 255][(s >>> 0) % 4]!;
  }
  return { data, dtype: 'uint8', shape, strides, offset };
}

const layout = (s: number[]) => fc.record({ order: permutation(s.length), offset: fc.integer({ min: 0, max: 3 }), bcast: fc.subarray(s.map((_, d) => d)), seed });

// the backend files its calls under inputs[0]'s dtype: the condition's
const nativeCallsOf = () => nativeCalls(backend, 'where', 'uint8');

function same(dtype: FloatDType, c: Arg, a: Arg, b: Arg): void {
  const ref = out(dtype, [...a.shape]);
  const got = out(dtype, [...a.shape]);
  jsKernels.where([c, a, b], ref, {});
  const before = nativeCallsOf();
  backend.run('where', [c, a, b], got, {});
  expect(nativeCallsOf(), 'where ran natively').toBe(before + 1);
  expect(mismatch(got.data, ref.data, 0)).toBe(-1);
}

describe.each(NATIVE)('$label where', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => {
    backend.dispose();
  });

  for (const dtype of DTYPES) {
    it(`equals the js kernel bit for bit in ${dtype} with transposed and broadcast condition and operands`, () => {
      fc.assert(
        fc.property(
          shape.chain((s) => fc.record({ s: fc.constant(s), lc: layout(s), la: layout(s), lb: layout(s) })),
          ({ s, lc, la, lb }) => {
            const c = condView(s, lc.order, lc.offset, lc.bcast, lc.seed);
            const a = view(dtype, s, la.order, la.offset, la.bcast, la.seed);
            const b = view(dtype, s, lb.order, lb.offset, lb.bcast, lb.seed);
            same(dtype, c, a, b);
          },
        ),
        { numRuns: 120 },
      );
    });
  }

  it('masks attention scores ([16, 4, 128, 128], causal [128, 128] condition, -Infinity or a full b) in wasm', () => {
    const s = [16, 4, 128, 128];
    const causal: Arg = { data: Uint8Array.from({ length: 128 * 128 }, (_, i) => (i % 128 <= i >> 7 ? 1 : 0)), dtype: 'uint8', shape: s, strides: [0, 0, 128, 1], offset: 0 };
    for (const dtype of DTYPES) {
      const a = view(dtype, s, [0, 1, 2, 3], 0, [], 3);
      const minusInf: Arg = { data: dtype === 'float32' ? new Float32Array([-Infinity]) : new Float64Array([-Infinity]), dtype, shape: s, strides: [0, 0, 0, 0], offset: 0 };
      same(dtype, causal, a, minusInf);
      same(dtype, causal, a, view(dtype, s, [0, 1, 3, 2], 1, [], 4));
    }
  });

  it('passes NaN, infinities and signed zeros through unchanged', () => {
    const vals = [NaN, Infinity, -Infinity, 0, -0, 1.5];
    for (const dtype of DTYPES) {
      const make = (k: number) => {
        const x = out(dtype, [4099]);
        x.data.forEach((_, i) => (x.data[i] = vals[(i + k) % vals.length]!));
        return x;
      };
      const c = condView([4099], [0], 0, [], 9);
      const ref = out(dtype, [4099]);
      const got = out(dtype, [4099]);
      jsKernels.where([c, make(0), make(1)], ref, {});
      const before = nativeCallsOf();
      backend.run('where', [c, make(0), make(1)], got, {});
      expect(nativeCallsOf()).toBe(before + 1);
      for (let i = 0; i < 4099; i++) expect(Object.is(got.data[i], ref.data[i]), `element ${i}`).toBe(true);
    }
  });

  it('leaves other condition dtypes and small outputs to js', () => {
    const s = [64, 64];
    const a = view('float32', s, [0, 1], 0, [], 1);
    const b = view('float32', s, [1, 0], 0, [], 2);
    const fc32 = view('float32', s, [0, 1], 0, [], 3); // a float condition
    const ref = out('float32', s);
    const got = out('float32', s);
    jsKernels.where([fc32, a, b], ref, {});
    backend.run('where', [fc32, a, b], got, {});
    expect(mismatch(got.data, ref.data, 0)).toBe(-1);
    expect(backend.ranOn!('where', 'float32')).toBe('js');
    const small = condView([3, 5], [0, 1], 0, [], 4);
    backend.run('where', [small, view('float32', [3, 5], [0, 1], 0, [], 5), view('float32', [3, 5], [0, 1], 0, [], 6)], out('float32', [3, 5]), {});
    expect(backend.ranOn!('where', 'uint8')).toBe('js');
  });
});

describe.each(NATIVE)('$label fill', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => {
    backend.dispose();
  });

  it('writes the value over exactly the output view, in both float dtypes', () => {
    for (const dtype of DTYPES)
      for (const value of [0, -0, 0.1, -Infinity, NaN]) {
        const data = dtype === 'float32' ? new Float32Array(5000).fill(7) : new Float64Array(5000).fill(7);
        const o: Arg = { data, dtype, shape: [49, 100], strides: [100, 1], offset: 50 };
        backend.run('fill', [], o, { value });
        const want = dtype === 'float32' ? Math.fround(value) : value;
        for (let i = 0; i < 5000; i++) expect(Object.is(data[i], i < 50 || i >= 4950 ? 7 : want), `element ${i}`).toBe(true);
      }
  });
});
