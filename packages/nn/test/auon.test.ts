/**
 * @file AuON: qgrad's updates equal the PyTorch fixture written from the paper
 * (scripts/golden/auon.py → fixtures/auon.json) for both orientations and the packaged variant,
 * and the paper variant's invariants hold (scale invariance, direction ∥ u, ‖U‖_F ≤ 1).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Generator, randn, tensor } from '@qgrad/core';
import { AuON, auonDirection } from '@qgrad/nn';

interface Case { shape: number[]; variant: 'paper' | 'packaged'; lr: number; momentum: number; weightDecay: number; gamma: number; w0: number[]; grads: number[][]; trajectory: number[][] }
const fixture = JSON.parse(readFileSync(new URL('./fixtures/auon.json', import.meta.url), 'utf8')) as { cases: Case[] };

describe('AuON', () => {
  it.each(fixture.cases.map((c) => [`${c.variant} [${c.shape.join(', ')}]`, c] as const))('matches the PyTorch fixture: %s', (_, c) => {
    const w = tensor(c.w0, { dtype: 'float64' }).reshape(c.shape).requiresGrad_();
    const opt = new AuON([w], { lr: c.lr, momentum: c.momentum, weightDecay: c.weightDecay, gamma: c.gamma, variant: c.variant });
    c.grads.forEach((g, step) => {
      w.grad = tensor(g, { dtype: 'float64' }).reshape(c.shape);
      opt.step();
      const got = w.dataSync();
      c.trajectory[step]!.forEach((v, i) => expect(got[i]).toBeCloseTo(v, 12));
    });
  });

  it('paper direction: scale invariant, parallel to u, Frobenius norm ≤ 1', () => {
    const u = randn([8, 5], { generator: new Generator(1), dtype: 'float64' });
    const o = { variant: 'paper' as const, gamma: 1.5, hybridSteps: 0 };
    const a = auonDirection(u, o);
    const b = auonDirection(u.mul(37), o);
    expect(a.sub(b).abs().amax().item()).toBeLessThan(1e-7); // up to the 1e−7 in ‖u‖ + 1e−7
    const cos = a.mul(u).sum().item() / (a.norm().item() * u.norm().item());
    expect(cos).toBeCloseTo(1, 12);
    expect(a.norm().item() / Math.sqrt(8 / 5)).toBeLessThanOrEqual(1);
    expect(() => new AuON([u.clone().requiresGrad_()], { variant: 'x' as 'paper' })).toThrow(/unknown variant/);
  });
});
