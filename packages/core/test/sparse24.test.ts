/**
 * @file core's 2:4 sparse inference op: `sparse24Weight` compresses a weight with ≤ 2 non-zeros per
 * group of four losslessly, and `sparse24Linear` equals the dense product of that masked weight
 * (float64 to rounding, float32 within summation error, with bias and batch dims), on js and wasm
 * (the wasm float32 kernel within float32 summation error of js; kernels/test/sparse24.test.ts bounds it per output).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fromTypedArray, Generator, linear, noGrad, pack24, randn, sparse24Linear, sparse24Weight, tensor, unpack24, withBackend, type Tensor } from '@qgrad/core';

/** A random [O, K] weight with 0, 1 or 2 non-zeros in each group of four, chosen by the seed. */
function masked24(O: number, K: number, seed: number, dtype: 'float32' | 'float64'): Tensor {
  const w = randn([O, K], { dtype, generator: new Generator(seed) }).dataSync().slice() as Float32Array | Float64Array;
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  for (let g = 0; g < w.length; g += 4) {
    const keep = next() % 3; // 0, 1 or 2 survivors
    const order = [0, 1, 2, 3].sort(() => (next() & 1) - 0.5);
    for (let j = keep; j < 4; j++) w[g + order[j]!] = 0;
  }
  return fromTypedArray(w, [O, K], dtype);
}

const maxAbs = (a: Tensor, b: Tensor) => Math.max(0, ...Array.from(a.sub(b).abs().dataSync()));

describe('sparse24Linear', () => {
  it('equals the dense product of the masked weight, as a property over shapes, dtypes and bias', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 1e6 }), fc.constantFrom('float32', 'float64' as const), fc.boolean(),
      (O, K4, N, seed, dtype, withBias) => {
        const K = 4 * K4;
        const w = masked24(O, K, seed, dtype);
        const x = randn([2, N, K], { dtype, generator: new Generator(seed + 1) });
        const b = withBias ? randn([O], { dtype, generator: new Generator(seed + 2) }) : null;
        const sw = sparse24Weight(w);
        expect(sw.values.shape).toEqual([O, K / 2]);
        expect(Array.from(unpack24({ values: sw.values.dataSync() as Float64Array, indices: sw.indices.dataSync() as Uint8Array }, O, K))).toEqual(Array.from(w.dataSync()));
        const y = noGrad(() => sparse24Linear(x, sw, b));
        expect(y.shape).toEqual([2, N, O]);
        const dense = noGrad(() => linear(x.to('float64'), w.to('float64'), b?.to('float64')));
        // float64: only summation order differs; float32: one rounding of a float64 sum vs float32 summation
        expect(maxAbs(y.to('float64'), dense)).toBeLessThan(dtype === 'float64' ? 1e-12 : 1e-5 * Math.sqrt(K));
      }), { numRuns: 60 });
  });

  it('agrees on the js and wasm backends: float64 bit for bit (wasm hands it to js), float32 within float32 summation error', () => {
    const run = (dtype: 'float32' | 'float64') => () => {
      const w = sparse24Weight(masked24(24, 64, 9, dtype));
      return noGrad(() => sparse24Linear(randn([3, 64], { dtype, generator: new Generator(10) }), w)).dataSync();
    };
    expect(withBackend('wasm', run('float64'))).toEqual(withBackend('js', run('float64')));
    const [a, b] = [withBackend('wasm', run('float32')), withBackend('js', run('float32'))];
    // js sums in float64 and rounds once, the wasm SIMD kernel sums in float32: |Δ| ≤ (K/2 + 4)·2⁻²⁴·Σ|w·x| (Σ|w·x| < 64 here)
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThanOrEqual(36 * 2 ** -24 * 64);
  });

  it('names the group that breaks 2:4, a wrong feature count and a row length that does not group in fours', () => {
    expect(() => sparse24Weight(tensor([[1, 0, 0, 0, 1, 2, 3, 0]]))).toThrow(/row 0, inputs 4…7 hold 3 non-zeros/);
    expect(() => pack24(new Float32Array(6), 1, 6)).toThrow(/row length 6 is not a multiple of 4/);
    const w = sparse24Weight(tensor([[0, 3, 0, -1], [2, 0, 0, 0]]));
    expect(() => sparse24Linear(tensor([[1, 2, 3]]), w)).toThrow(/3 features but the 2:4 weight \[2, 4\] expects 4/);
    expect(sparse24Linear(tensor([[1, 2, 3, 4]]), w).toArray()).toEqual([[2, 2]]);
  });
});
