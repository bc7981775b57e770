/**
 * @file Training with LoRA on quantized weights: only the adapters (and, for l4q and lr-qat, the
 * learned scales) receive gradients, every other parameter is frozen, and the stored base (codes,
 * scales, Φ0) does not change over optimizer steps; LR-QAT's recomputing backward equals autograd
 * on primitives; LoQT changes its base only at its merges, by the requantization alone.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { eye, Generator, gradOf, linear, noGrad, randn, type Tensor } from '@qgrad/core';
import { AdamW, Linear, ReLU, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const bitsOf = (t: Tensor) => Array.from(t.contiguous().dataSync(), Number);
const snapshot = (m: Sequential) => Object.fromEntries(Q.loraLayers(m).flatMap(([n, l]) => Object.entries(l.baseState()).map(([k, t]) => [`${n}.${k}`, bitsOf(t)])));

function quantFor(method: Q.LoraMethod, bits: number): Q.WeightQuantConfig {
  switch (method) {
    case 'qlora': case 'loqt': return { grid: 'nf4', scale: { double: true } };
    case 'qa-lora': return { grid: 'int', bits, asymmetric: true, granularity: { group: 4 } };
    case 'l4q': return { grid: 'int', bits, scale: 'learned' };
    case 'lr-qat': return { grid: 'int', bits };
  }
}

describe('training LoRA layers', () => {
  it('gives gradients to the adapters (and l4q / lr-qat scales) only, and leaves the stored base unchanged over AdamW steps', () => {
    fc.assert(
      fc.property(fc.constantFrom<Q.LoraMethod>('qlora', 'qa-lora', 'l4q', 'lr-qat', 'loqt'), fc.integer({ min: 2, max: 8 }), fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 1e6 }), (method, bits, rank, seed) => {
        const g = new Generator(seed);
        const model = new Sequential(new Linear(64, 32, { generator: g }), new ReLU(), new Linear(32, 16, { generator: g }), new ReLU(), new Linear(16, 4, { generator: g }));
        Q.loraQuant(model, { method, rank, alpha: 16, targets: ['0', '2'], quant: quantFor(method, bits), dropout: method === 'l4q' || method === 'lr-qat' ? 0 : 0.1, generator: g });
        const trained = new Set(Q.loraParameters(model));
        const scales = method === 'l4q' || method === 'lr-qat';
        expect(trained.size).toBe(2 * (method === 'loqt' ? 1 : 2) + (scales ? 2 : 0));
        const before = snapshot(model);
        const opt = new AdamW([...trained], { lr: 1e-2 });
        const x = randn([8, 64], { generator: g });
        const y = randn([8, 4], { generator: g });
        for (let step = 0; step < 3; step++) {
          opt.zeroGrad();
          model.forward(x).sub(y).square().mean().backward();
          for (const [name, p] of model.namedParameters()) {
            if (trained.has(p)) expect(p.grad, name).not.toBeNull();
            else expect(p.grad, name).toBeNull();
          }
          opt.step();
        }
        for (const [, l] of Q.loraLayers(model)) expect(Math.max(...bitsOf(l.loraB).map(Math.abs))).toBeGreaterThan(0); // B moved off 0
        expect(snapshot(model)).toEqual(before);
      }),
      { numRuns: 15 },
    );
  });

  it("LR-QAT's recomputing backward equals autograd on primitives (STE round, clamp mask, ∂Ŵ/∂s = W_int) in float64", () => {
    const g = new Generator(11);
    for (const granularity of ['channel', 'tensor', { group: 8 }] as Q.Granularity[]) {
      const lin = new Linear(32, 6, { generator: g, dtype: 'float64' });
      const model = new Sequential(lin);
      Q.loraQuant(model, { method: 'lr-qat', rank: 3, alpha: 3, targets: '0', quant: { grid: 'int', bits: 3, granularity }, generator: g });
      const l = model.at(0) as Q.LrQatLinear;
      noGrad(() => l.loraB.copy_(randn([6, 3], { generator: g, dtype: 'float64' })));
      const x = randn([4, 32], { generator: g, dtype: 'float64' }).requiresGrad_();
      const w = randn([4, 6], { generator: g, dtype: 'float64' });
      const got = gradOf([l.forward(x).mul(w).sum()], [x, l.loraA, l.loraB, l.scale]);
      // reference: u = Φ0 + (α/r)·B·A; W_int = M·u + sg(clamp(round(u)) − M·u); Ŵ = s·W_int
      const u = l.phiValues().add(l.loraB.matmul(l.loraA).mul(l.scaling).reshape(l.viewShape));
      const { qmin, qmax } = l.plan.grid.integer!;
      const mask = noGrad(() => u.ge(qmin).to('float64').mul(u.le(qmax).to('float64')));
      const mu = u.mul(mask);
      const wInt = mu.add(noGrad(() => u.round().clamp(qmin, qmax).sub(mu)));
      const ref = linear(x, wInt.mul(l.scale).reshape([6, 32]), l.bias);
      const want = gradOf([ref.mul(w).sum()], [x, l.loraA, l.loraB, l.scale]);
      expect(noGrad(() => ref.sub(l.forward(x)).abs().max().item())).toBe(0);
      got.forEach((t, i) => expect(noGrad(() => t.sub(want[i]!).abs().max().item())).toBeLessThan(1e-12));
    }
  });

  it('LoQT: gaps 100, 120, 144, …; a merge folds α·B·P into the base with one requantization, takes P from the gradient, and compensation never raises the residual', () => {
    expect(Q.loqtMergeSteps(500)).toEqual([100, 220, 364]);
    const g = new Generator(4);
    const model = new Sequential(new Linear(64, 16, { generator: g }), new ReLU(), new Linear(16, 8, { generator: g }));
    Q.loraQuant(model, { method: 'loqt', rank: 4, alpha: 0.5, targets: '*', generator: g });
    const layers = Q.loraLayers(model) as [string, Q.LoqtLinear][];
    for (const [, l] of layers) {
      const p = l.loraA;
      const ppt = noGrad(() => p.matmul(p.t()));
      expect(noGrad(() => ppt.sub(eye(4)).abs().max().item())).toBeLessThan(1e-5); // orthonormal rows
      noGrad(() => l.loraB.copy_(randn(l.loraB.shape, { generator: g }).mul(0.2)));
    }
    const x = randn([8, 64], { generator: g });
    const y = randn([8, 8], { generator: g });
    const wFp = layers.map(([, l]) => noGrad(() => l.baseWeight().add(l.deltaWeight())));
    const pBefore = layers.map(([, l]) => bitsOf(l.loraA));
    const codesBefore = layers.map(([, l]) => bitsOf(l.baseLayer.codes()));
    const stats = Q.loqtMerge(model, { loss: () => model.forward(x).sub(y).square().mean() });
    layers.forEach(([name, l], i) => {
      // the new base is exactly Q(W_fp), B is reset to 0, P moved to the gradient's row space
      const want = Q.frozenBase(wFp[i]!, l.baseLayer.bias, l.quant, 'test').dequantizedWeight();
      expect(bitsOf(l.baseWeight())).toEqual(bitsOf(want));
      expect(bitsOf(l.loraB).every((v) => v === 0)).toBe(true);
      expect(bitsOf(l.loraA)).not.toEqual(pBefore[i]);
      expect(bitsOf(l.baseLayer.codes())).not.toEqual(codesBefore[i]); // codes change at merges (only there)
      expect(stats[name]!.residual).toBe(stats[name]!.residualUncompensated);
    });
    // with compensation: the residual ‖W_fp − deq(Q) − α·B·P‖ is never above the uncompensated one
    for (const [, l] of layers) noGrad(() => l.loraB.copy_(randn(l.loraB.shape, { generator: g }).mul(0.2)));
    for (const s of Object.values(Q.loqtMerge(model, { compensate: 5 }))) expect(s.residual).toBeLessThanOrEqual(s.residualUncompensated);
  });
});
