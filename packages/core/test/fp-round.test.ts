/**
 * @file core's fpRound op: the documented values, scales (per tensor, per row, per column) equal
 * dividing first, strided views, the js and wasm backends alike, no gradient, and its errors.
 */
import { describe, expect, it } from 'vitest';
import { div, fpRound, Generator, noGrad, randn, tensor, withBackend, type Tensor } from '@qgrad/core';

const E4M3 = { mantissaBits: 3, minExponent: -6, max: 448 };
const same = (a: Tensor, b: Tensor) => expect(Array.from(a.dataSync()).map((v) => Object.is(v, -0) ? '-0' : v)).toEqual(Array.from(b.dataSync()).map((v) => Object.is(v, -0) ? '-0' : v));

describe('fpRound', () => {
  it('rounds to the grid half-even, saturates ±∞ to ±max, keeps NaN and the sign of zero', () => {
    const x = tensor([0.3, 17, 19, 1000, -Infinity, NaN, -0, -0.0001, 2 ** -10, 3 * 2 ** -10]);
    const y = fpRound(x, E4M3).dataSync();
    expect(Array.from(y)).toEqual([0.3125, 16, 20, 448, -448, NaN, -0, -0, 0, 2 ** -8]);
    expect(Object.is(y[7], -0)).toBe(true);
    expect(Array.from(fpRound(tensor([17, -17, 2.5 * 2 ** -9]), E4M3, { rounding: 'halfAway' }).dataSync())).toEqual([18, -18, 3 * 2 ** -9]);
    expect(Array.from(fpRound(tensor([17.9, -17.1]), E4M3, { rounding: 'floor' }).dataSync())).toEqual([16, -18]);
  });

  for (const backend of ['js', 'wasm'] as const) {
    it(`with a scale equals rounding x / scale, per tensor, row and column, on strided views (${backend})`, () => {
      withBackend(backend, () => {
        for (const dtype of ['float32', 'float64'] as const) {
          const g = new Generator(4);
          const x = randn([96, 40], { generator: g, dtype }).mul(50);
          for (const scale of [tensor(0.37, { dtype }), randn([96, 1], { generator: g, dtype }).abs(), randn([40], { generator: g, dtype }).abs()]) {
            for (const view of [x, x.transpose(0, 1).contiguous().transpose(0, 1), x.reshape([40, 96]).transpose(0, 1)]) {
              same(fpRound(view, E4M3, { scale }), fpRound(div(view, scale), E4M3));
            }
          }
        }
      });
    });
  }

  it('agrees between the js and wasm backends on large inputs in both dtypes and every rounding', () => {
    for (const dtype of ['float32', 'float64'] as const) {
      for (const rounding of ['halfEven', 'halfAway', 'floor'] as const) {
        const run = () => fpRound(randn([300, 77], { generator: new Generator(9), dtype }).mul(100), { mantissaBits: 2, minExponent: -14, max: 57344 }, { rounding, scale: tensor([[0.5]], { dtype }) });
        same(withBackend('wasm', run), withBackend('js', run));
      }
    }
  });

  it('has no gradient: an input requiring grad is an error unless grad is off', () => {
    const x = tensor([1.3, 2], { requiresGrad: true });
    expect(() => fpRound(x, E4M3)).toThrow(/fpRound: has no gradient/);
    expect(noGrad(() => fpRound(x, E4M3)).requiresGrad).toBe(false);
  });

  it('names the op, the bad field, shape or dtype in its errors', () => {
    const x = tensor([1, 2]);
    expect(() => fpRound(tensor([1], { dtype: 'int32' }), E4M3)).toThrow(/fpRound: input must be float32 or float64, got int32 of shape \[1\]/);
    expect(() => fpRound(x, { ...E4M3, mantissaBits: 2.5 })).toThrow(/fpRound: grid .*mantissaBits must be an integer/);
    expect(() => fpRound(x, { ...E4M3, minExponent: 0.5 })).toThrow(/minExponent must be an integer/);
    expect(() => fpRound(x, { ...E4M3, max: Infinity })).toThrow(/max must be a positive finite number/);
    expect(() => fpRound(x, { ...E4M3, max: 449 })).toThrow(/max is not a value of the grid/);
    expect(() => fpRound(x, { mantissaBits: 3, minExponent: -150, max: 448 })).toThrow(/do not all fit float32 .*subnormal step 2\^-153/);
    expect(() => fpRound(x, E4M3, { rounding: 'stochastic' as never })).toThrow(/fpRound: rounding must be one of halfEven, halfAway, floor/);
    expect(() => fpRound(x, E4M3, { scale: tensor([1, 2, 3]) })).toThrow(/fpRound \(scale\)|fpRound: scale of shape \[3\]/);
    expect(() => fpRound(x, E4M3, { scale: tensor([[1], [2]]) })).toThrow(/fpRound: scale of shape \[2, 1\] must broadcast to the input's shape \[2\] without enlarging it/);
    expect(() => fpRound(x, E4M3, { scale: tensor([1], { dtype: 'float64' }) })).toThrow(/fpRound: scale is float64 but the input is float32/);
  });
});
