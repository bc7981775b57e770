/**
 * @file Mixed precision from measured sensitivity: measurement per layer, an allocation that meets
 * the average budget and gives the sensitive layer more bits, rules that prepareQAT and loraQuant
 * accept, and a budget no choice can meet named in the error.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, randn } from '@qgrad/core';
import { Conv2d, Flatten, Linear, ReLU, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

function setup() {
  const g = new Generator(8);
  const model = new Sequential(new Linear(32, 64, { generator: g }), new ReLU(), new Linear(64, 64, { generator: g }), new ReLU(), new Linear(64, 8, { generator: g }));
  const x = randn([32, 32], { generator: g });
  const y = noGrad(() => model.forward(x).add(randn([32, 8], { generator: g }).mul(0.1)));
  const loss = () => model.forward(x).sub(y).square().mean();
  return { model, loss, g };
}

describe('allocateBits', () => {
  it('measures trace, SQNR and loss change per layer, meets a 3-bit average from {2, 3, 4, 8}, and its rules drive prepareQAT and loraQuant', () => {
    const { model, loss, g } = setup();
    const before = noGrad(() => loss().item());
    const sens = Q.measureSensitivity(model, { loss, generator: g, samples: 4 });
    expect(noGrad(() => loss().item())).toBe(before); // weights restored
    expect(sens.map((s) => s.name)).toEqual(['0', '2', '4']);
    for (const s of sens) {
      expect(s.hessianTrace).toBeGreaterThan(0);
      expect(s.sqnrDb[8]!).toBeGreaterThan(s.sqnrDb[4]!);
      expect(s.sqnrDb[4]!).toBeGreaterThan(s.sqnrDb[2]!);
      expect(s.lossDelta[2]!).toBeGreaterThan(s.lossDelta[8]!);
    }
    for (const score of ['loss', 'hessian', 'sqnr'] as const) {
      const a = Q.allocateBits(model, sens, { budget: 3, choices: [2, 3, 4, 8], score });
      expect(a.averageBits).toBeLessThanOrEqual(3);
      expect(a.averageBits).toBeGreaterThan(2.5);
    }
    // the small last layer (512 weights) with a large loss change is cheap to protect: it gets more bits than uniform
    const a = Q.allocateBits(model, sens, { budget: 3, choices: [2, 3, 4, 8] });
    expect(a.bits['4']).toBeGreaterThanOrEqual(4);
    const m2 = setup().model;
    expect(Q.prepareQAT(m2, { rules: a.qatRules }).quantized).toEqual(['0', '2', '4']);
    const m3 = setup().model;
    Q.loraQuant(m3, { method: 'qlora', rank: 4, alpha: 8, targets: '*', rules: a.loraRules });
    expect((m3.at(4) as Q.QLoraLinear).baseLayer.weightPlan.grid.label).toBe(`int${a.bits['4']}`);
  });

  it('measures Conv2d layers too, and its rules name each layer\'s type so ptq quantizes the convs at their widths', () => {
    const g = new Generator(3);
    const model = new Sequential(new Conv2d(1, 4, 3, { padding: 1, generator: g }), new ReLU(), new Conv2d(4, 4, 3, { padding: 1, generator: g }), new ReLU(), new Flatten(), new Linear(4 * 36, 3, { generator: g }));
    const x = randn([8, 1, 6, 6], { generator: g });
    const y = noGrad(() => model.forward(x).add(randn([8, 3], { generator: g }).mul(0.1)));
    const loss = () => model.forward(x).sub(y).square().mean();
    const sens = Q.measureSensitivity(model, { loss, generator: g, samples: 2, choices: [2, 4] });
    expect(sens.map((s) => [s.name, s.params])).toEqual([['0', 36], ['2', 144], ['5', 432]]);
    for (const s of sens) expect(s.sqnrDb[4]!).toBeGreaterThan(s.sqnrDb[2]!);
    const a = Q.allocateBits(model, sens, { budget: 3, choices: [2, 4] });
    expect(a.qatRules.map((r) => r.types)).toEqual([['Conv2d'], ['Conv2d'], ['Linear']]);
    expect(a.loraRules.map((r) => r.match)).toEqual(['5']);
    const { report } = Q.ptq(model, [x], { method: 'rtn', rules: a.qatRules });
    expect(report.rows.map((r) => [r.name, r.weight.split(' ')[0]])).toEqual(sens.map((s) => [s.name, `int${a.bits[s.name]}`]));
  });

  it('takes the Hessian trace of hessianLoss when given, and the loss changes of loss', () => {
    const { model, loss } = setup();
    const one = Q.measureSensitivity(model, { loss, generator: new Generator(1), samples: 2, choices: [2] });
    const two = Q.measureSensitivity(model, { loss, hessianLoss: () => loss().mul(2), generator: new Generator(1), samples: 2, choices: [2] });
    for (const [i, s] of two.entries()) {
      expect(s.hessianTrace).toBeCloseTo(2 * one[i]!.hessianTrace, 4);
      expect(s.lossDelta[2]).toBe(one[i]!.lossDelta[2]);
    }
  });

  it('gives the more sensitive of two equal-size layers the bits', () => {
    const model = new Sequential(new Linear(8, 8), new Linear(8, 8));
    const row = (name: string, d2: number): Q.LayerSensitivity => ({ name, params: 64, weightNormSq: 1, hessianTrace: 1, sqnrDb: { 2: 10, 4: 20 }, lossDelta: { 2: d2, 4: 0 } });
    expect(Q.allocateBits(model, [row('0', 0.1), row('1', 1)], { budget: 3, choices: [2, 4] }).bits).toEqual({ 0: 2, 1: 4 });
  });

  it("solver 'exact' spends the budget the greedy leaves when its last upgrade is a large layer", () => {
    const model = new Sequential(new Linear(2, 5), new Linear(10, 10));
    const row = (name: string, params: number, lossDelta: Record<number, number>): Q.LayerSensitivity => ({ name, params, weightNormSq: 1, hessianTrace: 1, sqnrDb: { 2: 10, 3: 15, 4: 20 }, lossDelta });
    // the small layer saves the most per bit, so the greedy takes it to 4 bits; the large one's upgrade then no longer fits
    const sens = [row('0', 10, { 2: 5, 3: 2, 4: 0 }), row('1', 100, { 2: 10, 3: 0, 4: 0 })];
    const greedy = Q.allocateBits(model, sens, { budget: 3, choices: [2, 3, 4] });
    expect(greedy.bits).toEqual({ 0: 4, 1: 2 });
    const exact = Q.allocateBits(model, sens, { budget: 3, choices: [2, 3, 4], solver: 'exact' });
    expect(exact.bits).toEqual({ 0: 3, 1: 3 });
    expect(exact.averageBits).toBe(3);
    // ties in damage go to the allocation that uses more bits
    expect(Q.allocateBits(model, [row('0', 10, { 2: 0, 3: 0, 4: 0 }), row('1', 100, { 2: 0, 3: 0, 4: 0 })], { budget: 3, choices: [2, 3, 4], solver: 'exact' }).averageBits).toBe(3);
  });

  it("solver 'exact' reaches the least total damage within the budget that enumerating every allocation finds", () => {
    const layer = fc.record({ params: fc.integer({ min: 1, max: 64 }), d: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 3, maxLength: 3 }) });
    fc.assert(fc.property(fc.array(layer, { minLength: 1, maxLength: 4 }), fc.double({ min: 2, max: 4, noNaN: true }), (layers, budget) => {
      const model = new Sequential(...layers.map(() => new Linear(1, 1)));
      const choices = [2, 3, 4];
      const sens = layers.map((l, i): Q.LayerSensitivity => ({ name: String(i), params: l.params, weightNormSq: 1, hessianTrace: 1, sqnrDb: { 2: 1, 3: 2, 4: 3 }, lossDelta: { 2: l.d[0]!, 3: l.d[1]!, 4: l.d[2]! } }));
      const total = layers.reduce((n, l) => n + l.params, 0);
      let best = Infinity;
      for (let code = 0; code < 3 ** layers.length; code++) {
        const pick = layers.map((_, i) => Math.floor(code / 3 ** i) % 3);
        if (layers.reduce((n, l, i) => n + l.params * choices[pick[i]!]!, 0) > budget * total + 1e-9) continue;
        best = Math.min(best, layers.reduce((n, l, i) => n + l.d[pick[i]!]!, 0));
      }
      const a = Q.allocateBits(model, sens, { budget, choices, solver: 'exact' });
      expect(a.averageBits).toBeLessThanOrEqual(budget + 1e-9);
      expect(sens.reduce((n, s) => n + s.lossDelta[a.bits[s.name]!]!, 0)).toBeCloseTo(best, 12);
    }), { numRuns: 200 });
  });

  it('names a budget no choice can meet, and sensitivities that do not fit', () => {
    const { model } = setup();
    const row: Q.LayerSensitivity = { name: '0', params: 2048, weightNormSq: 1, hessianTrace: 1, sqnrDb: { 2: 1, 3: 2 }, lossDelta: { 2: 1, 3: 0 } };
    expect(() => Q.allocateBits(model, [row], { budget: 1.5, choices: [2, 3, 4, 8] })).toThrow(/budget 1\.5 bits per parameter is below the smallest choice 2 \(choices 2, 3, 4, 8\)/);
    expect(() => Q.allocateBits(model, [{ ...row, name: 'fc9' }], { budget: 3, choices: [2, 3] })).toThrow(/layer 'fc9', which the model does not have/);
    expect(() => Q.allocateBits(model, [row], { budget: 3, choices: [2, 4] })).toThrow(/layer '0' was not measured at 4 bits/);
  });
});
