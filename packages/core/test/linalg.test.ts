import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb, assertAllclose, checkOp, gradcheck } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';

const f64 = (s: number[]) => q.rand(s, { dtype: 'float64' }).mul(4).sub(2);
const dim = fc.integer({ min: 1, max: 4 });

/** Reference batched matmul by loops over the broadcast batch (both operands at least 2-D). */
function refMatmul(a: Tensor, b: Tensor): { shape: number[]; values: number[] } {
  const batch = q.zeros(a.shape.slice(0, -2)).add(q.zeros(b.shape.slice(0, -2))).shape;
  const [m, k] = a.shape.slice(-2) as [number, number];
  const n = b.shape[b.ndim - 1]!;
  const ad = a.expand([...batch, m, k]).contiguous().dataSync();
  const bd = b.expand([...batch, k, n]).contiguous().dataSync();
  const count = batch.reduce((x, y) => x * y, 1);
  const values: number[] = [];
  for (let t = 0; t < count; t++)
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let l = 0; l < k; l++) s += ad[t * m * k + i * k + l]! * bd[t * k * n + l * n + j]!;
        values.push(s);
      }
  return { shape: [...batch, m, n], values };
}

describe('matmul', () => {
  it('matches a loop reference and passes gradcheck with broadcast batch dims, contiguous and strided', () => {
    fc.assert(
      fc.property(arb.broadcastShapes({ maxRank: 2, maxDim: 3 }), dim, dim, dim, fc.boolean(), ([ba, bb], m, k, n, nonContiguous) => {
        const a = f64([...ba, m, k]);
        const b = f64([...bb, k, n]);
        const y = q.matmul(a, b);
        const ref = refMatmul(a, b);
        expect(y.shape).toEqual(ref.shape);
        assertAllclose(y, ref.values, { rtol: 1e-12, atol: 1e-12 });
        gradcheck(q.matmul, [a, b], { nonContiguous });
      }),
      { numRuns: 20 },
    );
    checkOp(q.matmul, [[2, 3, 4], [4, 5]]);
  });

  it('reads transposed (non-contiguous) operands without copying them first', () => {
    fc.assert(
      fc.property(dim, dim, dim, (m, k, n) => {
        const at = f64([k, m]);
        const bt = f64([n, k]);
        const y = q.matmul(at.t(), bt.t());
        assertAllclose(y, refMatmul(at.t().contiguous(), bt.t().contiguous()).values, { rtol: 1e-12, atol: 1e-12 });
        gradcheck((x, z) => q.matmul(x.transpose(-1, -2), z.transpose(-1, -2)), [at, bt]);
      }),
      { numRuns: 12 },
    );
    checkOp((a, b) => a.transpose(1, 2).matmul(b.t()), [[2, 4, 3], [5, 4]]);
  });

  it('follows PyTorch for 1-D operands: dot, prepended and appended dims removed afterwards', () => {
    const v = q.tensor([1, 2, 3], { dtype: 'float64' });
    const d = q.matmul(v, v);
    expect(d.shape).toEqual([]);
    expect(d.item()).toBe(14);
    const m = q.arange(6, undefined, 1, { dtype: 'float64' }).reshape(2, 3);
    expect(q.matmul(m, v).toArray()).toEqual([8, 26]); // [2, 3]·[3] → [2]
    expect(q.matmul(q.tensor([1, 1], { dtype: 'float64' }), m).toArray()).toEqual([3, 5, 7]); // [2]·[2, 3] → [3]
    expect(q.matmul(q.zeros([4, 2, 3]), q.zeros([3])).shape).toEqual([4, 2]);
    expect(q.matmul(q.zeros([3]), q.zeros([4, 3, 5])).shape).toEqual([4, 5]);
    fc.assert(
      fc.property(dim, fc.array(dim, { maxLength: 2 }), dim, fc.boolean(), (k, batch, n, left) => {
        const vec = f64([k]);
        const mat = f64([...batch, ...(left ? [k, n] : [n, k])]);
        const fn = left ? (x: Tensor, y: Tensor) => q.matmul(x, y) : (x: Tensor, y: Tensor) => q.matmul(y, x);
        gradcheck(fn, [vec, mat], { nonContiguous: true });
        gradcheck((x, y) => q.matmul(x, y), [vec, f64([k])]);
      }),
      { numRuns: 15 },
    );
    checkOp((a, b) => q.matmul(a, b), [[3], [2, 3, 4]]);
  });

  it('gives the analytic Hessian-vector product through double backward', () => {
    fc.assert(
      fc.property(dim, dim, dim, (m, k, n) => {
        const a = f64([m, k]).requiresGrad_();
        const b = f64([k, n]).requiresGrad_();
        const u = f64([m, k]);
        const v = f64([k, n]);
        // f(A, B) = ½‖AB‖²: ∇A = (AB)Bᵀ, ∇B = Aᵀ(AB)
        const ab = q.matmul(a, b);
        const [ga, gb] = q.gradOf([ab.mul(ab).sum().mul(0.5)], [a, b], { createGraph: true });
        const [ha, hb] = q.gradOf([ga!.mul(u).sum().add(gb!.mul(v).sum())], [a, b]);
        // H[U, V] = ((UB + AV)Bᵀ + (AB)Vᵀ, Uᵀ(AB) + Aᵀ(UB + AV))
        const [A, B] = [a.detach(), b.detach()];
        const d = u.matmul(B).add(A.matmul(v));
        const P = A.matmul(B);
        assertAllclose(ha!, d.matmul(B.t()).add(P.matmul(v.t())), { rtol: 1e-10, atol: 1e-10 });
        assertAllclose(hb!, u.t().matmul(P).add(A.t().matmul(d)), { rtol: 1e-10, atol: 1e-10 });
      }),
      { numRuns: 10 },
    );
  });

  it('names both shapes when the inner dims or batch dims do not match', () => {
    expect(() => q.matmul(q.zeros([2, 3]), q.zeros([4, 5]))).toThrow(/matmul: shapes \[2, 3\] and \[4, 5\] cannot be multiplied/);
    expect(() => q.matmul(q.zeros([3]), q.zeros([4]))).toThrow(/matmul: shapes \[3\] and \[4\]/);
    expect(() => q.matmul(q.zeros([2, 2, 3]), q.zeros([5, 3, 4]))).toThrow(/matmul: batch dims \[2\] and \[5\] of shapes \[2, 2, 3\] and \[5, 3, 4\]/);
    expect(() => q.matmul(q.zeros([]), q.zeros([3]))).toThrow(/matmul: both arguments need at least 1 dimension/);
    expect(() => q.matmul(q.zeros([2, 3]), q.zeros([3, 2], { dtype: 'float64' }))).toThrow(/matmul: expected both operands to have the same dtype/);
  });
});

describe('mm, bmm, dot, outer and linear', () => {
  it('pass gradcheck and agree with matmul and broadcasting', () => {
    fc.assert(
      fc.property(dim, dim, dim, dim, (bsz, m, k, n) => {
        const [a, b] = [f64([m, k]), f64([k, n])];
        gradcheck(q.mm, [a, b], { nonContiguous: true });
        gradcheck(q.bmm, [f64([bsz, m, k]), f64([bsz, k, n])], { nonContiguous: true });
        gradcheck(q.dot, [f64([k]), f64([k])], { nonContiguous: true });
        const [x, y] = [f64([m]), f64([n])];
        assertAllclose(q.outer(x, y), x.reshape(m, 1).mul(y.reshape(1, n)));
        gradcheck(q.outer, [x, y], { nonContiguous: true });
      }),
      { numRuns: 12 },
    );
    checkOp(q.mm, [[3, 4], [4, 2]]);
    checkOp(q.bmm, [[2, 3, 4], [2, 4, 2]]);
    checkOp(q.dot, [[5], [5]]);
    checkOp(q.outer, [[3], [4]]);
  });

  it('linear is x·Wᵀ + b with weight [out, in], for any leading dims', () => {
    fc.assert(
      fc.property(fc.array(dim, { maxLength: 2 }), dim, dim, fc.boolean(), (lead, inF, outF, withBias) => {
        const [x, w, b] = [f64([...lead, inF]), f64([outF, inF]), f64([outF])];
        const y = q.linear(x, w, withBias ? b : null);
        expect(y.shape).toEqual([...lead, outF]);
        const ref = q.matmul(x, w.t());
        assertAllclose(y, withBias ? ref.add(b) : ref, { rtol: 1e-12, atol: 1e-12 });
        gradcheck((xx, ww, bb) => q.linear(xx, ww, bb), [x, w, b], { nonContiguous: true });
      }),
      { numRuns: 12 },
    );
    checkOp((x, w, b) => q.functional.linear(x, w, b), [[2, 3, 4], [5, 4], [5]]);
  });

  it('tensor methods delegate to the functions', () => {
    const [a, b] = [f64([2, 3]), f64([3, 2])];
    assertAllclose(a.matmul(b), q.matmul(a, b));
    assertAllclose(a.mm(b), q.mm(a, b));
    assertAllclose(a.reshape(1, 2, 3).bmm(b.reshape(1, 3, 2)), q.matmul(a, b).reshape(1, 2, 2));
    assertAllclose(a.flatten().dot(b.flatten()), a.flatten().mul(b.flatten()).sum());
    assertAllclose(a.flatten().outer(b.flatten()), q.outer(a.flatten(), b.flatten()));
  });

  it('reject wrong ranks and sizes naming the shapes', () => {
    expect(() => q.mm(q.zeros([2, 3, 4]), q.zeros([4, 2]))).toThrow(/mm: expects two 2-D tensors, got shapes \[2, 3, 4\] and \[4, 2\]/);
    expect(() => q.bmm(q.zeros([2, 3, 4]), q.zeros([3, 4, 2]))).toThrow(/bmm: batch sizes differ: shapes \[2, 3, 4\] and \[3, 4, 2\]/);
    expect(() => q.dot(q.zeros([3]), q.zeros([4]))).toThrow(/dot: inconsistent tensor sizes: shapes \[3\] and \[4\]/);
    expect(() => q.outer(q.zeros([3, 1]), q.zeros([4]))).toThrow(/outer: expects two 1-D tensors/);
    expect(() => q.linear(q.zeros([2, 3]), q.zeros([4, 5]))).toThrow(/linear: input of shape \[2, 3\] has 3 features but weight \[4, 5\] expects 5/);
  });
});

// equation, operand shapes, the same computation written with other ops
const EINSUM: [string, number[][], (...xs: Tensor[]) => Tensor][] = [
  ['ij->ji', [[2, 3]], (x) => x.t()],
  ['ij->i', [[2, 3]], (x) => x.sum(1)],
  ['ij->', [[2, 3]], (x) => x.sum()],
  ['ii->i', [[3, 3]], (x) => x.mul(q.eye(3, 3, { dtype: 'float64' })).sum(1)],
  ['ii', [[3, 3]], (x) => x.mul(q.eye(3, 3, { dtype: 'float64' })).sum()],
  ['ij,ij->ij', [[2, 3], [2, 3]], (a, b) => a.mul(b)],
  ['i,j->ij', [[2], [3]], (a, b) => q.outer(a, b)],
  ['i,i->', [[4], [4]], (a, b) => q.dot(a, b)],
  ['ij,jk->ik', [[2, 3], [3, 4]], (a, b) => q.matmul(a, b)],
  ['ij,jk', [[2, 3], [3, 4]], (a, b) => q.matmul(a, b)],
  ['ij,kj->ik', [[2, 3], [4, 3]], (a, b) => q.matmul(a, b.t())],
  ['ij,jk->ki', [[2, 3], [3, 4]], (a, b) => q.matmul(a, b).t()],
  ['bij,bjk->bik', [[2, 2, 3], [2, 3, 4]], (a, b) => q.matmul(a, b)],
  ['bhqd,bhkd->bhqk', [[2, 2, 3, 4], [2, 2, 5, 4]], (a, b) => q.matmul(a, b.transpose(-1, -2))],
  ['...ij,...jk->...ik', [[2, 2, 3], [3, 4]], (a, b) => q.matmul(a, b)],
  ['b...d,d->b...', [[2, 3, 4], [4]], (a, b) => q.matmul(a, b)],
  ['ij,jk,kl->il', [[2, 3], [3, 2], [2, 4]], (a, b, c) => a.matmul(b).matmul(c)],
  ['bi,bi->b', [[3, 4], [3, 4]], (a, b) => a.mul(b).sum(1)],
  ['ijk,ik->j', [[2, 3, 4], [2, 4]], (a, b) => a.mul(b.unsqueeze(1)).sum([0, 2])],
  ['ij,j->ij', [[2, 3], [1]], (a, b) => a.mul(b)],
];

describe('einsum', () => {
  for (const [eq, shapes, ref] of EINSUM) {
    it(`'${eq}' equals the same computation written with other ops, and passes gradcheck`, () => {
      const xs = shapes.map(f64);
      const fn = (...ts: Tensor[]) => q.einsum(eq, ...ts);
      assertAllclose(fn(...xs), ref(...xs), { rtol: 1e-12, atol: 1e-12 });
      expect(fn(...xs).shape).toEqual(ref(...xs).shape);
      gradcheck(fn, xs, { nonContiguous: true });
    });
  }

  it('batch matmul einsum matches matmul on random shapes', () => {
    fc.assert(
      fc.property(dim, dim, dim, dim, (b, i, j, k) => {
        const [x, y] = [f64([b, i, j]), f64([b, j, k])];
        assertAllclose(q.einsum('bij,bjk->bik', x, y), q.matmul(x, y), { rtol: 1e-12, atol: 1e-12 });
      }),
      { numRuns: 10 },
    );
    checkOp((a, b) => q.einsum('bhqd,bhkd->bhqk', a, b), [[1, 2, 3, 4], [1, 2, 5, 4]]);
    const [x, y] = [f64([2, 3]), f64([3, 2])];
    assertAllclose(q.einsum('ij,jk->ik', [x, y]), q.matmul(x, y)); // operands as a list, like torch.einsum(eq, [a, b])
  });

  it('reports malformed equations and size mismatches', () => {
    expect(() => q.einsum('ij,jk->ik', q.zeros([2, 3]))).toThrow(/einsum: 'ij,jk->ik' has 2 operand terms but 1 tensors/);
    expect(() => q.einsum('ijk->i', q.zeros([2, 3]))).toThrow(/einsum: term 'ijk' of 'ijk->i' has 3 subscripts but operand 0 has shape \[2, 3\]/);
    expect(() => q.einsum('ij,jk->ik', q.zeros([2, 3]), q.zeros([4, 5]))).toThrow(/einsum: label 'j' has size 3 in operand of shape \[2, 3\] and 4/);
    expect(() => q.einsum('ij->iz', q.zeros([2, 3]))).toThrow(/output subscript 'z' does not appear/);
    expect(() => q.einsum('i1->i', q.zeros([2, 3]))).toThrow(/invalid subscript '1'/);
  });
});

describe('loraGrads, loraMerge and loraMergePacked', () => {
  it('equals the four products dA = s·(g·B)ᵀ·x, dB = s·gᵀ·(x·Aᵀ) in float64 and float32', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 70 }), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 8 }), fc.constantFrom(0.5, 2, -3), fc.constantFrom('float32' as const, 'float64' as const), fc.nat(1000), (n, inF, outF, r, s, dtype, seed) => {
        const g0 = new q.Generator(seed);
        const [x, g, a, b] = [[n, inF], [n, outF], [r, inF], [outF, r]].map((sh) => q.randn(sh, { generator: g0, dtype }));
        const [da, db] = q.noGrad(() => q.loraGrads(x!, g!, a!, b!, s));
        const wantA = q.matmul(q.matmul(g!, b!).t(), x!).mul(s);
        const wantB = q.matmul(g!.t(), q.matmul(x!, a!.t())).mul(s);
        const tol = dtype === 'float64' ? 1e-12 : 2e-5;
        assertAllclose(da, wantA, { atol: tol * (n + inF + outF), rtol: tol });
        assertAllclose(db, wantB, { atol: tol * (n + inF + outF), rtol: tol });
        expect([da.shape, db.shape]).toEqual([[r, inF], [outF, r]]);
      }),
      { numRuns: 60 },
    );
  });

  it('names the shapes or dtypes that do not fit, and refuses inputs that require grad where grad is on', () => {
    const [x, g, a, b] = [f64([5, 6]), f64([5, 4]), f64([2, 6]), f64([4, 2])];
    expect(() => q.loraGrads(x, g, f64([2, 5]), b, 1)).toThrow(/loraGrads: x \[5, 6\], g \[5, 4\], a \[2, 5\] and b \[4, 2\] do not fit/);
    expect(() => q.loraGrads(x, g, a, b.to('float32'), 1)).toThrow(/must share one dtype/);
    expect(() => q.loraGrads(x, g, a.detach().requiresGrad_(true), b, 1)).toThrow(/has no gradient of its own/);
  });

  it('loraMerge equals add(w0, matmul(b, mul(a, s))) bit for bit (float32 and float64, products past the js cut-off)', () => {
    for (const dtype of ['float32', 'float64'] as const) {
      for (const [outF, inF, r] of [[384, 128, 8], [64, 128, 8], [41, 37, 3]] as const) {
        const g0 = new q.Generator(outF + r);
        const [w0, a, b] = [[outF, inF], [r, inF], [outF, r]].map((sh) => q.randn(sh, { generator: g0, dtype }));
        const got = q.noGrad(() => q.loraMerge(w0!, a!, b!, 0.3));
        const want = q.add(w0!, q.matmul(b!, q.mul(a!, q.scalarLike(0.3, dtype))));
        expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
      }
    }
    expect(() => q.loraMerge(f64([4, 6]), f64([2, 5]), f64([4, 2]), 1)).toThrow(/loraMerge: w0 \[4, 6\], a \[2, 5\] and b \[4, 2\] do not fit/);
  });

  it('loraMergePacked equals loraMerge of the decoded table bit for bit (4-bit fields in groups of 64 and 2-bit with zero points, float32 and float64)', () => {
    for (const dtype of ['float32', 'float64'] as const) {
      for (const [outF, inF, r, bits, gs, zp] of [[384, 128, 8, 4, 64, false], [64, 128, 8, 4, 64, false], [41, 36, 3, 2, 12, true]] as const) {
        const g0 = new q.Generator(outF + r);
        const w: q.PackedWeight = {
          codes: q.randint(0, 256, [Math.ceil((outF * inF * bits) / 8)], { generator: g0 }).to('uint8'), bits, levels: q.randn([2 ** bits], { generator: g0, dtype }),
          scale: q.rand([outF * (inF / gs)], { generator: g0, dtype }), zeroPoint: zp ? q.randn([outF * (inF / gs)], { generator: g0, dtype }) : null, outFeatures: outF, inFeatures: inF, groupSize: gs,
        };
        const [a, b] = [[r, inF], [outF, r]].map((sh) => q.randn(sh, { generator: g0, dtype }));
        const got = q.noGrad(() => q.loraMergePacked(w, a!, b!, 0.3));
        const want = q.noGrad(() => q.loraMerge(q.packedEmbedding(q.arange(0, outF, 1, { dtype: 'int32' }), w), a!, b!, 0.3));
        expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
      }
    }
    const w: q.PackedWeight = { codes: q.zeros([12], { dtype: 'uint8' }), bits: 4, levels: f64([16]), scale: f64([4]), zeroPoint: null, outFeatures: 4, inFeatures: 6, groupSize: 6 };
    expect(() => q.loraMergePacked(w, f64([2, 5]), f64([4, 2]), 1)).toThrow(/loraMergePacked: a \[2, 5\] and b \[4, 2\] do not fit the packed weight \[4, 6\]/);
    expect(() => q.loraMergePacked(w, f64([2, 6]).float(), f64([4, 2]), 1)).toThrow(/must be the packed weight's scale dtype float64/);
  });
});
