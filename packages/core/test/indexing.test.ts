import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb, checkOp, gradcheck, gradgradcheck as gradgradcheckAll } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';
import { ravel, unravel } from './helpers.js';

const gradgradcheck = (fn: (x: Tensor) => Tensor, x: Tensor) => gradgradcheckAll(fn, [x]);

const f64 = (s: number[]) => q.rand(s, { dtype: 'float64' }).mul(4).sub(2);
const i32 = (data: number[] | number[][], shape?: number[]) => q.tensor(data, { dtype: 'int32', shape });
const RUNS = { numRuns: 12 };



/**
 * A shape, a dim, and a gather/scatter index for it: same rank, no larger outside dim, any size
 * (0–3) along dim, values in range. Also returns the index values.
 */
const gatherCase = arb
  .shape({ minRank: 1, maxRank: 3 })
  .chain((s) =>
    fc.tuple(
      fc.constant(s),
      fc.integer({ min: -s.length, max: s.length - 1 }),
      fc.tuple(...s.map((n) => fc.integer({ min: 1, max: n }))),
      fc.integer({ min: 0, max: 3 }),
    ),
  )
  .chain(([s, dim, idxShape, along]) => {
    const d = dim < 0 ? dim + s.length : dim;
    const shape = idxShape.map((n, i) => (i === d ? along : n));
    const count = shape.reduce((a, b) => a * b, 1);
    return fc.array(fc.nat({ max: s[d]! - 1 }), { minLength: count, maxLength: count }).map((vals) => ({ s, dim, d, shape, vals }));
  });

describe('gather and scatterAdd', () => {
  it('gather picks x[..., index[i], ...] along dim and passes gradcheck, also on strided inputs', () => {
    fc.assert(
      fc.property(gatherCase, fc.boolean(), ({ s, dim, d, shape, vals }, nonContiguous) => {
        const x = f64(s);
        const index = i32(vals, shape);
        const y = x.gather(dim, index);
        expect(y.shape).toEqual(shape);
        const xv = x.dataSync();
        const expected = vals.map((v, p) => xv[ravel(unravel(p, shape).map((c, k) => (k === d ? v : c)), s)]!);
        expect(Array.from(y.dataSync())).toEqual(expected);
        gradcheck((t) => t.gather(dim, index), [x], { nonContiguous });
      }),
      RUNS,
    );
    expect(q.tensor([[1, 2], [3, 4]]).gather(1, i32([[1, 1], [0, 1]])).toArray()).toEqual([[2, 2], [3, 4]]);
    checkOp((x) => x.gather(1, i32([[0, 3], [1, 1], [2, 0]])), [[3, 4]]);
  });

  it('scatterAdd adds src at the indexed places (summing duplicates) and passes gradcheck for x and src', () => {
    fc.assert(
      fc.property(gatherCase, fc.boolean(), ({ s, dim, d, shape, vals }, nonContiguous) => {
        const x = f64(s);
        const src = f64(shape);
        const index = i32(vals, shape);
        const expected = Array.from(x.dataSync());
        const sv = src.dataSync();
        vals.forEach((v, p) => {
          expected[ravel(unravel(p, shape).map((c, k) => (k === d ? v : c)), s)] += sv[p]!;
        });
        const y = x.scatterAdd(dim, index, src);
        expect(y.shape).toEqual(s);
        Array.from(y.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 12));
        gradcheck((a, b) => q.scatterAdd(a, dim, index, b), [x, src], { nonContiguous });
      }),
      RUNS,
    );
    expect(q.zeros([3]).scatterAdd(0, i32([0, 0, 2]), q.ones([3])).toArray()).toEqual([2, 0, 1]);
    checkOp((x, s) => x.scatterAdd(1, i32([[0, 3], [1, 1], [2, 0]]), s), [[3, 4], [3, 2]]);
  });

  it('support double backward (each is the gradient of the other)', () => {
    const index = i32([[0, 2, 2], [1, 0, 0]]);
    gradgradcheck((x) => x.gather(0, index), f64([3, 3]));
    gradgradcheck((s) => q.scatterAdd(f64([3, 3]), 0, index, s), f64([2, 3]));
  });

  it('accept uint8 and int8 indices and strided index views', () => {
    const x = q.tensor([[1, 2, 3], [4, 5, 6]]);
    expect(x.gather(1, q.tensor([[2], [0]], { dtype: 'uint8' })).toArray()).toEqual([[3], [4]]);
    expect(x.gather(1, q.tensor([[1], [1]], { dtype: 'int8' })).toArray()).toEqual([[2], [5]]);
    const idx = i32([[0, 1], [2, 0]]).T; // [[0, 2], [1, 0]], non-contiguous
    expect(x.gather(1, idx).toArray()).toEqual([[1, 3], [5, 4]]);
  });

  it('name the op and the shapes on bad indices', () => {
    const x = q.zeros([2, 3]);
    expect(() => x.gather(1, i32([[3], [0]]))).toThrow(/^gather: index 3 is out of range \[0, 3\) \(input \[2, 3\], index \[2, 1\], dim 1\)/);
    expect(() => x.scatterAdd(0, i32([[5]]), q.ones([1, 1]))).toThrow(/^scatterAdd: index 5 is out of range \[0, 2\) .*input \[2, 3\], index \[1, 1\], src \[1, 1\], dim 0/);
    expect(() => x.gather(1, i32([0, 1]))).toThrow(/gather: index of shape \[2\] must have the same number of dims as input \[2, 3\]/);
    expect(() => x.gather(1, i32([[0], [0], [0]]))).toThrow(/gather: index of shape \[3, 1\]/);
    expect(() => x.gather(1, q.tensor([[0.0]]))).toThrow(/gather: index must be an integer tensor \(int32\), got float32/);
    expect(() => x.scatterAdd(1, i32([[0, 1]]), q.ones([1, 1]))).toThrow(/scatterAdd: index of shape \[1, 2\] .*src \[1, 1\]/);
  });
});

describe('indexSelect, indexAdd and take', () => {
  const selectCase = arb
    .shape({ minRank: 1, maxRank: 3 })
    .chain((s) => fc.tuple(fc.constant(s), fc.integer({ min: -s.length, max: s.length - 1 })))
    .chain(([s, dim]) => {
      const d = dim < 0 ? dim + s.length : dim;
      return fc.array(fc.nat({ max: s[d]! - 1 }), { maxLength: 5 }).map((vals) => ({ s, dim, d, vals }));
    });

  it('indexSelect picks slices (with repeats) and passes gradcheck', () => {
    fc.assert(
      fc.property(selectCase, fc.boolean(), ({ s, dim, d, vals }, nonContiguous) => {
        const x = f64(s);
        const y = x.indexSelect(dim, i32(vals));
        const shape = s.map((n, i) => (i === d ? vals.length : n));
        expect(y.shape).toEqual(shape);
        const xv = x.dataSync();
        expect(Array.from(y.dataSync())).toEqual(Array.from(y.dataSync(), (_, p) => xv[ravel(unravel(p, shape).map((c, k) => (k === d ? vals[c]! : c)), s)]!));
        gradcheck((t) => t.indexSelect(dim, i32(vals)), [x], { nonContiguous });
      }),
      RUNS,
    );
    expect(q.tensor([[1, 2], [3, 4]]).indexSelect(0, i32([1, 1, 0])).toArray()).toEqual([[3, 4], [3, 4], [1, 2]]);
    expect(q.tensor([[1, 2], [3, 4]]).indexSelect(1, q.tensor(1, { dtype: 'int32' })).toArray()).toEqual([[2], [4]]);
    checkOp((x) => x.indexSelect(0, i32([2, 0, 2])), [[3, 4]]);
  });

  it('indexAdd adds alpha·src at the selected slices and passes gradcheck for x and src', () => {
    fc.assert(
      fc.property(selectCase, fc.boolean(), ({ s, dim, d, vals }, nonContiguous) => {
        const x = f64(s);
        const shape = s.map((n, i) => (i === d ? vals.length : n));
        const src = f64(shape);
        const expected = Array.from(x.dataSync());
        const sv = src.dataSync();
        for (let p = 0; p < sv.length; p++) {
          const c = unravel(p, shape);
          expected[ravel(c.map((v, k) => (k === d ? vals[v]! : v)), s)] += 0.5 * sv[p]!;
        }
        Array.from(x.indexAdd(dim, i32(vals), src, 0.5).dataSync()).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 12));
        gradcheck((a, b) => q.indexAdd(a, dim, i32(vals), b, 0.5), [x, src], { nonContiguous });
      }),
      RUNS,
    );
    expect(q.zeros([3]).indexAdd(0, i32([2, 2]), q.ones([2])).toArray()).toEqual([0, 0, 2]);
    checkOp((x, s) => x.indexAdd(1, i32([0, 0, 3]), s), [[2, 4], [2, 3]]);
  });

  it('support double backward', () => {
    gradgradcheck((x) => x.indexSelect(1, i32([2, 0, 2])), f64([2, 3]));
    gradgradcheck((s) => q.indexAdd(f64([3, 2]), 0, i32([1, 1]), s), f64([2, 2]));
  });

  it('take reads the flattened tensor at the index positions, keeping the index shape', () => {
    const x = q.tensor([[1, 2, 3], [4, 5, 6]]);
    expect(x.take(i32([[0, 5], [4, 4]])).toArray()).toEqual([[1, 6], [5, 5]]);
    expect(x.T.take(i32([1, 2])).toArray()).toEqual([4, 2]);
    gradcheck((t) => t.take(i32([[0, 5], [4, 4]])), [f64([2, 3])], { nonContiguous: true });
    checkOp((t) => t.take(i32([3, 3, 0])), [[2, 3]]);
  });

  it('name the op and the shapes on bad indices', () => {
    expect(() => q.zeros([2, 3]).indexSelect(0, i32([0, 2]))).toThrow(/^indexSelect: index 2 is out of range \[0, 2\) \(input \[2, 3\], index \[2\], dim 0\)/);
    expect(() => q.zeros([2, 3]).indexSelect(0, i32([[0]]))).toThrow(/indexSelect: index must be 1-D \(or 0-D\), got shape \[1, 1\]/);
    expect(() => q.zeros([2, 3]).indexAdd(1, i32([0]), q.ones([2, 2]))).toThrow(/indexAdd: src of shape \[2, 2\] must have shape \[2, 1\]/);
    expect(() => q.zeros([2, 3]).take(i32([6]))).toThrow(/^take: index 6 is out of range \[-6, 6\) \(input \[2, 3\], index \[1\]\)$/);
  });
});

describe('embedding', () => {
  it('looks up rows with output shape indices.shape + [dim] and passes gradcheck', () => {
    fc.assert(
      fc.property(arb.shape({ maxRank: 2 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 3 }), fc.boolean(), (s, n, dim, nonContiguous) => {
        const count = s.reduce((a, b) => a * b, 1);
        const vals = Array.from({ length: count }, (_, i) => (i * 5 + 1) % n);
        const idx = i32(vals, s);
        const w = f64([n, dim]);
        const y = q.embedding(idx, w);
        expect(y.shape).toEqual([...s, dim]);
        const wv = w.dataSync();
        expect(Array.from(y.dataSync())).toEqual(vals.flatMap((v) => Array.from({ length: dim }, (_, j) => wv[v * dim + j]!)));
        gradcheck((t) => q.functional.embedding(idx, t), [w], { nonContiguous });
      }),
      RUNS,
    );
    checkOp((w) => q.embedding(i32([[1, 3], [0, 1]]), w), [[4, 3]]);
  });

  it('gives the paddingIdx row no gradient but keeps its value in the output', () => {
    const w = q.tensor([[1, 1], [2, 2], [3, 3]], { requiresGrad: true, dtype: 'float64' });
    const idx = i32([0, 2, 2, 1]);
    const y = q.embedding(idx, w, { paddingIdx: 2 });
    expect(y.toArray()).toEqual([[1, 1], [3, 3], [3, 3], [2, 2]]);
    y.sum().backward();
    expect(w.grad!.toArray()).toEqual([[1, 1], [1, 1], [0, 0]]);
    w.zeroGrad();
    q.embedding(idx, w, { paddingIdx: -3 }).sum().backward();
    expect(w.grad!.toArray()).toEqual([[0, 0], [1, 1], [2, 2]]);
    // with the padding row held constant, the (blocked) gradient is the true derivative for the other rows
    const pad = f64([1, 2]);
    gradcheck((t) => q.embedding(i32([[1, 0], [2, 0]]), q.cat([pad, t]), { paddingIdx: 0 }), [f64([2, 2])]);
  });

  it('names embedding and both shapes on out-of-range indices', () => {
    expect(() => q.embedding(i32([[1, 5]]), q.zeros([3, 2]))).toThrow(/^embedding: index 5 is out of range \[0, 3\) \(indices \[1, 2\], weight \[3, 2\]\)$/);
    expect(() => q.embedding(i32([1]), q.zeros([3]))).toThrow(/embedding: weight must be 2-D/);
  });
});

describe('negative and out-of-range indices', () => {
  /** Valid ids in [0, n) with `bad` at one place. */
  const ids = (count: number, n: number, bad: number, at: number) => i32(Array.from({ length: count }, (_, i) => (i === at ? bad : (i * 7) % n)));

  for (const backend of (['js', 'wasm'] as const).filter((b) => q.availableBackends().includes(b))) {
    // PyTorch raises here; counting -1 from the end would read (or add to) the last row silently
    it(`gather, scatterAdd, indexSelect, indexAdd and embedding reject -1 on ${backend}, naming the op, the value and [0, n), in small and wasm-sized calls`, () => {
      q.withBackend(backend, () => {
        const x = q.rand([2, 3]);
        expect(() => x.gather(1, i32([[0], [-1]]))).toThrow(/^gather: index -1 is out of range \[0, 3\) \(input \[2, 3\], index \[2, 1\], dim 1\)$/);
        expect(() => x.scatterAdd(1, i32([[-1]]), q.ones([1, 1]))).toThrow(/^scatterAdd: index -1 is out of range \[0, 3\) \(input \[2, 3\], index \[1, 1\], src \[1, 1\], dim 1\)$/);
        expect(() => x.indexSelect(0, i32([1, -2]))).toThrow(/^indexSelect: index -2 is out of range \[0, 2\) \(input \[2, 3\], index \[2\], dim 0\)$/);
        expect(() => x.indexAdd(0, i32([-1]), q.ones([1, 3]))).toThrow(/^indexAdd: index -1 is out of range \[0, 2\) \(input \[2, 3\], index \[1\], src \[1, 3\], dim 0\)$/);
        expect(() => q.embedding(i32([[0, -1]]), q.rand([3, 2]))).toThrow(/^embedding: index -1 is out of range \[0, 3\) \(indices \[1, 2\], weight \[3, 2\]\)$/);
        // ≥ 2048 moved elements: the sizes at which the wasm kernels take the call
        const table = q.rand([256, 16]);
        expect(() => q.embedding(ids(2048, 256, -1, 1000), table)).toThrow(/^embedding: index -1 is out of range \[0, 256\) \(indices \[2048\], weight \[256, 16\]\)$/);
        expect(() => table.indexSelect(0, ids(2048, 256, -256, 5))).toThrow(/^indexSelect: index -256 is out of range \[0, 256\)/);
        expect(() => q.indexAdd(q.zeros([256, 16]), 0, ids(2048, 256, -1, 2047), q.ones([2048, 16]))).toThrow(/^indexAdd: index -1 is out of range \[0, 256\)/);
        const wide = q.rand([64, 256]);
        const g = ids(64 * 128, 256, -1, 4000).reshape(64, 128);
        expect(() => wide.gather(1, g)).toThrow(/^gather: index -1 is out of range \[0, 256\) \(input \[64, 256\], index \[64, 128\], dim 1\)$/);
        expect(() => q.scatterAdd(q.zeros([8, 256]), 1, ids(2048, 256, -1, 9).reshape(8, 256), q.ones([8, 256]))).toThrow(/^scatterAdd: index -1 is out of range \[0, 256\)/);
        // the same large calls with the index made valid still work, forward and backward
        const valid = ids(2048, 256, 3, 1000);
        const w = q.rand([256, 16], { requiresGrad: true });
        const y = q.embedding(valid, w);
        expect(Array.from(y.dataSync().subarray(1000 * 16, 1001 * 16))).toEqual(Array.from(w.dataSync().subarray(3 * 16, 4 * 16)));
        y.sum().backward(); // the backward is an indexAdd of the same (checked) index
        const counts = new Array<number>(256).fill(0);
        for (const v of valid.dataSync()) counts[v]!++;
        expect(Array.from(w.grad!.dataSync())).toEqual(counts.flatMap((c) => new Array<number>(16).fill(c)));
      });
    });

    it(`take counts negative indices from the end, as torch.take does, and names take and [-n, n) otherwise, on ${backend}`, () => {
      q.withBackend(backend, () => {
        const x = q.tensor([[1, 2, 3], [4, 5, 6]]);
        expect(x.take(i32([-1, 0, -6]).reshape(3, 1)).toArray()).toEqual([[6], [1], [1]]);
        gradcheck((t) => t.take(i32([-1, 2, -1])), [f64([2, 3])]);
        expect(() => x.take(i32([0, -7]))).toThrow(/^take: index -7 is out of range \[-6, 6\) \(input \[2, 3\], index \[2\]\)$/);
        expect(() => x.take(i32([6]))).toThrow(/^take: index 6 is out of range \[-6, 6\)/);
        const big = q.rand([4096]);
        expect(Array.from(big.take(ids(4096, 4096, -1, 0)).dataSync().subarray(0, 2))).toEqual([big.dataSync()[4095], big.dataSync()[7]]);
      });
    });
  }
});

describe('maskedFill and oneHot', () => {
  it('maskedFill puts value where the broadcast mask is set, keeps dtype, and routes no gradient there', () => {
    fc.assert(
      fc.property(arb.broadcastShapes({ maxRank: 3 }), fc.boolean(), ([sx, sm], nonContiguous) => {
        const full = q.zeros(sx).add(q.zeros(sm)).shape;
        const x = f64(full);
        const mask = q.rand(sm).gt(0.5);
        const y = x.maskedFill(mask, 0.25);
        const mx = q.zeros(full).add(mask).dataSync();
        expect(Array.from(y.dataSync())).toEqual(Array.from(x.dataSync(), (v, i) => (mx[i] ? 0.25 : v)));
        gradcheck((t) => t.maskedFill(mask, 0.25), [x], { nonContiguous });
      }),
      RUNS,
    );
    const x = q.tensor([1, 2, 3], { dtype: 'int32' });
    const y = x.maskedFill(q.tensor([1, 0, 1], { dtype: 'uint8' }), 7);
    expect(y.dtype).toBe('int32');
    expect(y.toArray()).toEqual([7, 2, 7]);
    expect(q.tensor([[1, 2], [3, 4]]).maskedFill(q.tensor([0, 1], { dtype: 'uint8' }), q.tensor(-1)).toArray()).toEqual([[1, -1], [3, -1]]);
    checkOp((t) => t.maskedFill(t.gt(0), -1.5), [[3, 4]]);
    expect(() => q.zeros([2]).maskedFill(q.zeros([2, 2], { dtype: 'uint8' }), 1)).toThrow(/maskedFill: mask of shape \[2, 2\] must broadcast to the input's shape \[2\]/);
  });

  it('oneHot gives int32 rows, infers numClasses from the max, and rejects out-of-range classes', () => {
    const y = q.functional.oneHot(i32([[0, 2], [1, 0]]), 4);
    expect(y.dtype).toBe('int32');
    expect(y.toArray()).toEqual([[[1, 0, 0, 0], [0, 0, 1, 0]], [[0, 1, 0, 0], [1, 0, 0, 0]]]);
    expect(q.oneHot(i32([2, 0])).toArray()).toEqual([[0, 0, 1], [1, 0, 0]]);
    expect(q.oneHot(q.tensor([1], { dtype: 'uint8' }), 2).toArray()).toEqual([[0, 1]]);
    expect(() => q.oneHot(i32([3]), 3)).toThrow(/oneHot: class values must be smaller than numClasses 3, got 3/);
    expect(() => q.oneHot(i32([-1]), 3)).toThrow(/oneHot: class values must be non-negative/);
    expect(() => q.oneHot(q.tensor([1.5]), 3)).toThrow(/oneHot: index must be an integer tensor/);
  });
});
