/**
 * @file sort, argsort, topk, cumsum, prod, any/all, isclose/allclose, multinomial and
 * setGradEnabled: PyTorch golden values and gradients (scripts/golden/sort_ops.py), float64
 * gradcheck properties, and the boolean and sampling ops' contracts.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import { arb, gradcheck } from '@qgrad/core/testing';

interface Case { value: number[] | number[][]; grad: number[][]; indices?: number[] | number[][] }
const golden = JSON.parse(readFileSync(new URL('./fixtures/sort_ops.json', import.meta.url), 'utf8')) as {
  x: number[][]; weights: number[][]; cases: Record<string, Case>;
  isclose: { a: string[]; b: string[]; default: boolean[]; equal_nan: boolean[] };
};

const OPS: Record<string, (t: Tensor) => { y: Tensor; indices?: Tensor }> = {
  sort_dim1: (t) => { const r = q.sort(t, 1); return { y: r.values, indices: r.indices }; },
  sort_dim0_desc: (t) => { const r = q.sort(t, 0, true); return { y: r.values, indices: r.indices }; },
  topk3_dim1: (t) => { const r = q.topk(t, 3, 1); return { y: r.values, indices: r.indices }; },
  topk2_dim0_smallest: (t) => { const r = q.topk(t, 2, 0, false); return { y: r.values, indices: r.indices }; },
  cumsum_dim1: (t) => ({ y: q.cumsum(t, 1) }),
  cumsum_dim0: (t) => ({ y: q.cumsum(t, 0) }),
  prod_dim1: (t) => ({ y: q.prod(t, 1) }),
  prod_dim0: (t) => ({ y: q.prod(t, 0) }),
};

const f64 = (s: number[]) => q.randn(s, { dtype: 'float64' });
/** Python's str() of a float: 'inf', '-inf' and 'nan' as well as plain numbers. */
const pyFloat = (v: string): number => (v === 'inf' ? Infinity : v === '-inf' ? -Infinity : v === 'nan' ? NaN : Number(v));

describe('sorting and scans match PyTorch', () => {
  for (const [name, op] of Object.entries(OPS)) {
    it(`${name}: values, indices and the gradient of a weighted sum equal torch's`, () => {
      const c = golden.cases[name]!;
      const x = q.tensor(golden.x, { dtype: 'float64', requiresGrad: true });
      const { y, indices } = op(x);
      expect(y.toArray()).toEqual(c.value);
      if (c.indices) expect(indices!.toArray()).toEqual(c.indices);
      const w = q.tensor(golden.weights.flat().slice(0, y.numel()), { dtype: 'float64' }).reshape(y.shape);
      y.mul(w).sum().backward();
      const g = x.grad!.toArray() as number[][];
      g.flat().forEach((v, i) => expect(v).toBeCloseTo(c.grad.flat()[i]!, 12));
    });
  }

  it('isclose follows torch on infinities and NaN, with and without equalNan', () => {
    const a = q.tensor(golden.isclose.a.map(pyFloat), { dtype: 'float64' });
    const b = q.tensor(golden.isclose.b.map(pyFloat), { dtype: 'float64' });
    expect(Array.from(q.isclose(a, b).dataSync(), Boolean)).toEqual(golden.isclose.default);
    expect(Array.from(q.isclose(a, b, { equalNan: true }).dataSync(), Boolean)).toEqual(golden.isclose.equal_nan);
    expect(q.allclose(a.slice(0, 0, 1), b.slice(0, 0, 1))).toBe(true);
    expect(q.allclose(a, b)).toBe(false);
  });
});

describe('gradients pass a float64 gradcheck', () => {
  const shapeDim = arb.shape({ minRank: 1, maxRank: 3 }).chain((s) => fc.tuple(fc.constant(s), fc.integer({ min: -s.length, max: s.length - 1 })));
  it('sort, topk, cumsum and prod along any dim', () => {
    fc.assert(fc.property(shapeDim, fc.boolean(), ([s, d], desc) => {
      gradcheck((x) => q.sort(x, d, desc).values, [f64(s)]);
      gradcheck((x) => q.topk(x, 1, d, desc).values, [f64(s)]);
      gradcheck((x) => q.cumsum(x, d), [f64(s)]);
      gradcheck((x) => q.prod(x, d, desc), [f64(s)]);
    }), { numRuns: 25 });
  });
  it('prod over everything, with a zero present, gives the product of the others', () => {
    const x = q.tensor([2, 0, 3, 0.5], { dtype: 'float64', requiresGrad: true });
    q.prod(x).backward();
    expect(x.grad!.toArray()).toEqual([0, 3, 0, 0]);
    gradcheck((t) => q.prod(t), [f64([7])]);
  });
});

describe('boolean reductions, sampling and grad mode', () => {
  it('any and all reduce like torch, over everything and along a dim', () => {
    const x = q.tensor([[0, 1, 2], [0, 0, 0]]);
    expect(q.any(x, 1).toArray()).toEqual([1, 0]);
    expect(q.all(x, 0, true).toArray()).toEqual([[0, 0, 0]]);
    expect(q.any(x).item()).toBe(1);
    expect(q.all(q.ones([2, 2])).item()).toBe(1);
  });
  it('multinomial never draws a zero-weight category and, without replacement, never repeats', () => {
    fc.assert(fc.property(fc.array(fc.constantFrom(0, 0.5, 1, 3), { minLength: 2, maxLength: 8 }), fc.integer({ min: 0, max: 1000 }), (w, seed) => {
      fc.pre(w.some((v) => v > 0));
      q.manualSeed(seed);
      const positive = w.filter((v) => v > 0).length;
      const draws = Array.from(q.multinomial(q.tensor(w), positive).dataSync());
      expect(new Set(draws).size).toBe(positive);
      expect(draws.every((i) => w[i]! > 0)).toBe(true);
      const withRep = Array.from(q.multinomial(q.tensor([w, w]), 10, true).dataSync());
      expect(withRep.every((i) => w[i]! > 0)).toBe(true);
    }), { numRuns: 50 });
    expect(() => q.multinomial(q.tensor([1, 1]), 3)).toThrow(/without replacement/);
  });
  it('multinomial frequencies follow the weights', () => {
    q.manualSeed(3);
    const d = Array.from(q.multinomial(q.tensor([1, 3]), 4000, true).dataSync());
    expect(d.filter((i) => i === 1).length / 4000).toBeCloseTo(0.75, 1);
  });
  it('setGradEnabled switches recording and returns the previous mode', () => {
    const x = q.tensor([1, 2], { requiresGrad: true });
    const prev = q.setGradEnabled(false);
    try {
      expect(prev).toBe(true);
      expect(x.mul(2).requiresGrad).toBe(false);
    } finally {
      q.setGradEnabled(prev);
    }
    expect(x.mul(2).requiresGrad).toBe(true);
  });
});
