/**
 * @file Logit KD: the loss is 0 for equal logits and positive otherwise, τ² scaling and the α-mix
 * match a hand computation, gradcheck in float64 over fast-check shapes, and PyTorch's values
 * (scripts/golden/distill.py).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { crossEntropy, Generator, randn, tensor, type Tensor } from '@qgrad/core';
import { assertAllclose, gradcheck } from '@qgrad/core/testing';
import { kdLoss, kdMix } from '@qgrad/quant';

const f64 = (v: number[], shape: number[]) => tensor(v, { shape, dtype: 'float64' });

/** Σ_rows Σ_c p_t·(log p_t − log p_s) / rows at temperature τ, times τ², by hand. */
function handKd(s: number[], t: number[], c: number, tau: number): number {
  const logSoft = (row: number[]) => {
    const m = Math.max(...row.map((x) => x / tau));
    const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x / tau - m), 0));
    return row.map((x) => x / tau - lse);
  };
  let kl = 0;
  const rows = s.length / c;
  for (let r = 0; r < rows; r++) {
    const ls = logSoft(s.slice(r * c, (r + 1) * c));
    const lt = logSoft(t.slice(r * c, (r + 1) * c));
    for (let j = 0; j < c; j++) kl += Math.exp(lt[j]!) * (lt[j]! - ls[j]!);
  }
  return (kl / rows) * tau * tau;
}

describe('kdLoss', () => {
  it('is 0 when the student equals the teacher and positive when it does not', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 2, max: 6 }), fc.double({ min: 0.5, max: 5, noNaN: true }), fc.integer({ min: 0, max: 1e6 }), (n, c, tau, seed) => {
      const g = new Generator(seed);
      const t = randn([n, c], { generator: g, dtype: 'float64' });
      expect(kdLoss(t.clone(), t, { temperature: tau }).item()).toBe(0);
      const s = t.add(randn([n, c], { generator: g, dtype: 'float64' }));
      expect(kdLoss(s, t, { temperature: tau }).item()).toBeGreaterThan(0);
    }), { numRuns: 40 });
  });

  it('is invariant to a per-row shift of the logits (it compares softmaxes)', () => {
    const t = f64([1, 2, 3, -1, 0, 4], [2, 3]);
    const s = f64([0.5, 2, 1, 1, 1, 1], [2, 3]);
    const shifted = s.add(f64([10, -3], [2, 1]));
    expect(kdLoss(shifted, t, { temperature: 2 }).item()).toBeCloseTo(kdLoss(s, t, { temperature: 2 }).item(), 12);
  });

  it('scales by τ² and mixes by α exactly as a hand computation', () => {
    const sv = [0.3, -1.2, 2.0, 0.7, 0.1, -0.4, 1.5, 0.0];
    const tv = [1.0, 0.2, -0.5, 0.4, -1.1, 0.9, 0.3, 2.2];
    const [s, t] = [f64(sv, [2, 4]), f64(tv, [2, 4])];
    for (const tau of [1, 2, 4]) {
      const kd = kdLoss(s, t, { temperature: tau });
      expect(kd.item()).toBeCloseTo(handKd(sv, tv, 4, tau), 12);
      const y = tensor([2, 3], { dtype: 'int32' });
      const ce = crossEntropy(s, y);
      const alpha = 0.7;
      expect(kdMix(ce, kd, alpha).item()).toBeCloseTo(0.3 * ce.item() + 0.7 * handKd(sv, tv, 4, tau), 12);
    }
    // τ² makes the temperature-scaled KL grow back: at a large τ, τ²·KL → Σ(s̄ − t̄)²/(2C) per row (centred logits)
    const big = kdLoss(s, t, { temperature: 1000 }).item();
    const centred = (v: number[]) => v.map((x, i) => x - v.slice(i - (i % 4), i - (i % 4) + 4).reduce((a, b) => a + b) / 4);
    const sc = centred(sv);
    const tc = centred(tv);
    expect(big).toBeCloseTo(sc.reduce((a, x, i) => a + (x - tc[i]!) ** 2, 0) / (2 * 4) / 2, 3); // O(1/τ) away from the limit
  });

  it('flattens leading dims into rows: [B, T, C] equals [B·T, C]', () => {
    const g = new Generator(3);
    const s = randn([2, 3, 5], { generator: g, dtype: 'float64' });
    const t = randn([2, 3, 5], { generator: g, dtype: 'float64' });
    expect(kdLoss(s, t, { temperature: 3 }).item()).toBeCloseTo(kdLoss(s.reshape([6, 5]), t.reshape([6, 5]), { temperature: 3 }).item(), 12);
  });

  it('passes gradcheck in float64 for student and teacher logits over random shapes and temperatures', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 2 }), fc.integer({ min: 2, max: 5 }), fc.double({ min: 0.5, max: 4, noNaN: true }), fc.integer({ min: 0, max: 1e6 }), (lead, c, tau, seed) => {
      const g = new Generator(seed);
      const shape = [...lead, c];
      const s = randn(shape, { generator: g, dtype: 'float64' });
      const t = randn(shape, { generator: g, dtype: 'float64' });
      expect(gradcheck((a: Tensor, b: Tensor) => kdLoss(a, b, { temperature: tau }), [s, t]).ok).toBe(true);
      expect(gradcheck((a: Tensor, b: Tensor) => kdLoss(a, b, { temperature: tau, kind: 'mse' }), [s, t]).ok).toBe(true);
    }), { numRuns: 25 });
  });

  it('matches PyTorch: F.kl_div(log_softmax(s/τ), softmax(t/τ), batchmean)·τ², its α-mix with cross entropy and the gradient', () => {
    const fixture = JSON.parse(readFileSync(fileURLToPath(new URL('../fixtures/distill.json', import.meta.url)), 'utf8')) as {
      cases: { shape: number[]; temperature: number; alpha: number; student: number[]; teacher: number[]; target: number[]; kd: number; mix: number; grad: number[] }[];
    };
    for (const k of fixture.cases) {
      const c = k.shape[k.shape.length - 1]!;
      const s = tensor(k.student, { shape: k.shape, dtype: 'float64', requiresGrad: true });
      const t = f64(k.teacher, k.shape);
      const kd = kdLoss(s, t, { temperature: k.temperature });
      expect(kd.item()).toBeCloseTo(k.kd, 10);
      const mix = kdMix(crossEntropy(s.reshape([-1, c]), tensor(k.target, { dtype: 'int32' })), kd, k.alpha);
      expect(mix.item()).toBeCloseTo(k.mix, 10);
      mix.backward();
      assertAllclose(s.grad!.dataSync(), k.grad, { atol: 1e-10, rtol: 1e-8 }, 'd mix / d student');
    }
  });

  it('rejects a bad temperature, mismatched shapes, and α < 1 without a task loss', () => {
    const a = f64([1, 2], [1, 2]);
    expect(() => kdLoss(a, a, { temperature: 0 })).toThrow(/temperature must be a positive/);
    expect(() => kdLoss(a, f64([1, 2, 3], [1, 3]))).toThrow(/\[1, 2\].*\[1, 3\].*same shape/);
    expect(() => kdMix(null, a.sum(), 0.5)).toThrow(/alpha 0.5 < 1 weighs a task loss/);
    expect(kdMix(null, a.sum(), 1).item()).toBe(3);
  });
});
