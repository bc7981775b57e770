/**
 * @file wasm matmul against the js oracle: strided/transposed/batched views, f32 and f64,
 * thread-count determinism, relaxed vs plain SIMD, skinny products read in place, scratch chunking
 * and the tiny-size fallback.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWasmBackend, jsKernels, numel, type Backend, type TypedArray } from '@qgrad/kernels';
import { type Arg, type FloatDType, mismatch, NATIVE, out, size, view } from './helpers.js';

/** The backend under test (each of NATIVE in turn), on one and two threads, without size cut-overs. */
let one!: Backend;
let two!: Backend;

const abs = (x: Arg): Arg => ({ ...x, data: x.data.map(Math.abs) });

/** src copied into memory `be` allocated, where a tensor of that backend keeps its data. */
const resident = (be: Backend, src: Arg): Arg => {
  const data = be.alloc(src.dtype, src.data.length) as TypedArray;
  data.set(src.data);
  return { ...src, data };
};

/**
 * a [M, K] · b [K, N] on each backend with both operands resident there; the first result is
 * checked against the js oracle within 2·K·eps·Σ|a||b|. Returns the results, for the caller's
 * bit-for-bit comparisons among them.
 */
function residentProducts(backends: Backend[], a: Arg, b: Arg, dtype: FloatDType): Arg[] {
  const [M, K] = a.shape as [number, number];
  const N = b.shape[1]!;
  const ref = out(dtype, [M, N]);
  const bound = out(dtype, [M, N]);
  jsKernels.matmul([a, b], ref, {});
  jsKernels.matmul([abs(a), abs(b)], bound, {});
  const eps = dtype === 'float32' ? 2 ** -24 : 2 ** -53;
  const results = backends.map((be) => {
    const got = out(dtype, [M, N]);
    be.run('matmul', [resident(be, a), resident(be, b)], got, {});
    return got;
  });
  expect(mismatch(results[0]!.data, ref.data, 0, bound.data.map((v) => 2 * K * eps * v + 1e-30))).toBe(-1);
  return results;
}

/** Matmul operands: a [..., M, K] and b [..., K, N], each maybe transposed, offset, batch-broadcast. */
const operands = (dtype: FloatDType) =>
  fc
    .record({
      batch: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
      M: size(),
      K: size(),
      N: size(),
      transA: fc.boolean(),
      transB: fc.boolean(),
      broadcastB: fc.boolean(),
      offset: fc.integer({ min: 0, max: 5 }),
      seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    })
    .map(({ batch, M, K, N, transA, transB, broadcastB, offset, seed }) => {
      const r = batch.length + 2;
      const order = (t: boolean) => [...batch.map((_, i) => i), ...(t ? [r - 1, r - 2] : [r - 2, r - 1])];
      const a = view(dtype, [...batch, M, K], order(transA), offset, [], seed);
      const b = view(dtype, [...batch, K, N], order(transB), 0, broadcastB ? batch.map((_, i) => i) : [], seed + 1);
      return { a, b, shape: [...batch, M, N], K };
    });

describe.each(NATIVE)('$label matmul', (entry) => {
  beforeAll(() => {
    one = entry.create({ threads: 1, eager: true });
    two = entry.create({ threads: 2, eager: true });
  });
  afterAll(() => {
    one.dispose();
    two.dispose();
  });

  for (const dtype of ['float32', 'float64'] as const) {
    it(`equals the js matmul in ${dtype} on transposed, offset and batch-broadcast views`, () => {
      // error bound of a length-K dot product: K·eps·Σ|a||b|
      const eps = dtype === 'float32' ? 2 ** -24 : 2 ** -53;
      fc.assert(
        fc.property(operands(dtype), ({ a, b, shape, K }) => {
          const ref = out(dtype, shape);
          const bound = out(dtype, shape);
          const got = out(dtype, shape);
          jsKernels.matmul([a, b], ref, {});
          jsKernels.matmul([abs(a), abs(b)], bound, {});
          one.run('matmul', [a, b], got, {});
          const atol = bound.data.map((v) => 2 * K * eps * v + 1e-30);
          expect(mismatch(got.data, ref.data, 0, atol)).toBe(-1);
        }),
        { numRuns: 120 },
      );
      expect(one.ranOn!('matmul', dtype)).toBe(entry.name);
    });
  }

  it('gives bit-identical results with 1 and 2 threads', () => {
    expect((two as { threads?: number }).threads).toBe(2);
    // all above the size where the 2-thread backend actually wakes its worker
    const cases: [number[], number, number, number][] = [
      [[], 200, 300, 150],
      [[], 257, 513, 129],
      [[8], 65, 129, 160],
      [[2, 3], 70, 200, 133],
    ];
    for (const [batch, M, K, N] of cases) {
      const r = batch.length + 2;
      const ord = [...batch.map((_, i) => i), r - 2, r - 1];
      const a = view('float32', [...batch, M, K], ord, 0, [], M);
      const b = view('float32', [...batch, K, N], ord, 0, [], N);
      const x = out('float32', [...batch, M, N]);
      const y = out('float32', [...batch, M, N]);
      one.run('matmul', [a, b], x, {});
      two.run('matmul', [a, b], y, {});
      expect(numel(x.shape)).toBeGreaterThan(0);
      expect(Buffer.from(x.data.buffer).equals(Buffer.from(y.data.buffer))).toBe(true);
    }
  });

  it.runIf(entry.name === 'wasm')('agrees between the relaxed-FMA and plain-SIMD paths within 2·K·eps·Σ|a||b|', () => {
    const plain = createWasmBackend({ threads: 1, relaxed: false, matmulMinMacs: 0 });
    expect(plain.relaxed).toBe(false);
    try {
      fc.assert(
        fc.property(operands('float32'), ({ a, b, shape, K }) => {
          const x = out('float32', shape);
          const y = out('float32', shape);
          const bound = out('float32', shape);
          one.run('matmul', [a, b], x, {});
          plain.run('matmul', [a, b], y, {});
          jsKernels.matmul([abs(a), abs(b)], bound, {});
          expect(mismatch(x.data, y.data, 0, bound.data.map((v) => 2 * K * 2 ** -24 * v + 1e-30))).toBe(-1);
        }),
        { numRuns: 40 },
      );
    } finally {
      plain.dispose();
    }
  });

  it.runIf(entry.name === 'wasm')('reads the large operand of a skinny product in place, bit for bit as packing it, in both dtypes and on 1 and 2 threads', () => {
    // operands in wasm memory (where the in-place read applies): M a multiple of 4 with N ≤ 16, or
    // M ≤ 8 with N a multiple of 8, each operand plain or transposed, at an offset
    const packed = createWasmBackend({ threads: 1, matmulMinMacs: 0, matmulDirect: false });
    const skinny = fc.record({
      wideA: fc.boolean(),
      long: fc.integer({ min: 1, max: 80 }),
      short: fc.integer({ min: 1, max: 16 }),
      K: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 250, max: 600 })),
      transA: fc.boolean(),
      transB: fc.boolean(),
      offset: fc.integer({ min: 0, max: 5 }),
      dtype: fc.constantFrom<FloatDType>('float32', 'float64'),
      seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    });
    try {
      fc.assert(
        fc.property(skinny, ({ wideA, long, short, K, transA, transB, offset, dtype, seed }) => {
          const [M, N] = wideA ? [4 * long, short] : [Math.min(short, 8), 8 * Math.ceil(long / 8)];
          const a = view(dtype, [M, K], transA ? [1, 0] : [0, 1], offset, [], seed);
          const b = view(dtype, [K, N], transB ? [1, 0] : [0, 1], 0, [], seed + 1);
          const results = residentProducts([one, two, packed], a, b, dtype);
          // x·Wᵀ with up to four rows of x (rows of a and W contiguous in k) takes the matvec path,
          // whose dot products sum in another order than the micro-kernel: there only 1 = 2 threads
          const matvec = dtype === 'float32' && M <= 4 && a.strides[1] === 1 && b.strides[0] === 1;
          for (const r of results.slice(1, matvec ? 2 : 3)) expect(Buffer.from(r.data.buffer).equals(Buffer.from(results[0]!.data.buffer))).toBe(true);
        }),
        { numRuns: 60 },
      );
    } finally {
      packed.dispose();
    }
  });

  it.runIf(entry.name === 'wasm')('reads operands in place in batched products (per-batch offsets, broadcasts, transposed A), bit for bit as packing them, on 1 and 2 threads', () => {
    // M a multiple of 4 (A in place), N a multiple of 8 and M ≤ 64 (B in place) or not; operands
    // in wasm memory or foreign (read from their staged copies); batch dims maybe broadcast on
    // either side; C in wasm memory or foreign; some products large enough for the pool
    const packed = createWasmBackend({ threads: 1, matmulMinMacs: 0, matmulDirect: false });
    const cases = fc.record({
      batch: fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 2 }),
      M: fc.oneof(fc.integer({ min: 1, max: 20 }).map((m) => 4 * m), size()),
      K: fc.oneof(size(), fc.integer({ min: 250, max: 300 })),
      N: fc.oneof(fc.integer({ min: 1, max: 20 }).map((n) => 8 * n), size()),
      transA: fc.boolean(),
      transB: fc.boolean(),
      broadcast: fc.constantFrom('none', 'a', 'b'),
      inWasm: fc.boolean(),
      outInWasm: fc.boolean(),
      offset: fc.integer({ min: 0, max: 5 }),
      dtype: fc.constantFrom<FloatDType>('float32', 'float64'),
      seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    });
    try {
      fc.assert(
        fc.property(cases, ({ batch, M, K, N, transA, transB, broadcast, inWasm, outInWasm, offset, dtype, seed }) => {
          const r = batch.length + 2;
          const order = (t: boolean) => [...batch.map((_, i) => i), ...(t ? [r - 1, r - 2] : [r - 2, r - 1])];
          const all = batch.map((_, i) => i);
          const a = view(dtype, [...batch, M, K], order(transA), offset, broadcast === 'a' ? all : [], seed);
          const b = view(dtype, [...batch, K, N], order(transB), 0, broadcast === 'b' ? all : [], seed + 1);
          const shape = [...batch, M, N];
          const ref = out(dtype, shape);
          const bound = out(dtype, shape);
          jsKernels.matmul([a, b], ref, {});
          jsKernels.matmul([abs(a), abs(b)], bound, {});
          const eps = dtype === 'float32' ? 2 ** -24 : 2 ** -53;
          const results = [one, two, packed].map((be) => {
            const o = out(dtype, shape);
            const target = outInWasm ? resident(be, o) : o;
            be.run('matmul', inWasm ? [resident(be, a), resident(be, b)] : [a, b], target, {});
            o.data.set(target.data.subarray(0, o.data.length));
            return o;
          });
          expect(mismatch(results[0]!.data, ref.data, 0, bound.data.map((v) => 2 * K * eps * v + 1e-30))).toBe(-1);
          // one batch of x·Wᵀ with up to four rows of x takes the matvec path (another summation
          // order than the micro-kernel): there only 1 = 2 threads
          const matvec = dtype === 'float32' && numel(batch) === 1 && M <= 4 && a.strides[r - 1] === 1 && b.strides[r - 2] === 1;
          for (const got of results.slice(1, matvec ? 2 : 3)) expect(Buffer.from(got.data.buffer).equals(Buffer.from(results[0]!.data.buffer))).toBe(true);
        }),
        { numRuns: 80 },
      );
    } finally {
      packed.dispose();
    }
  });

  it.runIf(entry.name === 'wasm')('packs a transposed A (a weight gradient xᵀ·g) inside each task, bit for bit as packing it beforehand, on 1 and 2 threads', () => {
    // A = xᵀ in wasm memory with M a multiple of 4 and N ≥ 128, where each task packs its block of
    // A per k block; K short, across several k blocks, and not a multiple of the block
    const packed = createWasmBackend({ threads: 1, matmulMinMacs: 0, matmulDirect: false });
    const cases = fc.record({
      M: fc.integer({ min: 1, max: 50 }).map((m) => 4 * m),
      K: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 250, max: 700 })),
      N: fc.integer({ min: 128, max: 600 }),
      offset: fc.integer({ min: 0, max: 5 }),
      dtype: fc.constantFrom<FloatDType>('float32', 'float64'),
      seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    });
    try {
      fc.assert(
        fc.property(cases, ({ M, K, N, offset, dtype, seed }) => {
          const a = view(dtype, [M, K], [1, 0], offset, [], seed);
          const b = view(dtype, [K, N], [0, 1], 0, [], seed + 1);
          const results = residentProducts([one, two, packed], a, b, dtype);
          for (const r of results.slice(1)) expect(Buffer.from(r.data.buffer).equals(Buffer.from(results[0]!.data.buffer))).toBe(true);
        }),
        { numRuns: 40 },
      );
    } finally {
      packed.dispose();
    }
  });

  it.runIf(entry.name === 'wasm')('runs x·Wᵀ with up to four rows of x on W in place: the js result within 2·K·eps·Σ|x||w|, bit for bit on 1 and 2 threads', () => {
    // W row-major [N, K] in wasm memory, maybe a column window of a wider matrix (row stride > K),
    // read through its transpose; K around the four-wide steps and their scalar tail; N around
    // the blocks of four rows; some products large enough for the pool
    const cases = fc.record({
      M: fc.integer({ min: 1, max: 4 }),
      N: fc.oneof(fc.integer({ min: 1, max: 70 }), fc.integer({ min: 500, max: 700 })),
      K: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 400, max: 600 })),
      pad: fc.integer({ min: 0, max: 5 }),
      offset: fc.integer({ min: 0, max: 5 }),
      seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    });
    let pooled = 0;
    fc.assert(
      fc.property(cases, ({ M, N, K, pad, offset, seed }) => {
        const x = view('float32', [M, K], [0, 1], offset, [], seed);
        const wide = view('float32', [N, K + pad], [0, 1], offset, [], seed + 1);
        const wT: Arg = { ...wide, shape: [K, N], strides: [1, K + pad] };
        const ref = out('float32', [M, N]);
        const bound = out('float32', [M, N]);
        jsKernels.matmul([x, wT], ref, {});
        jsKernels.matmul([abs(x), abs(wT)], bound, {});
        const [a, b] = [one, two].map((be) => {
          const got = out('float32', [M, N]);
          be.run('matmul', [resident(be, x), resident(be, wT)], got, {});
          return got;
        });
        expect(mismatch(a!.data, ref.data, 0, bound.data.map((v) => 2 * K * 2 ** -24 * v + 1e-30))).toBe(-1);
        expect(Buffer.from(b!.data.buffer).equals(Buffer.from(a!.data.buffer))).toBe(true);
        if (M * N * K >= 1 << 18) pooled++;
      }),
      { numRuns: 80 },
    );
    expect(pooled).toBeGreaterThan(0);
    expect((two as { stats?: () => { kernel: string; pooled: number }[] }).stats!().find((s) => s.kernel === 'matmul')!.pooled).toBeGreaterThan(0);
  });

  it.runIf(entry.name === 'wasm')('packs a transposed B (x·Wᵀ) inside the task beside a short A on one thread, bit for bit as packing it beforehand and as 2 threads', () => {
    // Wᵀ in wasm memory, k contiguous, N a multiple of 8; x with up to 96 rows (one row block, so
    // the task packs its B panels one at a time); K around the 4-k transposes and their tail, over
    // one and several k blocks; some products large enough for the pool (which packs B first)
    const packed = createWasmBackend({ threads: 1, matmulMinMacs: 0, matmulDirect: false });
    const cases = fc.record({
      M: fc.integer({ min: 5, max: 96 }),
      K: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 250, max: 800 })),
      N: fc.integer({ min: 1, max: 40 }).map((n) => 8 * n),
      transA: fc.boolean(),
      offset: fc.integer({ min: 0, max: 5 }),
      seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    });
    let pooled = 0;
    try {
      fc.assert(
        fc.property(cases, ({ M, K, N, transA, offset, seed }) => {
          const a = view('float32', [M, K], transA ? [1, 0] : [0, 1], offset, [], seed);
          const b = view('float32', [K, N], [1, 0], offset, [], seed + 1);
          const results = residentProducts([one, two, packed], a, b, 'float32');
          for (const r of results.slice(1)) expect(Buffer.from(r.data.buffer).equals(Buffer.from(results[0]!.data.buffer))).toBe(true);
          if (M * N * K >= 128 ** 3) pooled++;
        }),
        { numRuns: 60 },
      );
    } finally {
      packed.dispose();
    }
    expect(pooled).toBeGreaterThan(0);
  });

  it('matches the js matmul with 2 threads on a large product, each operand plain or transposed', () => {
    // K = 700 runs as three k blocks of 234 (not a multiple of the 4-step transposing packer)
    for (const orderA of [[0, 1], [1, 0]]) {
      for (const orderB of [[0, 1], [1, 0]]) {
        const a = view('float32', [300, 700], orderA, 0, [], 3);
        const b = view('float32', [700, 260], orderB, 0, [], 4);
        const ref = out('float32', [300, 260]);
        const bound = out('float32', [300, 260]);
        const got = out('float32', [300, 260]);
        jsKernels.matmul([a, b], ref, {});
        jsKernels.matmul([abs(a), abs(b)], bound, {});
        two.run('matmul', [a, b], got, {});
        const atol = bound.data.map((v) => 2 * 700 * 2 ** -24 * v);
        expect(mismatch(got.data, ref.data, 0, atol)).toBe(-1);
      }
    }
  });

  it('packs a small window of a large buffer without copying the whole buffer', () => {
    // span ≫ elements: the JS packing path
    const big = view('float32', [400, 1000], [0, 1], 0, [], 9);
    const a = { ...big, shape: [20, 30], strides: [3000, 7], offset: 11 };
    const b = { ...big, shape: [30, 50], strides: [1, 2000], offset: 123 };
    const ref = out('float32', [20, 50]);
    const got = out('float32', [20, 50]);
    jsKernels.matmul([a, b], ref, {});
    one.run('matmul', [a, b], got, {});
    expect(one.ranOn!('matmul', 'float32')).toBe(entry.name);
    expect(mismatch(got.data, ref.data, 1e-5, 1e-6)).toBe(-1);
  });

  it('splits a large batch into several scratch chunks, packing a broadcast operand once', () => {
    // 250 × (256×8 · 8×256): ~70 MB of packed panels and C, more than one 64 MB chunk
    const a = view('float32', [250, 256, 8], [0, 1, 2], 0, [], 5);
    const b = view('float32', [250, 8, 256], [0, 1, 2], 0, [0], 6);
    const ref = out('float32', [250, 256, 256]);
    const got = out('float32', [250, 256, 256]);
    jsKernels.matmul([a, b], ref, {});
    two.run('matmul', [a, b], got, {});
    expect(mismatch(got.data, ref.data, 1e-5, 1e-6)).toBe(-1);
  });

  it('leaves tiny products to js by default, where a wasm call costs more than the loop', () => {
    const backend = entry.create({ threads: 1 });
    const a = view('float32', [4, 4], [0, 1], 0, [], 1);
    const o = out('float32', [4, 4]);
    backend.run('matmul', [a, a], o, {});
    expect(backend.ranOn!('matmul', 'float32')).toBe('js');
    const b = view('float32', [32, 32], [0, 1], 0, [], 1);
    backend.run('matmul', [b, b], out('float32', [32, 32]), {});
    expect(backend.ranOn!('matmul', 'float32')).toBe(entry.name);
    backend.dispose();
  });

  it('writes zeros when K is 0 and nothing when M or N is 0', () => {
    const a = view('float32', [3, 0], [0, 1], 0, [], 1);
    const b = view('float32', [0, 4], [0, 1], 0, [], 2);
    const o = out('float32', [3, 4]);
    o.data.fill(7);
    one.run('matmul', [a, b], o, {});
    expect([...o.data]).toEqual(new Array(12).fill(0));
  });
});
