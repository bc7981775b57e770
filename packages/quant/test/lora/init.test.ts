/**
 * @file LoftQ / LQ-LoRA initialisation: deq(Q) + adapter approximates the float weight better than
 * plain quantization, the reported error is the merged weight's, LQ-LoRA's error sequence never
 * increases, and methods that round W0 + B·A together refuse it by name.
 */
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, type Tensor } from '@qgrad/core';
import { Linear, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const frob = (t: Tensor) => Math.sqrt(noGrad(() => t.square().sum().item()));

describe('LoftQ / LQ-LoRA init', () => {
  const cases: [Q.LoraMethod, Q.WeightQuantConfig][] = [
    ['qlora', { grid: 'nf4', scale: { double: true } }],
    ['qlora', { grid: 'int', bits: 2 }],
    ['qa-lora', { grid: 'int', bits: 3, asymmetric: true, granularity: { group: 4 } }],
    ['loqt', { grid: 'nf4' }],
  ];
  for (const [method, quant] of cases) {
    for (const init of ['loftq', 'lq-lora'] as const) {
      it(`${init} on ${method} (${JSON.stringify(quant)}): error below plain quantization, equal to the merged weight's, ${init === 'lq-lora' ? 'non-increasing' : 'a fixed number of steps'}`, () => {
        const g = new Generator(21);
        const lin = new Linear(64, 24, { generator: g });
        const w = noGrad(() => lin.weight.detach().clone());
        const model = new Sequential(lin);
        Q.loraQuant(model, { method, rank: 6, alpha: 12, targets: '0', quant, init, generator: g });
        const stats = Q.loraInitStats(model)['0']!;
        const errs = stats.errors;
        if (init === 'loftq') expect(errs.length).toBe(5);
        else for (let i = 1; i < errs.length; i++) expect(errs[i]!).toBeLessThanOrEqual(errs[i - 1]!);
        expect(stats.error).toBe(Math.min(...errs));
        expect(stats.error).toBeLessThan(stats.plainError * 0.97);
        Q.merge(model);
        const m = model.at(0);
        const merged = m instanceof Linear ? m.weight : (m as Q.QuantizedLinear).dequantizedWeight();
        expect(Math.abs(frob(noGrad(() => merged.sub(w))) - stats.error)).toBeLessThan(1e-4 * stats.plainError);
      });
    }
  }

  it('refuses l4q and lr-qat, where W0 and B·A are rounded together', () => {
    for (const method of ['l4q', 'lr-qat'] as const) {
      expect(() => Q.loraQuant(new Sequential(new Linear(16, 8)), { method, rank: 2, alpha: 4, targets: '0', init: 'loftq' })).toThrow(new RegExp(`layer '0' \\(${method}\\): init 'loftq' splits W into a quantized part plus the adapter; method '${method}' rounds W0 \\+ B·A together`));
    }
  });
});
