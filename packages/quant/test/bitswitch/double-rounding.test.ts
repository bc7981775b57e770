/**
 * @file Double Rounding: lower-width weights equal re-rounding the stored high-width codes (integer
 * only), the highest width is the ordinary int quantizer, double and direct rounding differ by at
 * most one level, ALRS scales the scale's gradient, and switching is one call.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Generator, noGrad, randn } from '@qgrad/core';
import { Linear, ReLU, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

describe('Double Rounding', () => {
  it("lower-bit weights equal re-rounding the high-bit codes", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 4, max: 8 }), fc.integer({ min: 2, max: 7 }), (seed, high, low0) => {
        const low = Math.min(low0, high);
        const g = new Generator(seed);
        const l = Q.BitSwitchLinear.from(new Linear(16, 6, { generator: g }), { bits: [high, low] });
        noGrad(() => l.scale.mul_(0.8)); // some weights clip at the top width too
        const codes = l.storedCodes().dataSync();
        const lowCodes = Q.reroundCodes(codes, high, low);
        const w = noGrad(() => l.quantizedWeight(low)).dataSync();
        const s = l.scale.dataSync();
        // float32 product of the scale and the re-rounded integer; + 0 because a weight rounding to code 0 from below is −0 (round(−0.3) = −0, as PyTorch's)
        for (let i = 0; i < w.length; i++) expect(w[i]! + 0).toBe(Math.fround(s[Math.floor(i / 16)]! * 2 ** (high - low) * lowCodes[i]!));
        // |double − direct| ≤ one level
        const wv = l.weight.dataSync();
        for (let i = 0; i < w.length; i++) {
          const direct = Math.max(-(2 ** (low - 1)), Math.min(2 ** (low - 1) - 1, Math.round(wv[i]! / (s[Math.floor(i / 16)]! * 2 ** (high - low)))));
          expect(Math.abs(lowCodes[i]! - direct)).toBeLessThanOrEqual(1);
        }
      }),
      { numRuns: 30 },
    );
  });

  it('at the highest width it is the ordinary int quantizer with that scale', () => {
    const l = Q.BitSwitchLinear.from(new Linear(32, 4, { generator: new Generator(1) }), { bits: [8, 4] });
    const w = noGrad(() => l.quantizedWeight(8)).dataSync();
    const ref = Q.fakeQuant(l.weight, { grid: 'int', bits: 8, granularity: 'channel', scale: 'fixed' }, { scale: l.scale }).dataSync();
    w.forEach((v, i) => expect(v).toBeCloseTo(ref[i]!, 7));
    expect(Array.from(Q.reroundCodes([127, -128, 24, 8, -8, 40], 8, 4))).toEqual([7, -8, 2, 0, 0, 2]); // 1.5 → 2, 0.5 → 0, 2.5 → 2: half to even
  });

  it('ALRS multiplies the scale gradient of a lower width by 2^−(h−l)', () => {
    const grads = [true, false].map((alrs) => {
      const l = Q.BitSwitchLinear.from(new Linear(8, 3, { generator: new Generator(2) }), { bits: [8, 4], alrs });
      l.quantizedWeight(4).square().sum().backward();
      return l.scale.grad!.dataSync();
    });
    grads[0]!.forEach((v, i) => expect(v).toBeCloseTo(grads[1]![i]! / 16, 6));
  });

  it('switches a whole model with one call and trains jointly over widths', () => {
    const g = new Generator(3);
    const model = new Sequential(new Linear(8, 16, { generator: g }), new ReLU(), new Linear(16, 2, { generator: g }));
    expect(Q.prepareBitSwitch(model, { bits: [8, 6, 4] })).toEqual(['0', '2']);
    const x = randn([32, 8], { generator: g });
    const y = randn([32, 2], { generator: g });
    const outs = [8, 4].map((b) => {
      Q.setBitWidth(model, b);
      return model.forward(x).dataSync();
    });
    expect(outs[0]).not.toEqual(outs[1]);
    expect(() => Q.setBitWidth(model, 5)).toThrow(/width 5 is not one of the trained widths \[8, 6, 4\]/);
    const loss = () => model.forward(x).sub(y).square().mean();
    const params = model.parameters();
    const start = Q.jointLoss(model, [8, 6, 4], loss).item();
    for (let i = 0; i < 30; i++) {
      for (const p of params) p.grad = null;
      Q.jointLoss(model, [8, 6, 4], loss).backward();
      noGrad(() => params.forEach((p) => p.grad && p.sub_(p.grad.mul(0.05))));
    }
    expect(Q.jointLoss(model, [8, 6, 4], loss).item()).toBeLessThan(start);
  });
});
