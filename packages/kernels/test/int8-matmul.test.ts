/**
 * @file int8Matmul: the js oracle against the float64 matmul of the same integers, each native
 * backend bit for bit against the oracle (fast-check over shapes around the SIMD widths and k
 * blocks, odd K, transposed and sliced layouts, int32 and scaled float32 outs), threads changing
 * nothing, and the operand errors.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWasmBackend, INT8_MATMUL_MAX_K, jsKernels, type Backend } from '@qgrad/kernels';
import { type Arg, NATIVE, nativeCalls, randomArray, size } from './helpers.js';

interface Case {
  M: number;
  K: number;
  N: number;
  /** a stored as [K, M] (a transposed view), b as [N, K] (a weight [out, in] read as Wᵀ). */
  ta: boolean;
  tb: boolean;
  /** Every stride of a multiplied by this (a sliced view), and a's first element at `offset`. */
  gap: number;
  offset: number;
  /** int32 out, or float32 scaled per row and column. */
  scaled: boolean;
  /** float32 operands quantized by the kernel with the scales (scaled out only). */
  floatIn: boolean;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  M: size(),
  // odd K, K around the 8-k vector step, and K past one k block (256 pairs)
  K: fc.oneof(size(), fc.constantFrom(7, 8, 9, 15, 16, 17, 31, 32, 33), fc.integer({ min: 500, max: 700 })),
  N: size(),
  ta: fc.boolean(),
  tb: fc.boolean(),
  gap: fc.constantFrom(1, 1, 2),
  offset: fc.constantFrom(0, 3),
  scaled: fc.boolean(),
  floatIn: fc.boolean(),
  seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
}).map((c) => (c.floatIn ? { ...c, scaled: true } : c));

/** int8 values over the whole range, −128 included, from a seed. */
function int8s(n: number, seed: number): Int8Array {
  const r = randomArray('float64', n, seed);
  return Int8Array.from(r, (v) => Math.min(127, Math.floor(v * 128)));
}

/** A [rows, cols] int8 view stored row-major, or transposed ([cols, rows] storage), strides × gap, from offset. */
function int8View(rows: number, cols: number, transposed: boolean, gap: number, offset: number, seed: number): Arg {
  const data = int8s(offset + rows * cols * gap, seed);
  const strides = (transposed ? [1, rows] : [cols, 1]).map((s) => s * gap);
  return { data, dtype: 'int8', shape: [rows, cols], strides, offset };
}

const flat32 = (data: Float32Array): Arg => ({ data, dtype: 'float32', shape: [data.length], strides: [1], offset: 0 });

/**
 * x as float32 entries s·u of its line's scale s, u on a half-integer grid past ±127 (ties and
 * clamping) or anywhere (ordinary rounding).
 */
function floatOf(x: Arg, lineScale: (r: number, c: number) => number, seed: number): Arg {
  const r = randomArray('float64', x.data.length, seed);
  const data = new Float32Array(x.data.length);
  const [rows, cols] = x.shape as [number, number];
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const at = x.offset + i * x.strides[0]! + j * x.strides[1]!;
      const v = r[at]!;
      const u = at % 3 === 0 ? v * 140 : Math.round(v * 280) / 2;
      data[at] = u * lineScale(i, j);
    }
  }
  return { ...x, data, dtype: 'float32' };
}

function operands(c: Case): Arg[] {
  let a = int8View(c.M, c.K, c.ta, c.gap, c.offset, c.seed);
  let b = int8View(c.K, c.N, c.tb, 1, 0, c.seed ^ 0x5a5a);
  if (!c.scaled) return [a, b];
  // scales spanning magnitudes, so float32 rounding of sᵢ·tⱼ and of the product both show
  const sa = Float32Array.from(randomArray('float64', c.M, c.seed ^ 0x11), (v) => 2 ** (8 * v) / 127);
  const sb = Float32Array.from(randomArray('float64', c.N, c.seed ^ 0x22), (v) => 2 ** (8 * v) / 127);
  if (c.floatIn) {
    a = floatOf(a, (i) => sa[i]!, c.seed ^ 0x33);
    b = floatOf(b, (_, j) => sb[j]!, c.seed ^ 0x44);
  }
  return [a, b, flat32(sa), flat32(sb)];
}

function outOf(c: Case): Arg {
  const data = c.scaled ? new Float32Array(c.M * c.N) : new Int32Array(c.M * c.N);
  return { data, dtype: c.scaled ? 'float32' : 'int32', shape: [c.M, c.N], strides: [c.N, 1], offset: 0 };
}

/** The codes of a float operand, clamp(round½even(x / s), ±127) recomputed in float64 (the float32 quotient is fround of it), as a float64 view. */
function codesOf(x: Arg, scale: (i: number, j: number) => number): Arg {
  const data = new Float64Array(x.data.length);
  const [rows, cols] = x.shape as [number, number];
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const at = x.offset + i * x.strides[0]! + j * x.strides[1]!;
      const u = Math.fround(x.data[at]! / scale(i, j));
      const r = Math.round(u) - (Math.abs(u % 1) === 0.5 && Math.round(u) % 2 !== 0 ? 1 : 0);
      data[at] = Math.max(-127, Math.min(127, r));
    }
  }
  return { ...x, dtype: 'float64', data };
}

/** The same integers as float64 views of the same layout. */
const asFloat64 = (x: Arg): Arg => ({ ...x, dtype: 'float64', data: Float64Array.from(x.data) });

describe('int8Matmul js oracle', () => {
  it('equals the float64 matmul of the same integers (or of float operands\' codes) exactly, and scales as f32(f32(acc)·f32(s·t))', () => {
    fc.assert(
      fc.property(caseArb.filter((c) => c.M * c.K * c.N < 1 << 20), (c) => {
        const inputs = operands(c);
        const ref: Arg = { data: new Float64Array(c.M * c.N), dtype: 'float64', shape: [c.M, c.N], strides: [c.N, 1], offset: 0 };
        const [qa, qb] = c.floatIn ? [codesOf(inputs[0]!, (i) => inputs[2]!.data[i]!), codesOf(inputs[1]!, (_, j) => inputs[3]!.data[j]!)] : [asFloat64(inputs[0]!), asFloat64(inputs[1]!)];
        jsKernels.matmul([qa, qb], ref, {});
        const got = outOf(c);
        jsKernels.int8Matmul(inputs, got, {});
        for (let i = 0; i < c.M; i++) {
          for (let j = 0; j < c.N; j++) {
            const acc = ref.data[i * c.N + j]!;
            const want = c.scaled ? Math.fround(Math.fround(acc) * Math.fround(inputs[2]!.data[i]! * inputs[3]!.data[j]!)) : acc;
            if (got.data[i * c.N + j] !== want) expect([i, j, got.data[i * c.N + j]]).toEqual([i, j, want]);
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  it('holds the extreme case exactly: K = 131071 products of −128 · −128 reach 2³¹ − 16384', () => {
    const K = INT8_MATMUL_MAX_K;
    const a: Arg = { data: new Int8Array(K).fill(-128), dtype: 'int8', shape: [1, K], strides: [K, 1], offset: 0 };
    const b: Arg = { ...a, shape: [K, 1], strides: [1, 1] };
    const out: Arg = { data: new Int32Array(1), dtype: 'int32', shape: [1, 1], strides: [1, 1], offset: 0 };
    jsKernels.int8Matmul([a, b], out, {});
    expect(out.data[0]).toBe(K * 16384);
    expect(K * 16384).toBeLessThan(2 ** 31);
  });

  it('names the kernel and both shapes in its errors', () => {
    const c: Case = { M: 2, K: 3, N: 4, ta: false, tb: false, gap: 1, offset: 0, scaled: false, floatIn: false, seed: 1 };
    const [a, b] = operands(c) as [Arg, Arg];
    const run = (ins: Arg[], out: Arg = outOf(c)) => () => jsKernels.int8Matmul(ins, out, {});
    expect(run([a, { ...b, shape: [4, 4] }])).toThrow(/int8Matmul: inner sizes differ: a \[2, 3\] · b \[4, 4\]/);
    expect(run([asFloat64(a), b])).toThrow(/int8Matmul: a must be a 2-D int8 tensor \(or float, quantized by the scales, of out's dtype\), got float64 \[2, 3\] for a int32 out/);
    expect(run([a, b], { ...outOf(c), shape: [2, 5] })).toThrow(/int8Matmul: out must be \[2, 4\]/);
    expect(run([a, b], outOf({ ...c, scaled: true }))).toThrow(/int8Matmul: a float32 out takes inputs \[a, b, scaleA, scaleB\], got 2/);
    expect(run([a, b, flat32(new Float32Array(3)), flat32(new Float32Array(4))], outOf({ ...c, scaled: true }))).toThrow(/int8Matmul: scaleA must be float32 \[2\], got float32 \[3\]/);
    const K = INT8_MATMUL_MAX_K + 1;
    const big: Arg = { data: new Int8Array(K), dtype: 'int8', shape: [1, K], strides: [K, 1], offset: 0 };
    expect(() => jsKernels.int8Matmul([big, { ...big, shape: [K, 1], strides: [1, 1] }], { ...outOf(c), shape: [1, 1] }, {})).toThrow(/int8Matmul: K = 131072 exceeds 131071/);
  });
});

describe.each(NATIVE)('$label int8Matmul', (entry) => {
  let backend!: Backend;
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => backend.dispose());

  it('equals the js oracle bit for bit, natively, for every layout, odd K and both outs', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const inputs = operands(c);
        const [want, got] = [outOf(c), outOf(c)];
        jsKernels.int8Matmul(inputs, want, {});
        const before = nativeCalls(backend, 'int8Matmul', inputs[0]!.dtype);
        backend.run('int8Matmul', inputs, got, {});
        expect(nativeCalls(backend, 'int8Matmul', inputs[0]!.dtype)).toBe(before + 1);
        const i = got.data.findIndex((v, j) => !Object.is(v, want.data[j]));
        if (i >= 0) expect([i, got.data[i]]).toEqual([i, want.data[i]]);
      }),
      { numRuns: 150 },
    );
  });

  it('checks operands before running (the same errors as js)', () => {
    const c: Case = { M: 2, K: 3, N: 4, ta: false, tb: false, gap: 1, offset: 0, scaled: false, floatIn: false, seed: 1 };
    const [a, b] = operands(c) as [Arg, Arg];
    expect(() => backend.run('int8Matmul', [a, { ...b, shape: [4, 4] }], outOf(c), {})).toThrow(/int8Matmul: inner sizes differ/);
  });
});

describe('wasm int8Matmul over threads', () => {
  it('splits tiles over the pool without changing any result', () => {
    const one = createWasmBackend({ threads: 1 });
    const two = createWasmBackend({ threads: 2 });
    try {
      for (const c of [
        { M: 300, K: 257, N: 130, ta: false, tb: true, gap: 1, offset: 0, scaled: true, floatIn: true, seed: 5 },
        { M: 128, K: 1030, N: 200, ta: true, tb: false, gap: 1, offset: 0, scaled: false, floatIn: false, seed: 6 },
      ]) {
        const inputs = operands(c);
        const [x, y, z] = [outOf(c), outOf(c), outOf(c)];
        one.run('int8Matmul', inputs, x, {});
        two.run('int8Matmul', inputs, y, {});
        jsKernels.int8Matmul(inputs, z, {});
        expect(Array.from(y.data)).toEqual(Array.from(x.data));
        expect(Array.from(x.data)).toEqual(Array.from(z.data));
      }
      if (two.threads > 1) expect(two.stats!().find((s) => s.kernel === 'int8Matmul')!.pooled).toBeGreaterThan(0);
    } finally {
      one.dispose();
      two.dispose();
    }
  });
});
