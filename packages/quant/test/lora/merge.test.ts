/**
 * @file LoRA on quantized weights, as properties over methods × random shapes × ranks 1–8 × bits
 * 2–8: the merged model gives the adapter model's outputs (max |Δ| ≤ 1e-5 relative, float32) and
 * has no adapter left; qa-lora, l4q and lr-qat merge onto the grid they trained on.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Generator, linear, noGrad, randn, tensor, type Tensor } from '@qgrad/core';

const Q_int = (v: number[]) => tensor(v, { dtype: 'int32' });
import { Linear, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const maxAbs = (t: Tensor) => Math.max(...Array.from(t.dataSync(), Math.abs));

/** A method, its quant config for `bits`, and the spread of the random B that makes the adapter matter. */
function methodCase(inF: number, rank: number): fc.Arbitrary<{ method: Q.LoraMethod; quant: Q.WeightQuantConfig; bSpread: number }> {
  const bits = fc.integer({ min: 2, max: 8 });
  const groups = [4, 8, 16, 32].filter((L) => inF % L === 0 && inF / L > rank);
  return fc.oneof(
    fc.oneof(fc.constant({ grid: 'nf4', scale: { double: true } } as Q.WeightQuantConfig), bits.map((b) => ({ grid: 'int', bits: b }) as Q.WeightQuantConfig)).map((quant) => ({ method: 'qlora' as const, quant, bSpread: 0.1 })),
    fc.tuple(bits, fc.constantFrom(...groups)).map(([b, group]) => ({ method: 'qa-lora' as const, quant: { grid: 'int', bits: b, asymmetric: true, granularity: { group } } as Q.WeightQuantConfig, bSpread: 0.1 })),
    fc.tuple(bits, fc.constantFrom<Q.Granularity>('channel', { group: 16 })).map(([b, granularity]) => ({ method: 'l4q' as const, quant: { grid: 'int', bits: b, granularity, scale: 'learned' } as Q.WeightQuantConfig, bSpread: 0.05 })),
    fc.tuple(bits, fc.constantFrom<Q.Granularity>('channel', 'tensor', { group: 16 })).map(([b, granularity]) => ({ method: 'lr-qat' as const, quant: { grid: 'int', bits: b, granularity } as Q.WeightQuantConfig, bSpread: 1 })),
    fc.constantFrom<Q.WeightQuantConfig>({ grid: 'nf4', scale: { double: true } }, { grid: 'int', bits: 3 }).map((quant) => ({ method: 'loqt' as const, quant, bSpread: 0.1 })),
  );
}

const cases = fc
  .record({ inF: fc.constantFrom(64, 128), rank: fc.integer({ min: 1, max: 8 }), extraOut: fc.integer({ min: 1, max: 8 }), batch: fc.integer({ min: 1, max: 4 }), seed: fc.integer({ min: 1, max: 1e6 }) })
  .chain((s) => methodCase(s.inF, s.rank).map((m) => ({ ...s, ...m })));

describe('loraQuant → merge, as a property', () => {
  it('merge gives the adapter model\'s outputs within 1e-5 relative and leaves no adapter parameters, for every method × shape × rank 1–8 × bits 2–8', () => {
    let moved = 0;
    fc.assert(
      fc.property(cases, ({ inF, rank, extraOut, batch, seed, method, quant, bSpread }) => {
        const g = new Generator(seed);
        const out = rank + extraOut;
        const model = new Sequential(new Linear(inF, out, { generator: g }));
        Q.loraQuant(model, { method, rank, alpha: 2 * rank, targets: '*', quant, generator: g });
        const [[, layer]] = Q.loraLayers(model) as [[string, Q.LoraLayer]];
        expect(layer.method).toBe(method);
        model.eval();
        const x = randn([batch, inF], { generator: g });
        const before = noGrad(() => model.forward(x)); // B = 0: the quantized base alone
        noGrad(() => layer.loraB.copy_(randn(layer.loraB.shape, { generator: g }).mul(bSpread)));
        const want = noGrad(() => model.forward(x));
        if (maxAbs(want.sub(before)) > 1e-3 * maxAbs(want)) moved++;
        const r = Q.merge(model);
        expect(r.model).toBe(model);
        const got = noGrad(() => model.forward(x));
        expect(maxAbs(got.sub(want))).toBeLessThanOrEqual(1e-5 * Math.max(maxAbs(want), 1e-3));
        expect(Q.loraLayers(model)).toEqual([]);
        expect(Object.keys(model.stateDict()).filter((k) => /lora/i.test(k))).toEqual([]);
        const kind = method === 'qlora' || method === 'loqt' ? 'float' : 'quantized';
        expect(r.layers).toEqual([{ name: '0', method, kind }]);
        if (kind === 'quantized') expect(model.at(0)).toBeInstanceOf(Q.QuantizedLinear);
      }),
      { numRuns: 60 },
    );
    expect(moved).toBeGreaterThan(50); // the adapters did change the outputs being compared
  });

  it('qa-lora merges into the zero points only: same codes and scales, a plain int model on the same grid', () => {
    const g = new Generator(7);
    const model = new Sequential(new Linear(64, 12, { generator: g }));
    Q.loraQuant(model, { method: 'qa-lora', rank: 4, alpha: 8, targets: '0', quant: { grid: 'int', bits: 3, asymmetric: true, granularity: { group: 8 } }, generator: g });
    const layer = model.at(0) as Q.QALoraLinear;
    noGrad(() => layer.loraB.copy_(randn([12, 4], { generator: g })));
    const codes = Array.from(layer.baseLayer.codes().dataSync());
    const scales = Array.from(layer.baseLayer.scales().dataSync());
    const x = randn([5, 64], { generator: g });
    model.eval();
    const want = noGrad(() => model.forward(x));
    // the adapter sees group means only: permuting inputs within a group leaves its output alone
    const perm = Array.from({ length: 64 }, (_, i) => (i % 8 === 0 ? i + 1 : i % 8 === 1 ? i - 1 : i));
    const xp = x.indexSelect(1, Q_int(perm));
    const adapter = (t: Tensor) => noGrad(() => model.forward(t).sub(linear(t, layer.baseWeight(), layer.baseLayer.bias)));
    expect(maxAbs(adapter(xp).sub(adapter(x)))).toBeLessThanOrEqual(1e-5 * maxAbs(adapter(x)));
    Q.merge(model);
    const m = model.at(0) as Q.QuantizedLinear;
    expect(Array.from(m.codes().dataSync())).toEqual(codes);
    expect(Array.from(m.scales().dataSync())).toEqual(scales);
    expect(m.weightPlan.grid.label).toBe('uint3a');
    expect(maxAbs(noGrad(() => m.forward(x)).sub(want))).toBeLessThanOrEqual(1e-5 * maxAbs(want));
  });

  it('qlora merge with requantize puts the weight back on NF4 (double-quantized) and reports the SQNR that cost', () => {
    const g = new Generator(3);
    const model = new Sequential(new Linear(128, 16, { generator: g }), new Linear(16, 8, { generator: g }));
    Q.loraQuant(model, { method: 'qlora', rank: 4, alpha: 16, targets: '*', generator: g });
    for (const [, l] of Q.loraLayers(model)) noGrad(() => l.loraB.copy_(randn(l.loraB.shape, { generator: g }).mul(0.05)));
    const r = Q.merge(model, { requantize: true });
    expect(r.layers.map((l) => [l.name, l.kind])).toEqual([['0', 'quantized'], ['1', 'quantized']]);
    for (const l of r.layers) expect(l.sqnrDb).toBeGreaterThan(10);
    const q = model.at(0) as Q.QuantizedLinear;
    expect(q.weightPlan.grid.name).toBe('nf4');
    expect(q.weightScaleSecond).not.toBeNull();
  });

  it('qlora with B = 0 gives the NF4 (double-quantized absmax) QAT layer\'s eval output bit for bit, and stores the base as packed 4-bit codes + E4M3 absmaxes', () => {
    const g = new Generator(12);
    const lin = new Linear(128, 16, { generator: g });
    const ref = new Sequential(Q.QuantLinear.from(lin, { weight: { grid: 'nf4', scale: { double: true } } }));
    const model = new Sequential(lin);
    Q.loraQuant(model, { method: 'qlora', rank: 4, alpha: 16, dropout: 0.1, targets: '0', generator: g });
    ref.eval();
    model.eval();
    const x = randn([3, 128], { generator: g });
    expect(Array.from(noGrad(() => model.forward(x)).dataSync())).toEqual(Array.from(noGrad(() => ref.forward(x)).dataSync()));
    const base = (model.at(0) as Q.QLoraLinear).baseLayer;
    expect(base.weightCodes.numel()).toBe((128 * 16) / 2); // two 4-bit codes per byte
    expect(base.weightScale.dtype).toBe('uint8'); // E4M3 codes of the absmaxes (blocks of 64), per-256 float scales beside
    expect(Q.bitsPerParameter(new Sequential(base)).bitsPerParameter).toBeLessThan(4.2 + (16 * 32) / (128 * 16));
  });
});
