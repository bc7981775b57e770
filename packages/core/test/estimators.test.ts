import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';

const leaf = (t: Tensor) => t.detach().requiresGrad_();

describe('estimators', () => {
  const x0 = () => leaf(q.tensor([-3.1, -1.26, -0.4, 0.07, 0.33, 0.92, 1.49, 2.6], { dtype: 'float64' }));
  const g0 = q.tensor([1, -2, 3, 0.5, -1, 2, 0.25, 4], { dtype: 'float64' });
  const grad = (est: string, extra: Partial<q.FakeQuantizeOptions> = {}) => {
    const x = x0();
    const y = q.fakeQuantize(x, 0.5, 0, { qmin: -2, qmax: 2, estimator: est, ...extra });
    y.backward(g0);
    return { x: x.dataSync(), y: y.dataSync(), g: Array.from(x.grad!.dataSync()) };
  };

  it("'ste' passes the upstream gradient through bit-exactly", () => {
    expect(grad('ste').g).toEqual(Array.from(g0.dataSync()));
  });

  it("'clipped-ste' passes it only inside the real window s·qmin ≤ x ≤ s·qmax", () => {
    const { x, g } = grad('clipped-ste');
    g.forEach((v, i) => expect(v === (x[i]! >= -1 && x[i]! <= 1 ? g0.dataSync()[i] : 0)).toBe(true));
  });

  it("'trust' masks exactly where |x̂ − x| exceeds trust·s (default half a step)", () => {
    for (const t of [0.5, 0.3, 2]) {
      const { x, y, g } = grad('trust', { trust: t });
      g.forEach((v, i) => expect(v === (Math.abs(y[i]! - x[i]!) <= t * 0.5 ? g0.dataSync()[i] : 0)).toBe(true));
    }
    // default trust = clipped window widened by half a step (methods.md §3): |x| ≤ α + Δ/2
    const { x, g } = grad('trust');
    g.forEach((v, i) => expect(v !== 0).toBe(Math.abs(x[i]!) <= 1.25));
  });

  it("'relaxed' gives the soft quantizer's slope (2/τ)·Var_p, nonzero for τ > 0, vanishing away from ties as τ → 0", () => {
    const x = leaf(q.tensor([0.1, 0.3, 0.5, 0.77], { dtype: 'float64' }));
    q.quantRound(x, { estimator: 'relaxed', temperature: 0.4 }).sum().backward();
    const levels = [-3, -2, -1, 0, 1, 2, 3, 4];
    x.dataSync().forEach((xv, i) => {
      const w = levels.map((c) => Math.exp(-((xv - c) ** 2) / 0.4));
      const Z = w.reduce((a, b) => a + b);
      const m = levels.reduce((a, c, k) => a + (c * w[k]!) / Z, 0);
      const v = levels.reduce((a, c, k) => a + ((c - m) ** 2 * w[k]!) / Z, 0);
      expect(x.grad!.dataSync()[i]).toBeCloseTo((2 / 0.4) * v, 4);
      expect(x.grad!.dataSync()[i]).toBeGreaterThan(0);
    });
    const xc = leaf(q.tensor([0.1, 0.8], { dtype: 'float64' }));
    q.quantRound(xc, { estimator: 'relaxed', temperature: 1e-3 }).sum().backward();
    for (const v of xc.grad!.dataSync()) expect(v).toBeLessThan(1e-50);
  });

  it("'stochastic' rounding is seeded and unbiased: the mean over draws approaches x", () => {
    const x = q.full([4000], 0.3, { dtype: 'float64' });
    const a = q.quantRound(x, { estimator: 'stochastic', generator: new q.Generator(5) });
    const b = q.quantRound(x, { estimator: 'stochastic', generator: new q.Generator(5) });
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    for (const v of a.dataSync()) expect(v === 0 || v === 1).toBe(true);
    expect(Math.abs(a.mean().item() - 0.3)).toBeLessThan(0.03);
    const y = q.fakeQuantize(q.full([4000], 0.37, { dtype: 'float64' }), 0.25, 0, { qmin: -4, qmax: 3, estimator: 'stochastic', generator: new q.Generator(9) });
    expect(Math.abs(y.mean().item() - 0.37)).toBeLessThan(0.01);
  });

  it('defineEstimator registers a custom estimator usable by name; getEstimator lists names on a miss', () => {
    q.defineEstimator('half-ste', { description: 'half', backward: (_st, g) => [g.mul(0.5), null, null] });
    const x = leaf(q.tensor([0.3, 7], { dtype: 'float64' }));
    q.fakeQuantize(x, 1, 0, { qmin: 0, qmax: 3, estimator: 'half-ste' }).sum().backward();
    expect(Array.from(x.grad!.dataSync())).toEqual([0.5, 0.5]);
    const xr = leaf(q.tensor([0.3], { dtype: 'float64' }));
    q.quantRound(xr, { estimator: 'half-ste' }).sum().backward();
    expect(xr.grad!.item()).toBe(0.5);
    expect(q.listEstimators()).toEqual(expect.arrayContaining(['ste', 'clipped-ste', 'lsq', 'lsq+', 'trust', 'stochastic', 'relaxed', 'half-ste']));
    expect(() => q.getEstimator('nope')).toThrow(/unknown estimator 'nope'; registered estimators are: ste, clipped-ste, lsq, lsq\+, trust, stochastic, relaxed, half-ste/);
    expect(() => q.defineEstimator('half-ste', { backward: (_s, g) => [g, null, null] })).toThrow(/already defined/);
    expect(() => q.defineEstimator('ste', { backward: (_s, g) => [g, null, null] })).toThrow(/built-in/);
    expect(q.removeEstimator('half-ste')).toBe(true);
  });

  it('a custom forward replaces rounding and its backward sees the saved state', () => {
    let seen: number[] = [];
    q.defineEstimator('floor-probe', {
      forward: (st) => q.fakeQuantizeKernel(st.x, st.scale, st.zeroPoint, { ...st, rounding: 'floor' }),
      backward: (st, g) => {
        seen = Array.from(st.y.dataSync());
        return [g.mul(q.windowMask(st)), null, null];
      },
    });
    const x = leaf(q.tensor([0.9, 5], { dtype: 'float64' }));
    const y = q.fakeQuantize(x, 1, 0, { qmin: 0, qmax: 3, estimator: 'floor-probe' });
    y.sum().backward();
    expect(Array.from(y.dataSync())).toEqual([0, 3]);
    expect(seen).toEqual([0, 3]);
    expect(Array.from(x.grad!.dataSync())).toEqual([1, 0]);
  });
});

