/**
 * @file wasm fakeQuantize, fakeQuantizeBackward and fwht against the js kernels: bit-identical
 * (Object.is per element, so −0 and NaN count) over random shapes, broadcasts and edge values;
 * fwht also with large blocks and split over threads.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contiguousStrides, createWasmBackend, jsKernels, numel, type FakeQuantizeParams, type QuantOffset, type Backend } from '@qgrad/kernels';
import { type Arg, type FloatDType, randomArray, size, NATIVE } from './helpers.js';

/** The backend under test (each of NATIVE in turn). */
let backend!: Backend;

const DTYPES: FloatDType[] = ['float32', 'float64'];
const OFFSETS: QuantOffset[] = ['zeroPoint', 'roundedZeroPoint', 'beta'];
const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/** Rank 1-3 shapes of awkward sizes, with a leading dim added so wasm runs (≥ 1024 elements). */
const shape = fc.array(size(), { minLength: 1, maxLength: 3 }).map((s) => (numel(s) >= 1024 ? s : [Math.ceil(1024 / numel(s)), ...s]));

const alloc = (dtype: FloatDType, n: number) => (dtype === 'float32' ? new Float32Array(n) : new Float64Array(n));

/** A broadcast view of `shape` varying only along `dims` (none: per-tensor), filled by `fill`. */
function operand(dtype: FloatDType, shape: number[], dims: number[], fill: (i: number) => number): Arg {
  const stored = shape.map((n, d) => (dims.includes(d) ? n : 1));
  const st = contiguousStrides(stored);
  const data = alloc(dtype, numel(stored) + 1);
  for (let i = 0; i < data.length; i++) data[i] = fill(i);
  return { data, dtype, shape, strides: shape.map((_, d) => (dims.includes(d) ? st[d]! : 0)), offset: 1 };
}

const pickFrom = <T>(xs: readonly T[], r: number): T => xs[Math.floor(Math.abs(r) * xs.length) % xs.length]!;

const SCALES = [0.25, 0.5, 1, 0.1, 0.0371, 2, NaN, 0, -0.5];
const ZEROS = [0, -0, 0.5, -0.5, 1.5, 2.5, 3, -3, 0.3, -1.7, 100, NaN];

interface Case {
  dtype: FloatDType;
  offset: QuantOffset;
  shape: number[];
  sDims: number[];
  gDims: number[] | 'contiguous';
  bounds: [number, number];
  gradFactor: number;
  seed: number;
}

const gradFactors = [1, 0.5, 1 / Math.sqrt(7 * 33), 0.123456789, -2];
const BOUNDS: [number, number][] = [[-8, 7], [0, 15], [-128, 127], [0, 1], [-1, 1], [-(2 ** 24), 2 ** 24], [-Infinity, Infinity]];

const caseArb = (dtype: FloatDType): fc.Arbitrary<Case> =>
  shape.chain((s) =>
    fc.record({
      dtype: fc.constant(dtype),
      offset: fc.constantFrom(...OFFSETS),
      shape: fc.constant(s),
      // which dims the scale/zero point vary along: per-tensor, per-token, per-channel, per-group…
      sDims: fc.subarray(s.map((_, d) => d)),
      gDims: fc.oneof(fc.constant('contiguous' as const), fc.subarray(s.map((_, d) => d))),
      bounds: fc.constantFrom(...BOUNDS),
      gradFactor: fc.constantFrom(...gradFactors),
      seed,
    }),
  );

/** Inputs with exact .5 ties (x = (k + ½)·s for power-of-two s), ±0, clamped values and NaN scales. */
function inputs(c: Case): Arg[] {
  const n = numel(c.shape);
  const r = randomArray(c.dtype, 4 * n + 64, c.seed);
  let at = 0;
  const next = () => r[at++ % r.length]!;
  const s = operand(c.dtype, c.shape, c.sDims, () => (next() > 0.3 ? 0.25 : pickFrom(SCALES, next())));
  const z = operand(c.dtype, c.shape, c.sDims, () => pickFrom(ZEROS, next()));
  const xd = alloc(c.dtype, n + 2);
  for (let i = 0; i < xd.length; i++) {
    const u = next();
    xd[i] = u > 0.6 ? (Math.round(u * 40) + 0.5) * 0.25 * Math.sign(next()) : u > 0.5 ? pickFrom([0, -0, 1e30, -1e30, 0.125, -0.125], next()) : u * 5;
  }
  const x: Arg = { data: xd, dtype: c.dtype, shape: c.shape, strides: contiguousStrides(c.shape), offset: 2 };
  return [x, s, z];
}

const params = (c: Case): FakeQuantizeParams => ({ qmin: c.bounds[0], qmax: c.bounds[1], rounding: 'halfEven', offset: c.offset });
/** Cases wasm takes on; the rest (float32 bounds beyond ±2²³, or infinite with rounded z) go to js. */
const wasmCase = (c: Case) => c.dtype === 'float64' || c.bounds.every((b) => Math.abs(b) <= 2 ** 23) || (c.offset !== 'roundedZeroPoint' && c.bounds.every((b) => !Number.isFinite(b)));

function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): string | null {
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return `element ${i}: wasm ${a[i]} js ${b[i]}`;
  return a.length === b.length ? null : 'lengths differ';
}

describe.each(NATIVE)('$label fakeQuantize', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => {
    backend.dispose();
  });

  for (const dtype of DTYPES) {
    it(`forward is bit-identical to js in ${dtype} for every offset mode and broadcast`, () => {
      fc.assert(
        fc.property(caseArb(dtype), (c) => {
          const ins = inputs(c);
          const n = numel(c.shape);
          const ref: Arg = { data: alloc(dtype, n), dtype, shape: c.shape, strides: contiguousStrides(c.shape), offset: 0 };
          const got: Arg = { ...ref, data: alloc(dtype, n) };
          jsKernels.fakeQuantize(ins, ref, params(c));
          backend.run('fakeQuantize', ins, got, params(c));
          expect(firstDifference(got.data, ref.data)).toBe(null);
          if (wasmCase(c)) expect(backend.ranOn!('fakeQuantize', dtype)).toBe(entry.name);
        }),
        { numRuns: 25 },
      );
    });

    it(`backward (dx, dscale, dzeroPoint) is bit-identical to js in ${dtype}, broadcast grads included`, () => {
      fc.assert(
        fc.property(caseArb(dtype), (c) => {
          const ins = inputs(c);
          const n = numel(c.shape);
          const r = randomArray(dtype, n + 1, c.seed ^ 0x5a5a);
          const g: Arg = c.gDims === 'contiguous'
            ? { data: r, dtype, shape: c.shape, strides: contiguousStrides(c.shape), offset: 1 }
            : operand(dtype, c.shape, c.gDims, (i) => (i % 7 === 3 ? -0 : r[i]!));
          const shape3 = [3, ...c.shape];
          const ref: Arg = { data: alloc(dtype, 3 * n), dtype, shape: shape3, strides: contiguousStrides(shape3), offset: 0 };
          const got: Arg = { ...ref, data: alloc(dtype, 3 * n) };
          const p = { ...params(c), gradFactor: c.gradFactor };
          jsKernels.fakeQuantizeBackward([...ins, g], ref, p);
          backend.run('fakeQuantizeBackward', [...ins, g], got, p);
          expect(firstDifference(got.data, ref.data)).toBe(null);
          if (wasmCase(c)) expect(backend.ranOn!('fakeQuantizeBackward', dtype)).toBe(entry.name);
        }),
        { numRuns: 25 },
      );
    });
  }

  for (const dtype of DTYPES) {
    it(`backward with rowSums (dx and per-row dscale/dzeroPoint sums) is bit-identical to js in ${dtype} and sums the per-element form`, () => {
      fc.assert(
        fc.property(caseArb(dtype), (c) => {
          // the scale and zero point shared along the last axis, as rowSums is used
          const last = c.shape.length - 1;
          const cs = { ...c, sDims: c.sDims.filter((d) => d !== last) };
          const ins = inputs(cs);
          const n = numel(c.shape);
          const R = n / c.shape[last]!;
          const r = randomArray(dtype, n + 1, c.seed ^ 0x5a5a);
          const g: Arg = { data: r, dtype, shape: c.shape, strides: contiguousStrides(c.shape), offset: 1 };
          const dx = (): Arg => ({ data: alloc(dtype, n), dtype, shape: c.shape, strides: contiguousStrides(c.shape), offset: 0 });
          const sums = (): Arg => ({ data: alloc(dtype, 2 * R + 1), dtype, shape: [2, R], strides: [R, 1], offset: 1 });
          const p = { ...params(cs), gradFactor: c.gradFactor, rowSums: true };
          const [refDx, refSums, gotDx, gotSums] = [dx(), sums(), dx(), sums()];
          jsKernels.fakeQuantizeBackward([...ins, g, refSums], refDx, p);
          backend.run('fakeQuantizeBackward', [...ins, g, gotSums], gotDx, p);
          expect(firstDifference(gotDx.data, refDx.data)).toBe(null);
          expect(firstDifference(gotSums.data, refSums.data)).toBe(null);
          if (wasmCase(cs)) expect(backend.ranOn!('fakeQuantizeBackward', dtype)).toBe(entry.name);
          // the same as the [3, …] form's dx, and its planes summed per row (up to the order of the sum)
          const shape3 = [3, ...c.shape];
          const full: Arg = { data: alloc(dtype, 3 * n), dtype, shape: shape3, strides: contiguousStrides(shape3), offset: 0 };
          jsKernels.fakeQuantizeBackward([...ins, g], full, { ...p, rowSums: false });
          expect(firstDifference(refDx.data, full.data.subarray(0, n))).toBe(null);
          const L = c.shape[last]!;
          for (let row = 0; row < R; row++) {
            for (const plane of [1, 2]) {
              let want = 0;
              let mag = 0;
              for (let j = 0; j < L; j++) {
                want += full.data[plane * n + row * L + j]!;
                mag += Math.abs(full.data[plane * n + row * L + j]!);
              }
              const got = refSums.data[1 + (plane - 1) * R + row]!;
              if (Number.isNaN(want) || !Number.isFinite(mag)) continue;
              expect(Math.abs(got - want)).toBeLessThanOrEqual((dtype === 'float32' ? 1e-5 : 1e-12) * (mag + 1e-30) + 1e-30);
            }
          }
        }),
        { numRuns: 25 },
      );
    });
  }

  for (const dtype of DTYPES) {
    it(`forward with absmaxScale (each row's scale computed and written first) is bit-identical to js in ${dtype}`, () => {
      fc.assert(
        fc.property(caseArb(dtype), fc.constantFrom(127, 7, 1.5, 448), (c, divisor) => {
          const [x, , z] = inputs(c);
          const n = numel(c.shape);
          const L = c.shape[c.shape.length - 1]!;
          const R = n / L;
          const scales = (): Arg => {
            const rowShape = [...c.shape.slice(0, -1), 1];
            const st = contiguousStrides(rowShape);
            return { data: alloc(dtype, R + 1), dtype, shape: c.shape, strides: st.map((v, d) => (rowShape[d] === 1 ? 0 : v)), offset: 1 };
          };
          // rows of zeros (the minimum scale) and a NaN row
          (x!.data as Float64Array).fill(0, 2, 2 + Math.min(L, n));
          if (R > 2) x!.data[2 + 2 * L] = NaN;
          const zr: Arg = { ...z!, shape: c.shape, strides: c.shape.map(() => 0) };
          const p = { ...params(c), absmaxScale: { divisor, min: 1e-5 } };
          const [refS, gotS] = [scales(), scales()];
          const ref: Arg = { data: alloc(dtype, n), dtype, shape: c.shape, strides: contiguousStrides(c.shape), offset: 0 };
          const got: Arg = { ...ref, data: alloc(dtype, n) };
          jsKernels.fakeQuantize([x!, refS, zr], ref, p);
          backend.run('fakeQuantize', [x!, gotS, zr], got, p);
          expect(firstDifference(gotS.data, refS.data)).toBe(null);
          expect(firstDifference(got.data, ref.data)).toBe(null);
          if (wasmCase(c)) expect(backend.ranOn!('fakeQuantize', dtype)).toBe(entry.name);
          // the scales are max(max|x_row|, min)/divisor in the dtype
          const fr = dtype === 'float32' ? Math.fround : (v: number) => v;
          for (let r = 0; r < R; r++) {
            let m = 0;
            for (let j = 0; j < L; j++) m = Math.max(m, Math.abs(x!.data[2 + r * L + j]!));
            expect(refS.data[1 + r]).toBe(fr(Math.max(m, fr(1e-5)) / divisor));
          }
        }),
        { numRuns: 25 },
      );
    });
  }

  it('falls back to js for other rounding modes, noise and strided x', () => {
    const c: Case = { dtype: 'float32', offset: 'zeroPoint', shape: [32, 40], sDims: [], gDims: 'contiguous', bounds: [-8, 7], gradFactor: 1, seed: 7 };
    const [x, s, z] = inputs(c);
    const out = (): Arg => ({ data: alloc('float32', 1280), dtype: 'float32', shape: [32, 40], strides: [40, 1], offset: 0 });
    backend.run('fakeQuantize', [x!, s!, z!], out(), { ...params(c), rounding: 'floor' });
    expect(backend.ranOn!('fakeQuantize', 'float32')).toBe('js');
    const xt: Arg = { ...x!, shape: [40, 32], strides: [1, 40] };
    backend.run('fakeQuantize', [xt, { ...s!, shape: [40, 32] }, { ...z!, shape: [40, 32] }], { ...out(), shape: [40, 32], strides: [32, 1] }, params(c));
    expect(backend.ranOn!('fakeQuantize', 'float32')).toBe('js');
  });
});

describe.each(NATIVE)('$label fwht', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => {
    backend.dispose();
  });

  for (const dtype of DTYPES) {
    it(`is bit-identical to js in ${dtype} for power-of-two blocks, normalized or not, on strided inputs`, () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 1, max: 4 }), fc.boolean(), fc.boolean(), seed, (logB, blocks, normalize, transposed, sd) => {
          const b = 2 ** logB;
          const cols = b * blocks;
          const rows = Math.ceil(1024 / cols);
          const data = randomArray(dtype, rows * cols + 3, sd);
          data[5] = -0;
          const x: Arg = transposed
            ? { data, dtype, shape: [rows, cols], strides: [1, rows], offset: 3 }
            : { data, dtype, shape: [rows, cols], strides: [cols, 1], offset: 3 };
          const ref: Arg = { data: alloc(dtype, rows * cols), dtype, shape: [rows, cols], strides: [cols, 1], offset: 0 };
          const got: Arg = { ...ref, data: alloc(dtype, rows * cols) };
          jsKernels.fwht([x], ref, { blockSize: b, normalize });
          backend.run('fwht', [x], got, { blockSize: b, normalize });
          expect(firstDifference(got.data, ref.data)).toBe(null);
          expect(backend.ranOn!('fwht', dtype)).toBe(entry.name);
        }),
        { numRuns: 20 },
      );
    });
  }
});

describe('wasm fwht over threads and large blocks', () => {
  it('splits blocks over the pool and stays bit-identical to js in both dtypes (blocks up to 4096, edge values)', () => {
    const one = createWasmBackend({ threads: 1 });
    const two = createWasmBackend({ threads: 2 });
    try {
      for (const dtype of DTYPES) {
        for (const [rows, cols, b] of [[64, 1024, 1024], [16, 4096, 4096], [512, 256, 128], [300, 384, 128], [2048, 32, 2]]) {
          const data = randomArray(dtype, rows * cols, rows + b);
          [data[1], data[7], data[9]] = [-0, Infinity, NaN];
          data[10] = 3e38;
          const x: Arg = { data, dtype, shape: [rows, cols], strides: [cols, 1], offset: 0 };
          const outs = [0, 1, 2].map((): Arg => ({ ...x, data: alloc(dtype, rows * cols) }));
          for (const normalize of [true, false]) {
            jsKernels.fwht([x], outs[0]!, { blockSize: b, normalize });
            one.run('fwht', [x], outs[1]!, { blockSize: b, normalize });
            two.run('fwht', [x], outs[2]!, { blockSize: b, normalize });
            expect(firstDifference(outs[1]!.data, outs[0]!.data)).toBe(null);
            expect(firstDifference(outs[2]!.data, outs[0]!.data)).toBe(null);
          }
        }
      }
      expect(two.ranOn!('fwht', 'float32')).toBe('wasm');
      if (two.threads > 1) expect(two.stats!().find((s) => s.kernel === 'fwht' && s.dtype === 'float32')!.pooled).toBeGreaterThan(0);
    } finally {
      one.dispose();
      two.dispose();
    }
  });
});
