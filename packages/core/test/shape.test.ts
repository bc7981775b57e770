import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb, checkOp, gradcheck, gradgradcheck as gradgradcheckAll } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';
import { ravel, unravel } from './helpers.js';

const gradgradcheck = (fn: (x: Tensor) => Tensor, x: Tensor) => gradgradcheckAll(fn, [x]);

const f64 = (s: number[]) => q.rand(s, { dtype: 'float64' }).mul(4).sub(2);
const RUNS = { numRuns: 12 };


/** Builds the expected tensor of `shape` elementwise from `at(multiIndex)` reading `x`'s values. */
function reference(x: Tensor, shape: number[], at: (idx: number[], get: (i: number[]) => number) => number): number[] {
  const v = x.dataSync();
  const get = (i: number[]) => v[ravel(i, x.shape)]!;
  const n = shape.reduce((a, b) => a * b, 1);
  return Array.from({ length: n }, (_, i) => at(unravel(i, shape), get));
}


/** A random shape of rank ≥ 1 with a random dim in it. */
const shapeAndDim = arb.shape({ minRank: 1, maxRank: 3 }).chain((s) => fc.tuple(fc.constant(s), fc.integer({ min: -s.length, max: s.length - 1 })));

describe('cat', () => {
  it('passes gradcheck for 1–3 tensors differing along a random dim, contiguous and strided', () => {
    fc.assert(
      fc.property(shapeAndDim, fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 3 }), fc.boolean(), ([s, dim], sizes, nonContiguous) => {
        const d = dim < 0 ? dim + s.length : dim;
        const xs = sizes.map((n) => f64(s.map((v, i) => (i === d ? n : v))));
        gradcheck((...ts) => q.cat(ts, dim), xs, { nonContiguous });
      }),
      RUNS,
    );
    checkOp((a, b) => q.cat([a, b], 1), [[2, 3], [2, 2]]);
  });

  it('places each input in its slab along dim', () => {
    fc.assert(
      fc.property(shapeAndDim, fc.integer({ min: 0, max: 3 }), ([s, dim], n) => {
        const d = dim < 0 ? dim + s.length : dim;
        const a = f64(s);
        const b = f64(s.map((v, i) => (i === d ? n : v)));
        const y = q.cat([a, b], dim);
        const expected = reference(y, y.shape, (idx) => {
          const k = idx[d]!;
          return k < s[d]! ? a.dataSync()[ravel(idx, a.shape)]! : b.dataSync()[ravel(idx.map((v, i) => (i === d ? v - s[d]! : v)), b.shape)]!;
        });
        expect(Array.from(y.dataSync())).toEqual(expected);
      }),
      RUNS,
    );
    expect(q.cat([q.tensor([[1, 2]]), q.tensor([[3, 4], [5, 6]])]).toArray()).toEqual([[1, 2], [3, 4], [5, 6]]);
    expect(q.cat([q.tensor([[1], [2]]), q.tensor([[3, 4], [5, 6]])], -1).toArray()).toEqual([[1, 3, 4], [2, 5, 6]]);
  });

  it('promotes dtypes and skips empty 1-D tensors, as PyTorch', () => {
    const y = q.cat([q.tensor([1, 2], { dtype: 'int32' }), q.tensor([0.5], { dtype: 'float64' })]);
    expect(y.dtype).toBe('float64');
    expect(y.toArray()).toEqual([1, 2, 0.5]);
    expect(q.cat([q.zeros([0]), q.ones([2, 2]), q.zeros([0])], 1).toArray()).toEqual([[1, 1], [1, 1]]);
    expect(q.cat([q.zeros([0])]).shape).toEqual([0]);
  });

  it('supports double backward', () => {
    gradgradcheck((x) => q.cat([x, x.mul(x)], 1), f64([2, 3]));
  });

  it('names both shapes when sizes differ outside dim', () => {
    expect(() => q.cat([q.zeros([2, 3]), q.zeros([3, 3])], 1)).toThrow(/cat: sizes of tensors must match except in dim 1: tensor 1 has shape \[3, 3\] but tensor 0 has shape \[2, 3\]/);
    expect(() => q.cat([q.zeros([2, 3]), q.zeros([2, 3, 1])])).toThrow(/cat: .*\[2, 3, 1\].*\[2, 3\]/);
    expect(() => q.cat([q.zeros([2])], 1)).toThrow(/cat: dim 1 is out of range/);
    expect(() => q.cat([])).toThrow(/cat: expected a non-empty list/);
  });
});

describe('stack', () => {
  it('passes gradcheck and inserts a new dim at a random position', () => {
    fc.assert(
      fc.property(arb.shape({ maxRank: 3 }), fc.integer({ min: 1, max: 3 }), fc.nat(), fc.boolean(), (s, k, r, nonContiguous) => {
        const dim = (r % (s.length + 1)) - (r % 2 ? s.length + 1 : 0);
        const xs = Array.from({ length: k }, () => f64(s));
        const y = q.stack(xs, dim);
        const d = dim < 0 ? dim + s.length + 1 : dim;
        expect(y.shape).toEqual([...s.slice(0, d), k, ...s.slice(d)]);
        xs.forEach((x, i) => expect(Array.from(q.select(y, d, i).dataSync())).toEqual(Array.from(x.dataSync())));
        gradcheck((...ts) => q.stack(ts, dim), xs, { nonContiguous });
      }),
      RUNS,
    );
    checkOp((a, b) => q.stack([a, b], -1), [[2, 3], [2, 3]]);
  });

  it('names both shapes when they differ', () => {
    expect(() => q.stack([q.zeros([2]), q.zeros([3])])).toThrow(/stack: expects each tensor to be equal size, but got \[2\] at entry 0 and \[3\] at entry 1/);
  });
});

describe('split, chunk and unbind', () => {
  it('split by size gives views that cat back to the input, with torch sizes', () => {
    fc.assert(
      fc.property(shapeAndDim, fc.integer({ min: 1, max: 4 }), ([s, dim], size) => {
        const x = f64(s);
        const parts = q.split(x, size, dim);
        const n = x.size(dim);
        expect(parts.map((p) => p.size(dim))).toEqual(Array.from({ length: Math.ceil(n / size) }, (_, i) => Math.min(size, n - i * size)));
        for (const p of parts) expect(p.storage).toBe(x.storage);
        expect(Array.from(q.cat(parts, dim).dataSync())).toEqual(Array.from(x.dataSync()));
      }),
      RUNS,
    );
    expect(q.split(q.arange(5), 2).map((t) => t.toArray())).toEqual([[0, 1], [2, 3], [4]]);
    expect(q.split(q.arange(5), [1, 4]).map((t) => t.toArray())).toEqual([[0], [1, 2, 3, 4]]);
  });

  it('chunk follows torch.chunk sizes (ceil, possibly fewer chunks)', () => {
    expect(q.chunk(q.arange(6), 4).map((t) => t.shape[0])).toEqual([2, 2, 2]);
    expect(q.chunk(q.arange(5), 2).map((t) => t.shape[0])).toEqual([3, 2]);
    expect(q.chunk(q.arange(3), 5).map((t) => t.shape[0])).toEqual([1, 1, 1]);
    expect(q.chunk(q.zeros([0, 2]), 3).map((t) => t.shape)).toEqual([[0, 2], [0, 2], [0, 2]]);
    expect(q.zeros([2, 6]).chunk(3, -1).map((t) => t.shape)).toEqual([[2, 2], [2, 2], [2, 2]]);
  });

  it('chunks share storage with the base: writing into one under noGrad changes the base', () => {
    const base = q.arange(6, undefined, 1, { dtype: 'float32' }).reshape(2, 3);
    const [, second] = base.chunk(2, 0);
    q.noGrad(() => second!.copy_(q.tensor([[7, 8, 9]])));
    expect(base.toArray()).toEqual([[0, 1, 2], [7, 8, 9]]);
    const [a] = base.split([1, 2], 1);
    a!.fill_(-1);
    expect(base.toArray()).toEqual([[-1, 1, 2], [-1, 8, 9]]);
  });

  it('gradients flow through every piece of split, chunk and unbind', () => {
    fc.assert(
      fc.property(shapeAndDim, fc.integer({ min: 1, max: 3 }), fc.boolean(), ([s, dim], k, nonContiguous) => {
        const weigh = (ps: Tensor[]) => q.cat(ps.map((p, i) => p.mul(i + 1).flatten()));
        gradcheck((x) => weigh(x.split(k, dim)), [f64(s)], { nonContiguous });
        gradcheck((x) => weigh(x.chunk(k, dim)), [f64(s)], { nonContiguous });
        gradcheck((x) => weigh(x.unbind(dim).map((p) => p.reshape(-1))), [f64(s)], { nonContiguous });
      }),
      RUNS,
    );
    checkOp((x) => { const [a, b] = x.chunk(2, 1); return a!.mul(b!); }, [[3, 4]]);
    checkOp((x) => q.stack(x.unbind(1).reverse(), 1), [[3, 4]]);
  });

  it('names the op on bad sizes', () => {
    expect(() => q.split(q.zeros([4]), [1, 2])).toThrow(/split: split sizes \[1, 2\] must be non-negative and sum to 4/);
    expect(() => q.chunk(q.zeros([4]), 0)).toThrow(/chunk: number of chunks must be a positive integer/);
    expect(() => q.unbind(q.zeros([4]), 1)).toThrow(/unbind: dim 1 is out of range/);
  });
});

describe('pad', () => {
  /** Random pads for the last k dims in [-1, 2], never making a dim negative. */
  const shapeAndPad = arb.shape({ minRank: 1, maxRank: 3 }).chain((s) =>
    fc.integer({ min: 1, max: s.length }).chain((k) =>
      fc.tuple(fc.constant(s), fc.array(fc.integer({ min: -1, max: 2 }), { minLength: 2 * k, maxLength: 2 * k })).map(([sh, p]) => {
        // crop at most the dim's size
        for (let i = 0; i < p.length / 2; i++) {
          const n = sh[sh.length - 1 - i]!;
          if (n + p[2 * i]! + p[2 * i + 1]! < 0) p[2 * i] = 0;
        }
        return [sh, p] as [number[], number[]];
      }),
    ),
  );
  const pairsOf = (s: number[], p: number[]) => s.map((_, d) => (d >= s.length - p.length / 2 ? [p[2 * (s.length - 1 - d)]!, p[2 * (s.length - 1 - d) + 1]!] : [0, 0]));

  it('constant mode matches a reference (negative amounts crop) and passes gradcheck', () => {
    fc.assert(
      fc.property(shapeAndPad, fc.boolean(), ([s, p], nonContiguous) => {
        const x = f64(s);
        const y = q.pad(x, p, 'constant', 0.5);
        const pairs = pairsOf(s, p);
        expect(y.shape).toEqual(s.map((n, d) => n + pairs[d]![0]! + pairs[d]![1]!));
        const expected = reference(x, y.shape, (idx, get) => {
          const src = idx.map((v, d) => v - pairs[d]![0]!);
          return src.every((v, d) => v >= 0 && v < s[d]!) ? get(src) : 0.5;
        });
        expect(Array.from(y.dataSync())).toEqual(expected);
        gradcheck((t) => q.pad(t, p, 'constant', 0.5), [x], { nonContiguous });
      }),
      RUNS,
    );
    expect(q.pad(q.tensor([[1, 2], [3, 4]]), [1, -1, 0, 1], 'constant', 9).toArray()).toEqual([[9, 1], [9, 3], [9, 9]]);
    expect(q.functional.pad(q.tensor([[1, 2]], { dtype: 'int32' }), [1, 0]).toArray()).toEqual([[0, 1, 2]]);
    checkOp((x) => q.pad(x, [1, 2, -1, 1]), [[3, 4]]);
  });

  it('reflect, replicate and circular match references and pass gradcheck', () => {
    const nonNeg = shapeAndPad.map(([s, p]) => [s, p.map((v, i) => Math.min(Math.max(v, 0), s[s.length - 1 - (i >> 1)]! - 1))] as [number[], number[]]);
    const srcIndex = {
      reflect: (v: number, n: number) => (v < 0 ? -v : v >= n ? 2 * (n - 1) - v : v),
      replicate: (v: number, n: number) => Math.min(Math.max(v, 0), n - 1),
      circular: (v: number, n: number) => ((v % n) + n) % n,
    };
    for (const mode of ['reflect', 'replicate', 'circular'] as const) {
      fc.assert(
        fc.property(nonNeg, fc.boolean(), ([s, p], nonContiguous) => {
          const x = f64(s);
          const y = q.pad(x, p, mode);
          const pairs = pairsOf(s, p);
          expect(Array.from(y.dataSync())).toEqual(reference(x, y.shape, (idx, get) => get(idx.map((v, d) => srcIndex[mode](v - pairs[d]![0]!, s[d]!)))));
          gradcheck((t) => q.pad(t, p, mode), [x], { nonContiguous });
        }),
        { numRuns: 8 },
      );
    }
    expect(q.pad(q.tensor([[1, 2, 3]]), [2, 2], 'reflect').toArray()).toEqual([[3, 2, 1, 2, 3, 2, 1]]);
    expect(q.pad(q.tensor([[1, 2, 3]]), [2, 1], 'replicate').toArray()).toEqual([[1, 1, 1, 2, 3, 3]]);
    expect(q.pad(q.tensor([[1, 2, 3]]), [2, 1], 'circular').toArray()).toEqual([[2, 3, 1, 2, 3, 1]]);
    checkOp((x) => q.pad(x, [1, 2, 2, 0], 'reflect'), [[3, 4]]);
  });

  it('supports double backward', () => {
    gradgradcheck((x) => q.pad(x, [1, -1, 2, 0]), f64([2, 3]));
  });

  it('names the op on bad padding', () => {
    expect(() => q.pad(q.zeros([2]), [1, 1, 1, 1])).toThrow(/pad: padding length 4 must be even and at most twice the number of dims \(shape \[2\]\)/);
    expect(() => q.pad(q.zeros([2]), [1])).toThrow(/pad: padding length 1/);
    expect(() => q.pad(q.zeros([2]), [-2, -1])).toThrow(/pad: padding \[-2, -1\] would make a negative size \[-1\] from shape \[2\]/);
    expect(() => q.pad(q.zeros([1, 2]), [2, 0], 'reflect')).toThrow(/pad: reflect padding \(2, 0\) must be smaller than the padded dim 1 of size 2/);
  });
});

describe('triu and tril', () => {
  const matrices = arb.shape({ minRank: 2, maxRank: 3 });
  it('keep the right triangle (with a diagonal offset) and mask the gradient', () => {
    fc.assert(
      fc.property(matrices, fc.integer({ min: -3, max: 3 }), fc.boolean(), (s, k, nonContiguous) => {
        const x = f64(s);
        const r = s.length - 2;
        expect(Array.from(x.triu(k).dataSync())).toEqual(reference(x, s, (i, get) => (i[r + 1]! - i[r]! >= k ? get(i) : 0)));
        expect(Array.from(x.tril(k).dataSync())).toEqual(reference(x, s, (i, get) => (i[r + 1]! - i[r]! <= k ? get(i) : 0)));
        gradcheck((t) => t.triu(k), [x], { nonContiguous });
        gradcheck((t) => q.tril(t, k), [x], { nonContiguous });
      }),
      RUNS,
    );
    expect(q.ones([3, 3]).triu(1).toArray()).toEqual([[0, 1, 1], [0, 0, 1], [0, 0, 0]]);
    expect(q.ones([2, 3], { dtype: 'int32' }).tril().toArray()).toEqual([[1, 0, 0], [1, 1, 0]]);
    checkOp((x) => x.triu(), [[3, 4]]);
    checkOp((x) => x.tril(-1), [[2, 4, 3]]);
  });

  it('need at least 2 dims', () => {
    expect(() => q.zeros([3]).triu()).toThrow(/triu: input tensor must have at least 2 dimensions, got shape \[3\]/);
  });
});

describe('repeat and repeatInterleave', () => {
  it('repeat tiles like torch.Tensor.repeat, with extra leading dims, and passes gradcheck', () => {
    fc.assert(
      fc.property(arb.shape({ maxRank: 3 }), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 3, maxLength: 4 }), fc.boolean(), (s, reps, nonContiguous) => {
        const x = f64(s);
        const full = [...new Array<number>(reps.length - s.length).fill(1), ...s];
        const y = x.repeat(reps);
        expect(y.shape).toEqual(full.map((d, i) => d * reps[i]!));
        expect(Array.from(y.dataSync())).toEqual(reference(x.reshape(full), y.shape, (i, get) => get(i.map((v, d) => v % full[d]!))));
        gradcheck((t) => t.repeat(reps), [x], { nonContiguous });
      }),
      RUNS,
    );
    expect(q.tensor([1, 2]).repeat(2, 2).toArray()).toEqual([[1, 2, 1, 2], [1, 2, 1, 2]]);
    checkOp((x) => x.repeat(2, 1, 3), [[2, 3]]);
    expect(() => q.zeros([2, 2]).repeat(2)).toThrow(/repeat: number of repeat dims \(1\) can not be smaller than number of tensor dims \(2/);
  });

  it('repeatInterleave repeats each element along dim (or flattened) and passes gradcheck', () => {
    fc.assert(
      fc.property(shapeAndDim, fc.integer({ min: 0, max: 3 }), fc.boolean(), ([s, dim], r, nonContiguous) => {
        const x = f64(s);
        const d = dim < 0 ? dim + s.length : dim;
        const y = x.repeatInterleave(r, dim);
        expect(Array.from(y.dataSync())).toEqual(reference(x, y.shape, (i, get) => get(i.map((v, k) => (k === d ? Math.floor(v / r) : v)))));
        gradcheck((t) => t.repeatInterleave(r, dim), [x], { nonContiguous });
        // per-element counts along dim
        const counts = Array.from({ length: s[d]! }, (_, i) => (i * 7 + r) % 3);
        gradcheck((t) => q.repeatInterleave(t, counts, dim), [x], { nonContiguous });
      }),
      RUNS,
    );
    expect(q.tensor([[1, 2], [3, 4]]).repeatInterleave(2).toArray()).toEqual([1, 1, 2, 2, 3, 3, 4, 4]);
    expect(q.tensor([[1, 2], [3, 4]]).repeatInterleave(2, 0).toArray()).toEqual([[1, 2], [1, 2], [3, 4], [3, 4]]);
    expect(q.tensor([1, 2, 3]).repeatInterleave(q.tensor([1, 0, 2], { dtype: 'int32' })).toArray()).toEqual([1, 3, 3]);
    checkOp((x) => x.repeatInterleave(2, 1), [[2, 3]]);
    expect(() => q.zeros([3]).repeatInterleave([1, 2])).toThrow(/repeatInterleave: repeats must hold 3 non-negative integers/);
  });
});

describe('flip and roll', () => {
  const shapeAndDims = arb.shape({ minRank: 1, maxRank: 3 }).chain((s) => fc.tuple(fc.constant(s), fc.subarray(s.map((_, i) => i))));
  it('flip reverses the chosen dims, is a copy, and passes gradcheck on strided inputs', () => {
    fc.assert(
      fc.property(shapeAndDims, fc.boolean(), ([s, dims], nonContiguous) => {
        const x = f64(s);
        const y = x.flip(dims);
        expect(Array.from(y.dataSync())).toEqual(reference(x, s, (i, get) => get(i.map((v, d) => (dims.includes(d) ? s[d]! - 1 - v : v)))));
        gradcheck((t) => t.flip(dims), [x], { nonContiguous });
      }),
      RUNS,
    );
    const x = q.tensor([[1, 2], [3, 4]]);
    expect(x.flip(0, 1).toArray()).toEqual([[4, 3], [2, 1]]);
    expect(x.T.flip(-1).toArray()).toEqual([[3, 1], [4, 2]]);
    expect(q.flip(x.slice(1, null, null, 2), [0]).toArray()).toEqual([[3], [1]]);
    const y = x.flip([0]);
    expect(y.storage).not.toBe(x.storage);
    y.fill_(0);
    expect(x.toArray()).toEqual([[1, 2], [3, 4]]);
    checkOp((t) => t.flip(0, 2), [[2, 3, 4]]);
    gradgradcheck((t) => t.flip(1), f64([2, 3]));
    expect(() => x.flip(0, 0)).toThrow(/flip: dim appears multiple times/);
  });

  it('roll rotates along dims (or flattened) like torch.roll and passes gradcheck', () => {
    fc.assert(
      fc.property(shapeAndDim, fc.integer({ min: -7, max: 7 }), fc.boolean(), ([s, dim], shift, nonContiguous) => {
        const x = f64(s);
        const d = dim < 0 ? dim + s.length : dim;
        const mod = (a: number, n: number) => ((a % n) + n) % n;
        expect(Array.from(x.roll(shift, dim).dataSync())).toEqual(reference(x, s, (i, get) => get(i.map((v, k) => (k === d ? mod(v - shift, s[d]!) : v)))));
        const flat = Array.from(x.dataSync());
        expect(Array.from(x.roll(shift).dataSync())).toEqual(flat.map((_, i) => flat[mod(i - shift, flat.length)]!));
        gradcheck((t) => t.roll(shift, dim), [x], { nonContiguous });
      }),
      RUNS,
    );
    const x = q.tensor([[1, 2, 3], [4, 5, 6]]);
    expect(x.roll(1).toArray()).toEqual([[6, 1, 2], [3, 4, 5]]);
    expect(x.roll([1, -1], [0, 1]).toArray()).toEqual([[5, 6, 4], [2, 3, 1]]);
    checkOp((t) => t.roll([1, 2], [0, 1]), [[3, 4]]);
    expect(() => x.roll([1, 2], [0])).toThrow(/roll: shifts \[1, 2\] and dims \[0\] must have the same length/);
  });
});
