/**
 * @file The fused Adam step (`adamStep_`): equals PyTorch's op-by-op Adam/AdamW arithmetic, takes
 * a strided gradient, and refuses layouts it cannot update in place.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb } from '@qgrad/core/testing';

/** The op-by-op update Adam and AdamW run without the kernel (float64, same op order). */
function reference(p: number[], g: number[], m: number[], v: number[], o: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; decoupled: boolean; step: number }) {
  const bc1 = 1 - o.beta1 ** o.step;
  const bc2Sqrt = Math.sqrt(1 - o.beta2 ** o.step);
  return p.map((pi, i) => {
    let gi = g[i]!;
    if (o.decoupled) pi *= 1 - o.lr * o.weightDecay;
    else gi += o.weightDecay * pi;
    const w = 1 - o.beta1;
    m[i] = w < 0.5 ? m[i]! + (gi - m[i]!) * w : gi - (gi - m[i]!) * (1 - w);
    v[i] = v[i]! * o.beta2 + (1 - o.beta2) * gi * gi;
    return pi + (m[i]! * (-o.lr / bc1)) / (Math.sqrt(v[i]!) / bc2Sqrt + o.eps);
  });
}

describe('adamStep_', () => {
  it('updates param and moments in place like the op-by-op update, with a transposed gradient', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 2, maxRank: 2 }), arb.seed(), fc.boolean(), fc.constantFrom(0.9, 0.3), (s, seed, decoupled, beta1) => {
        const g0 = new q.Generator(seed);
        const p = q.randn(s, { dtype: 'float64', generator: g0 });
        const gT = q.randn([s[1]!, s[0]!], { dtype: 'float64', generator: g0 }).transpose(0, 1); // strided
        const m = q.randn(s, { dtype: 'float64', generator: g0 }).mul(0.1);
        const v = q.rand(s, { dtype: 'float64', generator: g0 });
        const o = { lr: 0.01, beta1, beta2: 0.99, eps: 1e-8, weightDecay: 0.05, decoupled, maximize: false, step: 3 };
        const mRef = [...m.dataSync()];
        const vRef = [...v.dataSync()];
        const want = reference([...p.dataSync()], [...gT.dataSync()], mRef, vRef, o);
        const version = p.version;
        expect(q.adamStep_(p, gT, m, v, o)).toBe(true);
        expect([...p.dataSync()]).toEqual(want);
        expect([...m.dataSync()]).toEqual(mRef);
        expect([...v.dataSync()]).toEqual(vRef);
        expect(p.version).toBe(version + 1);
      }),
      { numRuns: 30 },
    );
  });

  it('returns false and changes nothing for a non-contiguous param or mismatched dtypes', () => {
    const p = q.randn([4, 3]).transpose(0, 1);
    const before = [...p.dataSync()];
    const o = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: true, maximize: false, step: 1 };
    expect(q.adamStep_(p, q.ones([3, 4]), q.zeros([3, 4]), q.zeros([3, 4]), o)).toBe(false);
    expect([...p.dataSync()]).toEqual(before);
    expect(q.adamStep_(q.zeros([3]), q.ones([3], { dtype: 'float64' }), q.zeros([3]), q.zeros([3]), o)).toBe(false);
  });
});
