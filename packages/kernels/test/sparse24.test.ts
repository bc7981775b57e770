/**
 * @file sparse24Matmul on the native backends against the js oracle (which sums in float64 and
 * rounds once): float32 within float32 summation error, (K/2 + 4)·2⁻²⁴·(Σ|v·x| + |b|), as a
 * property over shapes around the chunk (eight inputs), row-block (four rows of x) and panel
 * (eight rows of x) sizes, rows of indices starting mid-byte (K ≡ 4 mod 8), offsets and bias; a
 * batched row equals the same row alone and threads change nothing, bit for bit; float64 falls
 * back to the oracle.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWasmBackend, jsKernels, pack24, type Backend } from '@qgrad/kernels';
import { type Arg, NATIVE, nativeCalls, randomArray } from './helpers.js';

interface Case {
  N: number;
  O: number;
  K: number;
  bias: boolean;
  /** x's first element at this offset of its buffer. */
  offset: number;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  N: fc.oneof(fc.constantFrom(1, 3, 4, 5, 8, 9, 16, 21), fc.integer({ min: 1, max: 30 })),
  O: fc.integer({ min: 1, max: 19 }),
  K: fc.oneof(fc.constantFrom(4, 8, 12, 16, 20, 24, 28, 36), fc.integer({ min: 1, max: 90 }).map((k) => 4 * k)),
  bias: fc.boolean(),
  offset: fc.constantFrom(0, 3),
  seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
});

/** The operands of a case: x [N, K], a 2:4 weight of 0, 1 or 2 survivors per group (pack24), bias. */
function operands(c: Case, dtype: 'float32' | 'float64' = 'float32'): { inputs: Arg[]; dense: Float64Array } {
  const { N, O, K } = c;
  const xs = randomArray(dtype, c.offset + N * K, c.seed);
  const w = randomArray(dtype, O * K, c.seed + 1);
  let s = c.seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  for (let g = 0; g < w.length; g += 4) {
    const keep = next() % 3;
    const order = [0, 1, 2, 3].sort(() => (next() & 1) - 0.5);
    for (let j = keep; j < 4; j++) w[g + order[j]!] = 0;
  }
  const p = pack24(w, O, K);
  const inputs: Arg[] = [
    { data: xs, dtype, shape: [N, K], strides: [K, 1], offset: c.offset },
    { data: p.values, dtype, shape: [O, K / 2], strides: [K / 2, 1], offset: 0 },
    { data: p.indices, dtype: 'uint8', shape: [p.indices.length], strides: [1], offset: 0 },
  ];
  if (c.bias) inputs.push({ data: randomArray(dtype, O, c.seed + 2), dtype, shape: [O], strides: [1], offset: 0 });
  return { inputs, dense: Float64Array.from(w) };
}

const outOf = (c: Case, dtype: 'float32' | 'float64' = 'float32'): Arg => ({ data: dtype === 'float32' ? new Float32Array(c.N * c.O) : new Float64Array(c.N * c.O), dtype, shape: [c.N, c.O], strides: [c.O, 1], offset: 0 });
const params = (c: Case) => ({ outFeatures: c.O, bias: c.bias });

/** The float32-summation bound per output: (K/2 + 4)·2⁻²⁴·(Σ|w·x| + |b|). */
function bounds(c: Case, inputs: Arg[], dense: Float64Array): Float64Array {
  const [x, , , b] = inputs;
  const out = new Float64Array(c.N * c.O);
  for (let n = 0; n < c.N; n++) {
    for (let o = 0; o < c.O; o++) {
      let mag = b ? Math.abs(b.data[o]!) : 0;
      for (let k = 0; k < c.K; k++) mag += Math.abs(dense[o * c.K + k]! * x!.data[x!.offset + n * c.K + k]!);
      out[n * c.O + o] = (c.K / 2 + 4) * 2 ** -24 * mag;
    }
  }
  return out;
}

describe.each(NATIVE)('$label sparse24Matmul', (entry) => {
  let backend!: Backend;
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => backend.dispose());

  it('equals the js oracle within float32 summation error, natively, over shapes, offsets and bias', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const { inputs, dense } = operands(c);
        const [want, got] = [outOf(c), outOf(c)];
        jsKernels.sparse24Matmul(inputs, want, params(c));
        const before = nativeCalls(backend, 'sparse24Matmul', 'float32');
        backend.run('sparse24Matmul', inputs, got, params(c));
        expect(nativeCalls(backend, 'sparse24Matmul', 'float32')).toBe(before + 1);
        const tol = bounds(c, inputs, dense);
        const i = got.data.findIndex((v, j) => !(Math.abs(v - want.data[j]!) <= tol[j]!));
        if (i >= 0) expect([i, got.data[i]]).toEqual([i, want.data[i]]);
      }),
      { numRuns: 200 },
    );
  });

  it('gives a row of a batch exactly what that row gives alone (packed panels of eight rows, the rest gathered)', () => {
    const c: Case = { N: 19, O: 13, K: 52, bias: true, offset: 0, seed: 11 };
    const { inputs } = operands(c);
    const all = outOf(c);
    backend.run('sparse24Matmul', inputs, all, params(c));
    for (const n of [0, 7, 9, 16, 18]) {
      const one = { ...c, N: 1 };
      const x = inputs[0]!;
      const row = outOf(one);
      backend.run('sparse24Matmul', [{ ...x, shape: [1, c.K], offset: n * c.K }, ...inputs.slice(1)], row, params(one));
      expect(Array.from(row.data)).toEqual(Array.from(all.data.subarray(n * c.O, (n + 1) * c.O)));
    }
  });

  it('hands float64 to the oracle (bit for bit) and checks operands first', () => {
    const c: Case = { N: 3, O: 5, K: 24, bias: true, offset: 0, seed: 4 };
    const { inputs } = operands(c, 'float64');
    const [want, got] = [outOf(c, 'float64'), outOf(c, 'float64')];
    jsKernels.sparse24Matmul(inputs, want, params(c));
    backend.run('sparse24Matmul', inputs, got, params(c));
    expect(Array.from(got.data)).toEqual(Array.from(want.data));
    const f32 = operands(c).inputs;
    expect(() => backend.run('sparse24Matmul', f32.slice(0, 3), outOf(c), params(c))).toThrow(/sparse24Matmul: expected 4 inputs \(x, values, indices, bias\), got 3/);
  });
});

describe('wasm sparse24Matmul over threads', () => {
  it('splits weight rows over the pool without changing any result', () => {
    const one = createWasmBackend({ threads: 1 });
    const two = createWasmBackend({ threads: 2 });
    try {
      for (const c of [
        { N: 1, O: 1030, K: 1028, bias: true, offset: 0, seed: 5 },
        { N: 9, O: 301, K: 260, bias: false, offset: 3, seed: 6 },
      ]) {
        const { inputs } = operands(c);
        const [x, y] = [outOf(c), outOf(c)];
        one.run('sparse24Matmul', inputs, x, params(c));
        two.run('sparse24Matmul', inputs, y, params(c));
        expect(Array.from(y.data)).toEqual(Array.from(x.data));
      }
      if (two.threads > 1) expect(two.stats!().find((s) => s.kernel === 'sparse24Matmul')!.pooled).toBeGreaterThan(0);
    } finally {
      one.dispose();
      two.dispose();
    }
  });
});
