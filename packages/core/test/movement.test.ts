import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import { arb, checkOp, gradcheck } from '@qgrad/core/testing';

const f64 = (s: number[]) => q.randn(s, { dtype: 'float64' });

/** A random shape with a random factorisation of its size into another shape. */
const reshapePair = arb.shape({ minRank: 1, maxRank: 4 }).chain((s) => {
  const n = s.reduce((a, b) => a * b, 1);
  const divisors = Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);
  return fc.constantFrom(...divisors).map((d) => [s, [d, n / d]] as [number[], number[]]);
});

describe('reshape and view', () => {
  it('match a reshape of the contiguous copy, for permuted and sliced inputs, and view whenever strides allow', () => {
    fc.assert(
      fc.property(reshapePair, fc.boolean(), ([s, t], permuted) => {
        let x = q.arange(s.reduce((a, b) => a * b, 1)).reshape(s);
        if (permuted && s.length > 1) x = x.transpose(0, s.length - 1);
        const target = permuted && s.length > 1 ? [...t] : t;
        const r = x.reshape(target);
        expect(r.toArray()).toEqual(x.contiguous().reshape(target).toArray());
        if (x.isContiguous()) expect(r.storage).toBe(x.storage);
      }),
      { numRuns: 60 },
    );
  });

  it('views a selected column of a transpose without copying', () => {
    const base = q.zeros([3, 4]);
    const col = base.t().select(0, 1);
    expect(col.storage).toBe(base.storage);
    expect(col.strides).toEqual([4]);
  });

  it('flatten, squeeze and unsqueeze give PyTorch shapes', () => {
    const x = q.zeros([2, 1, 3, 1]);
    expect(x.flatten().shape).toEqual([6]);
    expect(x.flatten(1, 2).shape).toEqual([2, 3, 1]);
    expect(x.squeeze().shape).toEqual([2, 3]);
    expect(x.squeeze(1).shape).toEqual([2, 3, 1]);
    expect(x.unsqueeze(-1).shape).toEqual([2, 1, 3, 1, 1]);
    expect(x.reshape(-1, 3).shape).toEqual([2, 3]);
  });
});

const VIEW_OPS: [string, (x: Tensor) => Tensor, number[]][] = [
  ['reshape', (x) => x.reshape(-1, 2).mul(x.reshape(-1, 2)), [3, 4]],
  ['permute', (x) => x.permute(2, 0, 1), [2, 3, 4]],
  ['transpose', (x) => x.transpose(0, 2), [2, 3, 4]],
  ['t', (x) => x.t(), [3, 4]],
  ['expand', (x) => x.expand(2, 3, 4), [3, 1]],
  ['narrow', (x) => x.narrow(1, 1, 2), [3, 4]],
  ['slice with step', (x) => x.slice(1, 0, null, 2), [3, 5]],
  ['select', (x) => x.select(0, -1), [3, 4]],
  ['squeeze/unsqueeze', (x) => x.unsqueeze(0).squeeze(0), [3, 4]],
  ['flatten', (x) => x.flatten(), [2, 3, 2]],
  ['contiguous', (x) => x.t().contiguous(), [3, 4]],
  ['clone', (x) => x.clone(), [3, 4]],
];

describe('view ops', () => {
  for (const [name, fn, shape] of VIEW_OPS) {
    it(`${name} passes gradcheck for contiguous and strided inputs`, () => {
      gradcheck(fn, [f64(shape)]);
      gradcheck(fn, [f64(shape)], { nonContiguous: true });
      checkOp(fn, [shape]);
    });
  }

  it('gradients of chained views pass gradcheck on random shapes', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 2, maxRank: 4 }), (s) => {
        gradcheck((x) => x.transpose(0, -1).narrow(0, 0, 1).reshape(-1).exp(), [f64(s)], { nonContiguous: true });
      }),
      { numRuns: 20 },
    );
  });

  it('errors name the op, dims and shapes', () => {
    expect(() => q.zeros([2, 3]).permute(0)).toThrow(/permute: 1 dims given for a tensor of 2 dims \(shape \[2, 3\]\)/);
    expect(() => q.zeros([2, 3]).narrow(1, 2, 2)).toThrow(/narrow: start 2 \+ length 2 exceeds dimension 1 of size 3/);
    expect(() => q.zeros([2, 3]).expand(4, 4)).toThrow(/expand: the expanded size 4 must match the existing size 2 at dim 0/);
    expect(() => q.zeros([2, 3]).transpose(0, 2)).toThrow(/transpose: dim 2 is out of range for a tensor of 2 dims/);
    expect(() => q.zeros([2]).select(0, 5)).toThrow(/select: index 5 is out of range/);
  });
});
