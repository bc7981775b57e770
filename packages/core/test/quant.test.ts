import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import { arb, assertAllclose, checkOp, gradcheck } from '@qgrad/core/testing';

const f64 = (s: number[], lo = -2, hi = 2, seed = 1) => q.rand(s, { dtype: 'float64', generator: new q.Generator(seed) }).mul(hi - lo).add(lo);
const leaf = (t: Tensor) => t.detach().requiresGrad_();
const bitsArb = fc.integer({ min: 2, max: 8 });
const rangeOf = (b: number, signed: boolean) => (signed ? { qmin: -(2 ** (b - 1)), qmax: 2 ** (b - 1) - 1 } : { qmin: 0, qmax: 2 ** b - 1 });

/** LSQ through autograd on primitives: gradScale + STE round + clamp (methods.md §0.3). */
function lsqComposite(x: Tensor, s: Tensor, z: Tensor, qmin: number, qmax: number, g: number): Tensor {
  const s2 = q.gradScale(s, g);
  const z2 = q.gradScale(z, g);
  const u = x.div(s2).add(z2);
  return q.clamp(q.quantRound(u), qmin, qmax).sub(z2).mul(s2);
}

describe('fakeQuantize (lsq, the fused primitive)', () => {
  it('forward and all three gradients equal autograd through gradScale + STE round + clamp', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3 }), bitsArb, fc.boolean(), fc.integer({ min: 1, max: 1000 }), (shape, b, signed, seed) => {
        const { qmin, qmax } = rangeOf(b, signed);
        const x = leaf(f64(shape, -3, 3, seed));
        const s = leaf(q.tensor([0.05 + (seed % 7) / 20], { dtype: 'float64' }));
        const z = leaf(q.tensor([signed ? 0 : seed % Math.min(5, qmax + 1)], { dtype: 'float64' })); // a zero point inside [qmin, qmax]
        const v = f64(shape, -1, 1, seed + 1);
        const gf = 1 / Math.sqrt(x.numel() * qmax);
        const y1 = q.fakeQuantize(x, s, z, { qmin, qmax, gradScale: 'lsq' });
        const g1 = q.gradOf([y1.mul(v).sum()], [x, s, z]);
        const y2 = lsqComposite(x, s, z, qmin, qmax, gf);
        const g2 = q.gradOf([y2.mul(v).sum()], [x, s, z]);
        assertAllclose(y1, y2, { rtol: 1e-12, atol: 1e-12 }, 'forward');
        g1.forEach((g, i) => assertAllclose(g, g2[i]!, { rtol: 1e-9, atol: 1e-12 }, `grad ${i}`));
      }),
      { numRuns: 15 },
    );
  });

  for (const dtype of ['float64', 'float32'] as const) {
    it(`per-group scales and zero points (summed per row in the kernel) give the gradients of the composite, and of the per-element form, in ${dtype}`, () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 70 }), bitsArb, fc.integer({ min: 1, max: 1000 }), (rows, groups, L, b, seed) => {
          const { qmin, qmax } = rangeOf(b, false);
          const shape = [rows, groups, L];
          const x = leaf(f64(shape, -1, 3, seed).to(dtype));
          const s = leaf(f64([rows, groups, 1], 0.05, 0.4, seed + 2).to(dtype));
          const z = leaf(f64([rows, groups, 1], 0, Math.min(5, qmax), seed + 3).round().to(dtype));
          const v = f64(shape, -1, 1, seed + 1).to(dtype);
          const gf = 1 / Math.sqrt(L * qmax);
          const y1 = q.fakeQuantize(x, s, z, { qmin, qmax, gradScale: gf, roundZeroPoint: false });
          const g1 = q.gradOf([y1.mul(v).sum()], [x, s, z]);
          expect(g1[1]!.shape).toEqual([rows, groups, 1]);
          const y2 = lsqComposite(x, s, z, qmin, qmax, gf);
          const g2 = q.gradOf([y2.mul(v).sum()], [x, s, z]);
          const tol = dtype === 'float64' ? { rtol: 1e-9, atol: 1e-12 } : { rtol: 1e-4, atol: 1e-5 };
          assertAllclose(y1, y2, tol, 'forward');
          g1.forEach((g, i) => assertAllclose(g, g2[i]!, tol, `grad ${i}`));
          // a scale varying along the last axis takes the per-element kernel form: the same gradients
          const sFull = leaf(s.detach().expand(shape).contiguous());
          const zFull = leaf(z.detach().expand(shape).contiguous());
          const g3 = q.gradOf([q.fakeQuantize(x, sFull, zFull, { qmin, qmax, gradScale: gf, roundZeroPoint: false }).mul(v).sum()], [x, sFull, zFull]);
          expect(Array.from(g1[0]!.dataSync())).toEqual(Array.from(g3[0]!.dataSync()));
          assertAllclose(g1[1]!, g3[1]!.sum(-1, true), tol, 'dscale');
          assertAllclose(g1[2]!, g3[2]!.sum(-1, true), tol, 'dzeroPoint');
        }),
        { numRuns: 15 },
      );
    });
  }

  for (const dtype of ['float64', 'float32'] as const) {
    it(`fakeQuantizeAbsmax equals fakeQuantize with the absmax scale computed apart, output, scales and gradients, in ${dtype}`, () => {
      fc.assert(
        fc.property(arb.shape({ minRank: 1, maxRank: 3 }), fc.constantFrom('ste', 'clipped-ste'), fc.integer({ min: 1, max: 1000 }), fc.boolean(), (shape, estimator, seed, zeroRow) => {
          const data = f64(shape, -3, 3, seed).to(dtype);
          if (zeroRow) data.narrow(-1, 0, 1).fill_(0); // some all-zero rows when the last axis is 1
          const x1 = leaf(data);
          const x2 = leaf(data);
          const v = f64(shape, -1, 1, seed + 1).to(dtype);
          const opts = { qmin: -128, qmax: 127, estimator, divisor: 127, minScale: 1e-5 };
          const { y, scale } = q.fakeQuantizeAbsmax(x1, opts);
          const s2 = q.noGrad(() => q.clamp(q.norm(x2, Infinity, -1, true), 1e-5).div(127));
          const y2 = q.fakeQuantize(x2, s2, 0, opts);
          expect(Array.from(scale.dataSync())).toEqual(Array.from(s2.dataSync()));
          expect(Array.from(y.dataSync())).toEqual(Array.from(y2.dataSync()));
          const [g1] = q.gradOf([y.mul(v).sum()], [x1]);
          const [g2] = q.gradOf([y2.mul(v).sum()], [x2]);
          expect(Array.from(g1!.dataSync())).toEqual(Array.from(g2!.dataSync()));
        }),
        { numRuns: 20 },
      );
    });
  }

  it('fakeQuantizeAbsmax: each row reaches ±127 at its absmax, the scales are detached, and ste passes the gradient through', () => {
    const x = leaf(q.tensor([[0.5, -2, 1], [0, 0, 0], [3, 1, -1]], { dtype: 'float64' }));
    const { y, scale } = q.fakeQuantizeAbsmax(x, { qmin: -128, qmax: 127, estimator: 'ste', divisor: 127, minScale: 1e-5 });
    expect(Array.from(scale.dataSync())).toEqual([2 / 127, 1e-5 / 127, 3 / 127]);
    expect(scale.requiresGrad).toBe(false);
    expect(y.toArray()).toEqual(q.fakeQuantize(x.detach(), scale, 0, { qmin: -128, qmax: 127 }).toArray());
    const yv = y.dataSync();
    expect([yv[1], yv[6]]).toEqual([-2, 3]);
    const g = f64([3, 3], -1, 1, 5);
    y.backward(g);
    expect(Array.from(x.grad!.dataSync())).toEqual(Array.from(g.dataSync()));
  });

  it('the LSQ step gradient equals its closed form Σ g·(R(u) − u | qmin − z | qmax − z)·gradScale', () => {
    const x = leaf(q.tensor([-2.0, -0.73, -0.2, 0.11, 0.36, 0.9, 1.7], { dtype: 'float64' }));
    const s = leaf(q.tensor([0.25], { dtype: 'float64' }));
    const y = q.fakeQuantize(x, s, 0, { qmin: -4, qmax: 3, gradScale: 'lsq' });
    y.sum().backward();
    let expected = 0;
    for (const xv of x.dataSync()) {
      const u = xv / 0.25;
      const r = q.tensor([u], { dtype: 'float64' }).round().item();
      expected += r < -4 ? -4 : r > 3 ? 3 : r - u;
    }
    expect(s.grad!.item()).toBeCloseTo(expected / Math.sqrt(7 * 3), 12);
    // g = 1 gives exactly √(N·Qp) times more
    const s1 = leaf(q.tensor([0.25], { dtype: 'float64' }));
    q.fakeQuantize(x.detach(), s1, 0, { qmin: -4, qmax: 3 }).sum().backward();
    expect(s1.grad!.item()).toBeCloseTo(expected, 12);
  });

  it('an element exactly on an in-range grid point contributes nothing to the step gradient', () => {
    const s = leaf(q.tensor([0.5], { dtype: 'float64' }));
    q.fakeQuantize(q.tensor([1.5, -1, 0], { dtype: 'float64' }), s, 0, { qmin: -8, qmax: 7 }).sum().backward();
    expect(s.grad!.item()).toBe(0);
  });

  it('lsq+ takes a real offset β with dβ ∈ {0, 1}, zero inside, and the closed-form step gradient', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 500 }), bitsArb, (seed, b) => {
        const qmax = 2 ** b - 1;
        const x = leaf(f64([12], -1, 3, seed));
        const s = leaf(q.tensor([2 / qmax + 0.01], { dtype: 'float64' }));
        const beta = leaf(q.tensor([-0.3], { dtype: 'float64' }));
        const y = q.fakeQuantize(x, s, beta, { qmin: 0, qmax, estimator: 'lsq+' });
        const [gx, gs, gb] = q.gradOf([y.sum()], [x, s, beta]);
        let es = 0;
        let eb = 0;
        const xs = x.dataSync();
        const ys = y.dataSync();
        xs.forEach((xv, i) => {
          const u = (xv - -0.3) / s.item();
          const r = Math.round(u); // no ties with random doubles
          const inside = r >= 0 && r <= qmax;
          expect(gx!.dataSync()[i]).toBe(inside ? 1 : 0);
          es += inside ? r - u : r < 0 ? 0 : qmax;
          eb += inside ? 0 : 1;
          // on the grid: (x̂ − β)/s ∈ Z ∩ [0, qmax]
          const k = (ys[i]! + 0.3) / s.item();
          expect(Math.abs(k - Math.round(k))).toBeLessThan(1e-9);
        });
        expect(gs!.item()).toBeCloseTo(es, 9);
        expect(gb!.item()).toBe(eb);
      }),
      { numRuns: 12 },
    );
  });

  it('per-channel quantization equals quantizing each channel as its own tensor, gradients included', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 4 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 0, max: 1 }), fc.integer({ min: 1, max: 99 }), (c, k, axis, seed) => {
        const shape = axis === 0 ? [c, k] : [k, c];
        const x = leaf(f64(shape, -2, 2, seed));
        const s = leaf(f64([c], 0.05, 0.4, seed + 1));
        const z = leaf(q.tensor(Array.from({ length: c }, (_, i) => i % 3), { dtype: 'float64' }));
        const y = q.fakeQuantize(x, s, z, { qmin: 0, qmax: 15, axis });
        const [gx, gs, gz] = q.gradOf([y.square().sum()], [x, s, z]);
        for (let i = 0; i < c; i++) {
          const xi = leaf(x.detach().select(axis, i));
          const si = leaf(s.detach().narrow(0, i, 1));
          const zi = leaf(z.detach().narrow(0, i, 1));
          const yi = q.fakeQuantize(xi, si, zi, { qmin: 0, qmax: 15 });
          const [hx, hs, hz] = q.gradOf([yi.square().sum()], [xi, si, zi]);
          assertAllclose(y.select(axis, i), yi, { rtol: 0, atol: 0 });
          assertAllclose(gx!.select(axis, i), hx!, { rtol: 1e-12, atol: 1e-12 });
          expect(gs!.dataSync()[i]).toBeCloseTo(hs!.item(), 10);
          expect(gz!.dataSync()[i]).toBeCloseTo(hz!.item(), 10);
        }
      }),
      { numRuns: 12 },
    );
  });

  it('its scale and zero-point gradients are differentiable again (gradcheck of the first-order gradients away from ties)', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 2 }), fc.integer({ min: 1, max: 99 }), fc.constantFrom<'lsq' | 'lsq+'>('lsq', 'lsq+'), (shape, seed, estimator) => {
        const v = f64(shape, -1, 1, seed + 3);
        const z = q.tensor([1.3], { dtype: 'float64' });
        // the finite-difference passes run under noGrad: make leaves of their inputs there
        const fn = (x: Tensor, s: Tensor) =>
          q.enableGrad(() => {
            const [xl, sl] = [x, s].map((t) => (t.requiresGrad ? t : leaf(t))) as [Tensor, Tensor];
            const y = q.fakeQuantize(xl, sl, z, { qmin: -4, qmax: 3, estimator, roundZeroPoint: false, gradScale: 0.7 });
            const [, ds] = q.gradOf([y.mul(v).sum()], [xl, sl], { createGraph: true });
            return ds!;
          });
        gradcheck(fn, [f64(shape, -1.5, 1.5, seed), q.tensor([0.3], { dtype: 'float64' })]);
      }),
      { numRuns: 10 },
    );
  });

  it('per-group scale gradients (row sums) are differentiable again too (gradcheck away from ties)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 99 }), (rows, groups, L, seed) => {
        const shape = [rows, groups, L];
        const v = f64(shape, -1, 1, seed + 3);
        const z = f64([rows, groups, 1], -1, 1, seed + 5);
        const fn = (x: Tensor, s: Tensor) =>
          q.enableGrad(() => {
            const [xl, sl] = [x, s].map((t) => (t.requiresGrad ? t : leaf(t))) as [Tensor, Tensor];
            const y = q.fakeQuantize(xl, sl, z, { qmin: -4, qmax: 3, roundZeroPoint: false, gradScale: 0.7 });
            const [, ds] = q.gradOf([y.mul(v).sum()], [xl, sl], { createGraph: true });
            return ds!;
          });
        gradcheck(fn, [f64(shape, -1.5, 1.5, seed), f64([rows, groups, 1], 0.2, 0.4, seed + 7)]);
      }),
      { numRuns: 10 },
    );
  });

  it('agrees across backends (forward only: the LSQ gradient is an estimator, not a derivative)', () => {
    checkOp((x) => q.fakeQuantize(x, 0.2, 1, { qmin: 0, qmax: 15 }), [[4, 6]], { forwardOnly: true });
  });

  it('stays on the grid, is idempotent, monotone, and within half a step inside the range', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3 }), bitsArb, fc.integer({ min: 1, max: 999 }), (shape, b, seed) => {
        const { qmin, qmax } = rangeOf(b, true);
        const s = 0.07;
        const x = f64(shape, -3, 3, seed);
        const y = q.fakeQuantize(x, s, 0, { qmin, qmax });
        const yy = q.fakeQuantize(y, s, 0, { qmin, qmax });
        const xs = Array.from(x.dataSync());
        const ys = Array.from(y.dataSync());
        expect(Array.from(yy.dataSync())).toEqual(ys);
        ys.forEach((yv, i) => {
          const k = yv / s;
          expect(Math.abs(k - Math.round(k))).toBeLessThan(1e-9);
          expect(k).toBeGreaterThanOrEqual(qmin - 1e-9);
          expect(k).toBeLessThanOrEqual(qmax + 1e-9);
          if (xs[i]! >= qmin * s && xs[i]! <= qmax * s) expect(Math.abs(xs[i]! - yv)).toBeLessThanOrEqual(s / 2 + 1e-12);
        });
        const order = xs.map((_, i) => i).sort((a, c) => xs[a]! - xs[c]!);
        for (let i = 1; i < order.length; i++) expect(ys[order[i]!]!).toBeGreaterThanOrEqual(ys[order[i - 1]!]!);
      }),
      { numRuns: 15 },
    );
  });

  it('rounds half to even by default and half away from zero on request', () => {
    const x = q.tensor([0.5, 1.5, 2.5, -0.5, -2.5], { dtype: 'float64' });
    // integer codes carry no −0 (torch adds an int64 zero point), so −0.5 → +0
    expect(Array.from(q.fakeQuantize(x, 1, 0, { qmin: -8, qmax: 7 }).dataSync())).toEqual([0, 2, 2, 0, -2]);
    expect(Array.from(q.fakeQuantize(x, 1, 0, { qmin: -8, qmax: 7, rounding: 'halfAway' }).dataSync())).toEqual([1, 2, 3, -1, -3]);
    expect(Array.from(q.fakeQuantize(x, 1, 0, { qmin: -8, qmax: 7, rounding: 'floor' }).dataSync())).toEqual([0, 1, 2, -1, -3]);
  });

  it('names the op and the shapes on bad arguments', () => {
    const x = q.zeros([2, 3]);
    expect(() => q.fakeQuantize(x, q.ones([4]), 0, { qmin: 0, qmax: 3 })).toThrow(/fakeQuantize \(scale\): shapes \[2, 3\] and \[4\] cannot be broadcast/);
    expect(() => q.fakeQuantize(x, q.ones([2, 2, 3]), 0, { qmin: 0, qmax: 3 })).toThrow(/scale of shape \[2, 2, 3\] must broadcast to the input's shape \[2, 3\]/);
    expect(() => q.fakeQuantize(x, q.ones([2]), 0, { qmin: 0, qmax: 3, axis: 1 })).toThrow(/per-channel scale must have shape \[3\] for axis 1 of input \[2, 3\], got \[2\]/);
    expect(() => q.fakeQuantize(x, 1, 0, { qmin: 4, qmax: 3 })).toThrow(/qmin and qmax must be integers with qmin ≤ qmax, got qmin 4, qmax 3/);
    expect(() => q.fakeQuantize(q.zeros([2], { dtype: 'int32' }), 1, 0, { qmin: 0, qmax: 3 })).toThrow(/float32 or float64, got int32/);
  });
});

describe('round, floor, sign and clamp with estimators', () => {
  it('quantRound is half-to-even (half-away on request) with a straight-through gradient; plain round has none', () => {
    const x = leaf(q.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999], { dtype: 'float64' }));
    const y = q.quantRound(x);
    expect(Array.from(y.dataSync())).toEqual([0, 2, 2, -0, -2, 2]);
    expect(Array.from(q.quantRound(x, { rounding: 'halfAway' }).dataSync())).toEqual([1, 2, 3, -1, -2, 2]);
    y.sum().backward();
    expect(Array.from(x.grad!.dataSync())).toEqual([1, 1, 1, 1, 1, 1]);
    const x2 = leaf(q.tensor([0.3], { dtype: 'float64' }));
    x2.round().sum().backward();
    expect(x2.grad!.item()).toBe(0);
  });

  it('quantFloor floors with a straight-through gradient', () => {
    const x = leaf(q.tensor([-0.5, 1.7], { dtype: 'float64' }));
    const y = q.quantFloor(x);
    y.sum().backward();
    expect(Array.from(y.dataSync())).toEqual([-1, 1]);
    expect(Array.from(x.grad!.dataSync())).toEqual([1, 1]);
  });

  it('quantSign defaults to the hardtanh STE 1[|x| ≤ 1]; ste passes everything', () => {
    const x = leaf(q.tensor([-2, -1, -0.5, 0, 0.3, 1.5], { dtype: 'float64' }));
    const y = q.quantSign(x);
    y.sum().backward();
    expect(Array.from(y.dataSync())).toEqual([-1, -1, -1, 0, 1, 1]);
    expect(Array.from(x.grad!.dataSync())).toEqual([0, 1, 1, 1, 1, 0]);
    const x2 = leaf(x.detach());
    q.quantSign(x2, { estimator: 'ste' }).sum().backward();
    expect(Array.from(x2.grad!.dataSync())).toEqual([1, 1, 1, 1, 1, 1]);
    const xs = q.full([4000], 0.5, { dtype: 'float64' });
    const ys = q.quantSign(xs, { estimator: 'stochastic', generator: new q.Generator(3) });
    expect(Math.abs(ys.mean().item() - 0.5)).toBeLessThan(0.05); // P(+1) = (x + 1)/2
  });

  it('quantClamp gives the inclusive clamp mask by default and a pass-through with ste', () => {
    const x = leaf(q.tensor([-2, -1, 0.5, 1, 3], { dtype: 'float64' }));
    const y = q.quantClamp(x, -1, 1);
    y.sum().backward();
    expect(Array.from(y.dataSync())).toEqual([-1, -1, 0.5, 1, 1]);
    expect(Array.from(x.grad!.dataSync())).toEqual([0, 1, 1, 1, 0]);
    const x2 = leaf(x.detach());
    q.quantClamp(x2, -1, 1, { estimator: 'ste' }).sum().backward();
    expect(Array.from(x2.grad!.dataSync())).toEqual([1, 1, 1, 1, 1]);
    expect(() => q.quantClamp(x, 2, 1)).toThrow(/quantClamp: min 2 must be ≤ max 1/);
  });

  it('gradScale is the identity forward and scales the gradient', () => {
    const x = leaf(q.tensor([1, 2], { dtype: 'float64' }));
    const y = q.gradScale(x, 0.25);
    y.square().sum().backward();
    expect(Array.from(y.dataSync())).toEqual([1, 2]);
    expect(Array.from(x.grad!.dataSync())).toEqual([0.5, 1]);
  });
});

describe('softQuantize', () => {
  it('passes gradcheck in x, the levels and the temperature, on random shapes, contiguous and strided', () => {
    fc.assert(
      fc.property(arb.shape({ maxRank: 3 }), fc.boolean(), fc.integer({ min: 1, max: 99 }), (s, nonContiguous, seed) => {
        gradcheck((x, l, t) => q.softQuantize(x, l, t), [f64(s, -2, 2, seed), q.tensor([-1, -0.2, 0.5, 1.5], { dtype: 'float64' }), q.tensor(0.3 + (seed % 5) / 10, { dtype: 'float64' })], { nonContiguous });
      }),
      { numRuns: 12 },
    );
    checkOp((x) => q.softQuantize(x, [-1, 0, 1], 0.5), [[3, 4]]);
  });

  it('hardens to the nearest level as τ → 0 and has a nonzero gradient for τ > 0', () => {
    const x = q.tensor([-0.8, -0.3, 0.2, 0.45, 0.55, 2], { dtype: 'float64' });
    assertAllclose(q.softQuantize(x, [-1, 0, 1], 1e-3), [-1, 0, 0, 0, 1, 1], { atol: 1e-6 });
    const xg = leaf(x);
    q.softQuantize(xg, [-1, 0, 1], 0.5).sum().backward();
    for (const v of xg.grad!.dataSync()) expect(v).toBeGreaterThan(0);
  });

  it('matches the ternary closed form sinh(2u/τ)/(cosh(2u/τ) + ½e^{1/τ}) (HESTIA)', () => {
    const u = f64([7], -2, 2, 4);
    const tau = 0.35;
    const closed = Array.from(u.dataSync(), (v) => Math.sinh((2 * v) / tau) / (Math.cosh((2 * v) / tau) + 0.5 * Math.exp(1 / tau)));
    assertAllclose(q.softQuantize(u, [-1, 0, 1], tau), closed, { rtol: 1e-10, atol: 1e-12 });
  });

  it('names the problem on bad levels or temperature', () => {
    expect(() => q.softQuantize(q.zeros([2]), q.zeros([2, 2]), 1)).toThrow(/softQuantize: levels must be a non-empty 1-D tensor, got shape \[2, 2\]/);
    expect(() => q.softQuantize(q.zeros([2]), [0, 1], 0)).toThrow(/temperature must be > 0, got 0/);
  });
});
