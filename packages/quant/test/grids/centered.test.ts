/**
 * @file Grid 'centered' (half-integer levels, no zero; QuEST, StatsQ). The generic properties
 * (on the grid, idempotence, monotonicity, codes, local error) run from properties.test.ts over
 * the table; this file checks what is particular to it.
 */
import { describe, expect, it } from 'vitest';
import { Generator, randn, tensor } from '@qgrad/core';
import * as Q from '@qgrad/quant';

describe("grid 'centered'", () => {
  it('has 2^b half-integer levels and no zero; 1 bit is a sign', () => {
    expect(Array.from(Q.makeGrid({ grid: 'centered', bits: 2 }).levels('float64'))).toEqual([-1.5, -0.5, 0.5, 1.5]);
    expect(Q.makeGrid({ grid: 'centered' }).levels('float32').length).toBe(16);
    const y = Q.fakeQuant(tensor([-3, -0.2, 0, 0.2, 3]), { grid: 'centered', bits: 1 }, { scale: tensor([[2]]) });
    expect(Array.from(y.dataSync())).toEqual([-1, -1, 1, 1, 1]);
    expect(() => Q.makeGrid({ grid: 'centered', bits: 9 }, 'fc1')).toThrow(/fc1: centered grid: bits must be an integer in 1…8, got 9/);
  });

  it("with scale 'gaussian' and estimator 'trust' is QuEST's quantizer (rmsQuantize)", () => {
    const x = randn([3, 64], { generator: new Generator(4) });
    const y = Q.fakeQuant(x, { grid: 'centered', bits: 3, granularity: 'token', scale: 'gaussian', estimator: 'trust' });
    const rms = x.square().mean(-1, true).sqrt();
    const step = rms.mul((2 * Q.GAUSSIAN_MSE_ALPHA[3]!) / 7);
    const u = Array.from(y.div(step).dataSync());
    for (const v of u) expect(Math.abs(v - Math.floor(v) - 0.5)).toBeLessThan(1e-5);
    expect(Array.from(Q.rmsQuantize(x, 3).dataSync())).toEqual(Array.from(y.dataSync()));
  });
});
