import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import { arb, checkOp, gradcheck } from '@qgrad/core/testing';

const f64 = (s: number[]) => q.randn(s, { dtype: 'float64' });

/** A shape and a random subset of its dims (possibly negative), plus keepdim. */
const shapeDims = arb.shape({ minRank: 1, maxRank: 4 }).chain((s) =>
  fc.tuple(fc.constant(s), fc.subarray(s.map((_, i) => (i % 2 ? i - s.length : i)), { minLength: 1 }), fc.boolean()),
);

const REDUCTIONS: [string, (x: Tensor, dims: number[], keep: boolean) => Tensor][] = [
  ['sum', (x, d, k) => x.sum(d, k)],
  ['mean', (x, d, k) => x.mean(d, k)],
  ['var', (x, d, k) => x.var(d, { keepdim: k })],
  ['var (correction 0)', (x, d, k) => x.var(d, { keepdim: k, correction: 0 })],
  ['std', (x, d, k) => x.std(d, { keepdim: k })],
  ['amax', (x, d, k) => x.amax(d, k)],
  ['amin', (x, d, k) => x.amin(d, k)],
  ['logsumexp', (x, d, k) => x.logsumexp(d, k)],
  ['norm 2', (x, d, k) => x.norm(2, d, k)],
  ['norm 1', (x, d, k) => x.norm(1, d, k)],
  ['norm 3', (x, d, k) => x.norm(3, d, k)],
  ['norm inf', (x, d, k) => x.norm(Infinity, d, k)],
];

describe('reductions over any dims with keepdim', () => {
  for (const [name, fn] of REDUCTIONS) {
    it(`${name} passes gradcheck on random shapes and dims`, () => {
      fc.assert(
        fc.property(shapeDims, fc.boolean(), ([s, dims, keep], nonContiguous) => {
          const needsTwo = name.startsWith('var') || name === 'std';
          if (needsTwo && dims.every((d) => s[d < 0 ? d + s.length : d] === 1)) return; // var of one element is NaN
          gradcheck((x) => fn(x, dims, keep), [f64(s)], { nonContiguous });
        }),
        { numRuns: 15 },
      );
      checkOp((x) => fn(x, [1], false), [[3, 4]]);
    });
  }

  it('keepdim keeps reduced dims as size 1', () => {
    const x = q.zeros([2, 3, 4]);
    expect(x.sum([0, 2], true).shape).toEqual([1, 3, 1]);
    expect(x.sum([0, -1]).shape).toEqual([3]);
    expect(x.sum().shape).toEqual([]);
    expect(x.mean(1).shape).toEqual([2, 4]);
  });

  it('max and min with a dim return values and indices; the gradient goes to the index', () => {
    const x = q.tensor([[1, 5, 5], [7, 2, 0]], { requiresGrad: true });
    const { values, indices } = x.max(1);
    expect(values.toArray()).toEqual([5, 7]);
    expect(indices.toArray()).toEqual([1, 0]);
    values.sum().backward();
    expect(x.grad!.toArray()).toEqual([[0, 1, 0], [1, 0, 0]]);
    expect(x.min(0, true).indices.toArray()).toEqual([[0, 1, 1]]);
    gradcheck((t) => t.max(1).values, [f64([3, 4])]);
    gradcheck((t) => t.min(0, true).values, [f64([3, 4])]);
  });

  it('amax splits the gradient evenly between ties, as PyTorch', () => {
    const x = q.tensor([3, 1, 3], { requiresGrad: true });
    x.amax().backward();
    expect(x.grad!.toArray()).toEqual([0.5, 0, 0.5]);
  });

  it('argmax and argmin pick the first extremum, over the flattened tensor by default', () => {
    const x = q.tensor([[1, 9, 9], [9, 0, 0]]);
    expect(x.argmax().item()).toBe(1);
    expect(x.argmax(1).toArray()).toEqual([1, 0]);
    expect(x.argmin(1, true).toArray()).toEqual([[0], [1]]);
    expect(x.argmax(0).dtype).toBe('int32');
  });

  it('logsumexp is stable for large inputs and -inf rows', () => {
    expect(q.tensor([1000, 1000]).logsumexp().item()).toBeCloseTo(1000 + Math.log(2), 3);
    expect(q.tensor([-Infinity, -Infinity]).logsumexp().item()).toBe(-Infinity);
  });

  it('sums integers to int32 and means of integers to float32', () => {
    const x = q.tensor([1, 2, 4], { dtype: 'uint8' });
    expect(x.sum().dtype).toBe('int32');
    expect(x.mean().item()).toBeCloseTo(7 / 3, 6);
  });

  it('errors name the op and the dim', () => {
    expect(() => q.zeros([2, 3]).sum(2)).toThrow(/sum: dim 2 is out of range for a tensor of 2 dims/);
    expect(() => q.zeros([2, 0]).argmax(1)).toThrow(/argmax: cannot reduce an empty dim 1/);
  });
});
