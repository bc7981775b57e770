/**
 * @file symmetricEigen (LoRA's truncated SVD and the examples' Fréchet distance use it): the
 * decomposition reconstructs its input with orthonormal eigenvectors, in float64.
 */
import fc from 'fast-check';
import { Generator, randn } from '@qgrad/core';
import { describe, expect, it } from 'vitest';
import { symmetricEigen } from '../../src/ptq/linalg.js';

describe('symmetricEigen', () => {
  it('reconstructs A = V·diag(λ)·Vᵀ with orthonormal V', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (n, seed) => {
        const x = randn([n, n], { generator: new Generator(seed), dtype: 'float64' }).dataSync();
        const a = new Float64Array(n * n);
        for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = Number(x[i * n + j]) + Number(x[j * n + i]);
        const before = Float64Array.from(a);
        const { values, vectors: v } = symmetricEigen(a, n);
        expect(a).toEqual(before);
        let scale = 0;
        for (const e of a) scale = Math.max(scale, Math.abs(e));
        for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
          let rec = 0;
          let orth = 0;
          for (let k = 0; k < n; k++) {
            rec += v[i * n + k]! * values[k]! * v[j * n + k]!;
            orth += v[k * n + i]! * v[k * n + j]!;
          }
          expect(Math.abs(rec - a[i * n + j]!)).toBeLessThan(1e-12 * n * Math.max(scale, 1));
          expect(Math.abs(orth - (i === j ? 1 : 0))).toBeLessThan(1e-12 * n);
        }
      }),
      { numRuns: 40 },
    );
  });

  it('names the shape it cannot take', () => {
    expect(() => symmetricEigen([1, 2, 3], 2)).toThrow(/3 values for a 2×2 matrix/);
  });
});
