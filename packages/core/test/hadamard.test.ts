import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb, assertAllclose, checkOp, gradcheck } from '@qgrad/core/testing';

const f64 = (s: number[], seed = 1) => q.randn(s, { dtype: 'float64', generator: new q.Generator(seed) });

/** The dense Sylvester Hadamard matrix H_n (entries ±1). */
function sylvester(n: number): number[][] {
  let h = [[1]];
  while (h.length < n) h = [...h.map((r) => [...r, ...r]), ...h.map((r) => [...r, ...r.map((v) => -v)])];
  return h;
}

const blockArb = fc.constantFrom(1, 2, 4, 8);
const shapeFor = (b: number) => fc.tuple(arb.shape({ maxRank: 2, maxDim: 3 }), fc.integer({ min: 1, max: 3 })).map(([lead, k]) => [...lead, b * k]);

describe('hadamard (fast Walsh–Hadamard transform)', () => {
  it('equals multiplying each block by the dense Sylvester matrix / √b', () => {
    fc.assert(
      fc.property(blockArb.chain((b) => fc.tuple(fc.constant(b), shapeFor(b))), fc.integer({ min: 1, max: 99 }), ([b, shape], seed) => {
        const x = f64(shape, seed);
        const y = q.hadamard(x, { blockSize: b });
        const H = q.tensor(sylvester(b), { dtype: 'float64' }).div(Math.sqrt(b));
        const n = shape[shape.length - 1]!;
        const blocks = x.reshape([-1, n / b, b]);
        assertAllclose(y.reshape([-1, n / b, b]), q.matmul(blocks, H), { rtol: 1e-12, atol: 1e-12 });
      }),
      { numRuns: 15 },
    );
  });

  it('is orthonormal and self-inverse when normalised, and H·H = b·I unnormalised', () => {
    fc.assert(
      fc.property(blockArb.chain((b) => fc.tuple(fc.constant(b), shapeFor(b))), fc.integer({ min: 1, max: 99 }), ([b, shape], seed) => {
        const x = f64(shape, seed);
        const y = q.hadamard(x, { blockSize: b });
        assertAllclose(q.hadamard(y, { blockSize: b }), x, { rtol: 1e-12, atol: 1e-12 });
        expect(y.square().sum().item()).toBeCloseTo(x.square().sum().item(), 9); // norm preserved
        const u = q.hadamard(q.hadamard(x, { blockSize: b, normalize: false }), { blockSize: b, normalize: false });
        assertAllclose(u, x.mul(b), { rtol: 1e-12, atol: 1e-12 });
      }),
      { numRuns: 15 },
    );
  });

  it('preserves inner products of rotated pairs: (XH)(WH)ᵀ = XWᵀ', () => {
    const X = f64([3, 8], 2);
    const W = f64([5, 8], 3);
    assertAllclose(q.matmul(q.hadamard(X), q.hadamard(W).t()), q.matmul(X, W.t()), { rtol: 1e-10, atol: 1e-12 });
  });

  it('passes gradcheck on random shapes and block sizes, contiguous and strided, and agrees across backends', () => {
    fc.assert(
      fc.property(blockArb.chain((b) => fc.tuple(fc.constant(b), shapeFor(b))), fc.boolean(), fc.boolean(), ([b, shape], normalize, nonContiguous) => {
        gradcheck((x) => q.hadamard(x, { blockSize: b, normalize }).tanh(), [f64(shape)], { nonContiguous });
      }),
      { numRuns: 15 },
    );
    checkOp((x) => q.hadamard(x, { blockSize: 4 }), [[3, 8]]);
  });

  it('supports double backward (its backward is itself)', () => {
    const x = f64([2, 4]).requiresGrad_();
    const [g] = q.gradOf([q.hadamard(x).pow(3).sum()], [x], { createGraph: true });
    gradcheck((t) => q.enableGrad(() => {
      const l = t.requiresGrad ? t : t.detach().requiresGrad_();
      return q.gradOf([q.hadamard(l).pow(3).sum()], [l], { createGraph: true })[0]!;
    }), [x.detach()]);
    expect(g!.shape).toEqual([2, 4]);
  });

  it('names the problem for a non-power-of-two block or a last dim that is not a multiple', () => {
    expect(() => q.hadamard(q.zeros([2, 6]))).toThrow(/hadamard: blockSize must be a power of two, got 6 \(input shape \[2, 6\]\)/);
    expect(() => q.hadamard(q.zeros([2, 6]), { blockSize: 4 })).toThrow(/hadamard: last dim 6 of input \[2, 6\] is not a multiple of blockSize 4/);
    expect(() => q.hadamard(q.tensor(1))).toThrow(/at least one dim/);
  });
});
