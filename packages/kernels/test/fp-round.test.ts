/**
 * @file wasm `fpRound` against the js kernel: bit-identical (Object.is per element, so −0 and NaN
 * count) for E4M3/E5M2/E2M1/E3M2/E2M3 grids, every rounding, both dtypes, unscaled and with
 * per-tensor, per-row and other scales, strided inputs, edge values, and over 1 and 2 threads.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contiguousStrides, createWasmBackend, jsKernels, numel, type Backend, type FpRoundParams } from '@qgrad/kernels';
import { type Arg, type FloatDType, NATIVE, randomArray, size } from './helpers.js';

let backend!: Backend;

const DTYPES: FloatDType[] = ['float32', 'float64'];
const ROUNDINGS: FpRoundParams['rounding'][] = ['halfEven', 'halfAway', 'floor'];
/** [mantissaBits, minExponent, max] of E4M3fn, E5M2, E2M1, E3M2, E2M3, and a bfloat16-like E8M7. */
const GRIDS: [number, number, number][] = [[3, -6, 448], [2, -14, 57344], [1, 0, 6], [2, -2, 28], [3, 0, 7.5], [7, -126, 3.3895313892515355e38]];
const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

const alloc = (dtype: FloatDType, n: number) => (dtype === 'float32' ? new Float32Array(n) : new Float64Array(n));

/** Values over the whole range of a grid and beyond, with its ties, ±0, subnormals of the dtype, ±∞ and NaN. */
function fill(dtype: FloatDType, n: number, s: number, grid: [number, number, number]): Float32Array | Float64Array {
  const [M, emin, max] = grid;
  const r = randomArray(dtype, 3 * n, s);
  const a = alloc(dtype, n);
  const edge = [0, -0, NaN, Infinity, -Infinity, max, -max, 1.0000001 * max, 2 ** (emin - M - 1), -(2 ** (emin - M - 1)), 1e-45, -1e-45, 3e38, 2 ** emin];
  for (let i = 0; i < n; i++) {
    const [u, v, w] = [r[3 * i]!, r[3 * i + 1]!, r[3 * i + 2]!];
    if (u > 0.8) a[i] = edge[Math.floor(Math.abs(v) * edge.length) % edge.length]!;
    // k + ½ steps of a random binade: exact ties (float32 holds them: few bits), or just either side
    else if (u > 0.4) {
      const tie = Math.sign(v) * (Math.floor(Math.abs(w) * 2 ** (M + 1)) + 0.5) * 2 ** (Math.floor(Math.abs(v) * 30) % (Math.log2(max) - emin + 4) + emin - M - 2);
      a[i] = tie * (u > 0.6 ? 1 : u > 0.5 ? 1 + 2 ** -22 : 1 - 2 ** -22);
    }
    else a[i] = v * 2 ** (Math.abs(w) * 60 - 30);
  }
  return a;
}

function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): string | null {
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return `element ${i}: got ${a[i]} js ${b[i]}`;
  return a.length === b.length ? null : 'lengths differ';
}

interface Case {
  dtype: FloatDType;
  shape: number[];
  grid: [number, number, number];
  rounding: FpRoundParams['rounding'];
  /** none, per-tensor, per-row (constant along the last dim) or varying along the last dim (js). */
  scale: 'none' | 'tensor' | 'row' | 'column';
  transposed: boolean;
  seed: number;
}

/** Rank 1-3 shapes with at least 1024 elements (so wasm runs). */
const shape = fc.array(size(), { minLength: 1, maxLength: 3 }).map((s) => (numel(s) >= 1024 ? s : [Math.ceil(1024 / numel(s)), ...s]));

const caseArb = (dtype: FloatDType): fc.Arbitrary<Case> =>
  fc.record({
    dtype: fc.constant(dtype),
    shape,
    grid: fc.constantFrom(...GRIDS.filter((g) => dtype === 'float64' || g[2] < 3e38 || g[1] >= -126)),
    rounding: fc.constantFrom(...ROUNDINGS),
    scale: fc.constantFrom('none' as const, 'tensor' as const, 'row' as const, 'column' as const),
    transposed: fc.boolean(),
    seed,
  });

/** x (contiguous, or a transposed view of the last two dims) and its scale view; the params. */
function inputs(c: Case): { ins: Arg[]; p: FpRoundParams } {
  const n = numel(c.shape);
  const data = fill(c.dtype, n + 3, c.seed, c.grid);
  let x: Arg = { data, dtype: c.dtype, shape: c.shape, strides: contiguousStrides(c.shape), offset: 3 };
  if (c.transposed && c.shape.length >= 2) {
    // stored with the last two dims swapped, viewed back in c.shape
    const d = c.shape.length;
    const stored = [...c.shape.slice(0, d - 2), c.shape[d - 1]!, c.shape[d - 2]!];
    const st = contiguousStrides(stored);
    x = { ...x, strides: [...st.slice(0, d - 2), st[d - 1]!, st[d - 2]!] };
  }
  const [M, emin, max] = c.grid;
  const p: FpRoundParams = { mantissaBits: M, minExponent: emin, max, rounding: c.rounding, scale: c.scale !== 'none' };
  if (c.scale === 'none') return { ins: [x], p };
  const last = c.shape.length - 1;
  const varies = (d: number) => (c.scale === 'row' ? d < last : c.scale === 'column' ? d === last : false);
  const stored = c.shape.map((n, d) => (varies(d) ? n : 1));
  const sd = alloc(c.dtype, numel(stored) + 1);
  const r = randomArray(c.dtype, sd.length, c.seed ^ 0x33);
  // absmax-like scales, a few zero, negative or NaN ones (x/0 = ±∞ saturates, 0/0 is NaN)
  for (let i = 0; i < sd.length; i++) sd[i] = i % 11 === 5 ? [0, -0.5, NaN][i % 3]! : (Math.abs(r[i]!) + 0.01) / 448;
  const st = contiguousStrides(stored);
  const s: Arg = { data: sd, dtype: c.dtype, shape: c.shape, strides: c.shape.map((_, d) => (varies(d) ? st[d]! : 0)), offset: 1 };
  return { ins: [x, s], p };
}

/** Whether wasm takes the case (else it falls back to js): every grid but E8M7's 2^(M − cap) < 2^−126 in float32, and no column scale. */
const wasmCase = (c: Case) => (c.scale !== 'column' || c.shape[c.shape.length - 1] === 1) && !(c.dtype === 'float32' && c.grid[0] === 7);

function runBoth(b: Backend, c: Case): void {
  const { ins, p } = inputs(c);
  const n = numel(c.shape);
  const ref: Arg = { data: alloc(c.dtype, n), dtype: c.dtype, shape: c.shape, strides: contiguousStrides(c.shape), offset: 0 };
  const got: Arg = { ...ref, data: alloc(c.dtype, n) };
  jsKernels.fpRound(ins, ref, p);
  b.run('fpRound', ins, got, p);
  expect(firstDifference(got.data, ref.data)).toBe(null);
}

describe.each(NATIVE)('$label fpRound', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => {
    backend.dispose();
  });

  for (const dtype of DTYPES) {
    it(`is bit-identical to js in ${dtype} for every grid, rounding, scale broadcast and strided input`, () => {
      fc.assert(
        fc.property(caseArb(dtype), (c) => {
          runBoth(backend, c);
          expect(backend.ranOn!('fpRound', dtype)).toBe(wasmCase(c) ? entry.name : 'js');
        }),
        { numRuns: 40 },
      );
    });
  }
});

describe('wasm fpRound over threads', () => {
  it('splits rows over the pool in both dtypes and stays bit-identical to js (in wasm memory, as tensors are)', () => {
    const backends = [createWasmBackend({ threads: 1 }), createWasmBackend({ threads: 2 })];
    try {
      for (const dtype of DTYPES) {
        for (const [shape, scale] of [[[512, 384], 'row'], [[300, 501], 'none'], [[1 << 17], 'tensor']] as [number[], Case['scale']][]) {
          for (const rounding of ROUNDINGS) {
            const c: Case = { dtype, shape, grid: GRIDS[0]!, rounding, scale, transposed: false, seed: shape[0]! };
            const { ins, p } = inputs(c);
            const n = numel(shape);
            const ref: Arg = { data: alloc(dtype, n), dtype, shape, strides: contiguousStrides(shape), offset: 0 };
            jsKernels.fpRound(ins, ref, p);
            for (const b of backends) {
              // operands and out in the backend's own memory: nothing copied, so the pool may run it
              const own = (a: Arg): Arg => {
                const d = b.alloc(dtype, a.data.length);
                d.set(a.data as never);
                return { ...a, data: d };
              };
              const got = own({ ...ref, data: alloc(dtype, n) });
              b.run('fpRound', ins.map(own), got, p);
              expect(firstDifference(got.data, ref.data)).toBe(null);
              expect(b.ranOn!('fpRound', dtype)).toBe('wasm');
            }
          }
        }
      }
      const two = backends[1]!;
      if (two.threads > 1) expect(two.stats!().find((s) => s.kernel === 'fpRound' && s.dtype === 'float32')!.pooled).toBeGreaterThan(0);
    } finally {
      for (const b of backends) b.dispose();
    }
  });
});
