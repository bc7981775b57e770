/**
 * @file Tests of the QuEST-style Hadamard QAT layer (qat/hadamard.ts): the centred RMS grid, the
 * rotation preserving x·Wᵀ, the trust mask through the rotation against a hand-written closed
 * form, the STE baseline, prepareHadamardQAT and the error messages.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { Linear, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { assertAllclose } from '@qgrad/core/testing';

const f64 = (s: number[], seed: number) => q.randn(s, { dtype: 'float64', generator: new q.Generator(seed) });
const lin = (inF: number, outF: number, seed: number) => {
  const l = new Linear(inF, outF, { dtype: 'float64', generator: new q.Generator(seed) });
  return l;
};

describe('rmsQuantize (centred Gaussian-MSE grid)', () => {
  it('puts every value on the half-integer grid of its row, within ±α, with at most 2^b levels', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 999 }), fc.constantFrom(1, 2, 3, 4), (seed, bits) => {
        const x = f64([3, 64], seed);
        const y = Q.rmsQuantize(x, bits, 'ste');
        const a = Q.GAUSSIAN_MSE_ALPHA[bits]!;
        for (let r = 0; r < 3; r++) {
          const row = Array.from(x.select(0, r).dataSync());
          const rms = Math.sqrt(row.reduce((s, v) => s + v * v, 0) / row.length);
          const step = (2 * a * rms) / (2 ** bits - 1);
          const out = Array.from(y.select(0, r).dataSync());
          for (const v of out) {
            const k = v / step + 0.5;
            expect(Math.abs(k - Math.round(k))).toBeLessThan(1e-9);
            expect(Math.abs(v)).toBeLessThanOrEqual(a * rms + 1e-9);
            expect(v).not.toBe(0);
          }
          expect(new Set(out.map((v) => v.toFixed(9))).size).toBeLessThanOrEqual(2 ** bits);
        }
      }),
      { numRuns: 12 },
    );
  });

  it('is scale-equivariant: Q(c·x) = c·Q(x) for c > 0', () => {
    const x = f64([4, 32], 5);
    assertAllclose(Q.rmsQuantize(x.mul(3.5), 3, 'ste'), Q.rmsQuantize(x, 3, 'ste').mul(3.5), { atol: 1e-9 });
  });

  it('passes the gradient only where |x̂ − x| ≤ Δ/2 under trust, i.e. |x| ≤ α + Δ/2', () => {
    const x = f64([2, 128], 11).mul(1.3);
    const xl = x.detach().requiresGrad_(true);
    const g = f64([2, 128], 12);
    Q.rmsQuantize(xl, 2, 'trust').mul(g).sum().backward();
    const a = Q.GAUSSIAN_MSE_ALPHA[2]!;
    let clipped = 0;
    for (let r = 0; r < 2; r++) {
      const row = Array.from(x.select(0, r).dataSync());
      const rms = Math.sqrt(row.reduce((s, v) => s + v * v, 0) / row.length);
      const step = (2 * a * rms) / 3;
      row.forEach((v, j) => {
        const inside = Math.abs(v) <= a * rms + step / 2;
        if (!inside) clipped++;
        expect(xl.grad!.select(0, r).dataSync()[j]! + 0).toBe(inside ? g.select(0, r).dataSync()[j]! : 0); // +0: −0 where g < 0
      });
    }
    expect(clipped).toBeGreaterThan(0); // the sample exercises both sides of the mask
  });

  it('names the bad bit-width in its error', () => {
    expect(() => Q.rmsQuantize(f64([2, 4], 1), 9)).toThrow(/rmsQuantize: bits must be one of .* got 9 \(input shape \[2, 4\]\)/);
  });
});

describe('HadamardQuantLinear', () => {
  it('computes exactly linear(x, W, b) when disabled, and the rotation alone preserves x·Wᵀ', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 999 }), fc.constantFrom(8, 16, 32), fc.integer({ min: 1, max: 5 }), (seed, inF, outF) => {
        const l = lin(inF, outF, seed);
        const x = f64([2, 3, inF], seed + 1);
        const ref = q.linear(x, l.weight, l.bias);
        const hq = Q.HadamardQuantLinear.from(l, { weight: Q.questConfig(2), input: Q.questConfig(2) });
        hq.enabled = false;
        assertAllclose(hq.forward(x), ref, { atol: 1e-12 });
        const rotated = q.linear(q.hadamard(x, { blockSize: hq.config.blockSize }), q.hadamard(l.weight, { blockSize: hq.config.blockSize }), l.bias);
        assertAllclose(rotated, ref, { atol: 1e-10 });
      }),
      { numRuns: 12 },
    );
  });

  it('is close to the float layer at 8 bits and coarser at 2 bits', () => {
    const l = lin(64, 16, 3);
    const x = f64([4, 64], 4);
    const ref = q.linear(x, l.weight, l.bias);
    const err = (bits: number) => q.linear(x, l.weight, l.bias).sub(Q.HadamardQuantLinear.from(l, { weight: Q.questConfig(bits), input: Q.questConfig(bits) }).forward(x)).square().mean().item() / ref.square().mean().item();
    expect(err(8)).toBeLessThan(1e-3);
    expect(err(2)).toBeGreaterThan(err(8) * 10);
  });

  it('weight gradient equals the closed form ((vᵀ·x̂_h) ⊙ M)·H of the trust estimator through the rotation', () => {
    const inF = 32;
    const l = lin(inF, 4, 21);
    const hq = Q.HadamardQuantLinear.from(l, { weight: Q.questConfig(2), input: Q.questConfig(4), blockSize: 16 });
    const x = f64([5, inF], 22);
    const v = f64([5, 4], 23);
    hq.forward(x).mul(v).sum().backward();
    // closed form: y = x̂_h·Ŵ_hᵀ + b ⇒ dL/dŴ_h = vᵀ·x̂_h; trust mask on W_h; back through H (symmetric)
    const H = (t: q.Tensor) => q.hadamard(t, { blockSize: 16 });
    const xq = Q.rmsQuantize(H(x), 4, 'trust');
    const wh = H(l.weight.detach());
    const wq = Q.rmsQuantize(wh, 2, 'trust');
    const step = q.sqrt(wh.square().mean(-1, true)).mul((2 * Q.GAUSSIAN_MSE_ALPHA[2]!) / 3);
    const mask = q.le(wq.sub(wh).abs(), step.mul(0.5)).to('float64');
    const expected = H(q.matmul(v.transpose(0, 1), xq).mul(mask));
    assertAllclose(l.weight.grad!, expected, { atol: 1e-10 });
  });

  it("with estimator 'ste' and no rotation passes the full upstream gradient to the input", () => {
    const l = lin(16, 3, 31);
    const hq = Q.HadamardQuantLinear.from(l, { weight: Q.questConfig(2, { estimator: 'ste' }), input: Q.questConfig(2, { estimator: 'ste' }), rotate: false });
    const x = f64([4, 16], 32).mul(4).requiresGrad_(true); // many inputs far outside ±α
    const v = f64([4, 3], 33);
    hq.forward(x).mul(v).sum().backward();
    const wq = hq.quantizedWeight().detach();
    assertAllclose(x.grad!, q.matmul(v, wq), { atol: 1e-12 });
  });

  it('per-group weight steps quantize each group of the rotated row independently', () => {
    const l = lin(32, 2, 41);
    const hq = Q.HadamardQuantLinear.from(l, { weight: { ...Q.questConfig(3), granularity: { group: 8 } } });
    const wh = q.hadamard(l.weight, { blockSize: 32 });
    const byGroup = Q.rmsQuantize(wh.reshape([2, 4, 8]), 3).reshape([2, 32]);
    assertAllclose(hq.quantizedWeight(), byGroup, { atol: 1e-12 });
  });

  it('rejects bit-widths without an α*, block sizes and groups that do not divide the inputs', () => {
    expect(() => Q.HadamardQuantLinear.from(lin(16, 2, 1), { weight: Q.questConfig(9) })).toThrow(/HadamardQuantLinear weight: centered grid: bits must be an integer in 1…8, got 9/);
    expect(() => Q.HadamardQuantLinear.from(lin(16, 2, 1), { weight: { grid: 'int', bits: 12, scale: 'gaussian' } })).toThrow(/HadamardQuantLinear weight: scale rule 'gaussian' needs a grid of .* bits; grid 'int12' has 12/);
    expect(() => Q.HadamardQuantLinear.from(lin(24, 2, 1), { weight: Q.questConfig(4), blockSize: 16 })).toThrow(/blockSize 16 must divide inFeatures 24/);
    expect(() => Q.HadamardQuantLinear.from(lin(16, 2, 1), { weight: { ...Q.questConfig(4), granularity: { group: 5 } } })).toThrow(/HadamardQuantLinear weight: axis 1 of size 16 \(shape \[2, 16\]\) does not split into groups of 5/);
  });
});

describe('prepareHadamardQAT', () => {
  it('swaps matching Linear layers in place, sharing their weights, and honours skip', () => {
    const m = new Sequential(lin(16, 8, 1), lin(8, 4, 2));
    const w0 = (m.at(0) as Linear).weight;
    const names = Q.prepareHadamardQAT(m, { weight: Q.questConfig(4), input: Q.questConfig(4) }, { skip: ['1'] });
    expect(names).toEqual(['0']);
    expect(m.at(0)).toBeInstanceOf(Q.HadamardQuantLinear);
    expect(m.at(1)).toBeInstanceOf(Linear);
    expect((m.at(0) as Q.HadamardQuantLinear).weight).toBe(w0);
    expect(m.forward(f64([2, 16], 3)).shape).toEqual([2, 4]);
  });
});
