/**
 * @file EfficientDM (methods-2.md §10): TALSQ keeps one learned step per timestep bucket, picks it by
 * each sample's t and sends gradients only to the active buckets' steps (property); installing it
 * leaves the calibrated model's output unchanged; with B = 0 the LoRA layer's weight is the PTQ
 * weight exactly (property over bits); merging gives the adapter model's outputs bit for bit and
 * leaves no adapter; the data-free distillation loss on a fixed teacher trajectory goes down.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, randn, tensor, type Tensor } from '@qgrad/core';
import { AdamW, Diffusion, Linear, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { tinyDiT } from './tiny-dit.js';

const A8: Q.ActQuantConfig = { grid: 'int', bits: 8, scale: { mode: 'fixed', rule: 'mse' } };
const values = (t: Tensor) => Array.from(t.dataSync());

/** The tiny DiT after W4A8 PTQ4DM (RTN) on a small NDTC set, the float model and the diffusion. */
function ptqModel(seed = 1) {
  const diffusion = new Diffusion({ timesteps: 100 });
  const float = tinyDiT(seed);
  const labels = Array.from({ length: 32 }, (_, i) => i % 4);
  const cal = Q.collectCalibration(diffusion, float, { samples: 32, shape: [1, 8, 8], steps: 10, labels, generator: new Generator(5) });
  const model = tinyDiT(seed);
  Q.ptq4dm(model, cal, { method: 'rtn', default: { weight: { grid: 'int', bits: 4 }, input: A8 }, skip: ['**.y_embed'] });
  model.eval();
  return { diffusion, float, model, cal };
}

describe('TALSQ', () => {
  it('keeps one step per bucket, quantizes each sample with its own bucket\'s step, and sends gradients only to the active buckets', () => {
    fc.assert(
      fc.property(fc.record({ K: fc.integer({ min: 2, max: 8 }), t: fc.array(fc.integer({ min: 0, max: 99 }), { minLength: 1, maxLength: 5 }), seed: fc.integer({ min: 0, max: 1e6 }) }), ({ K, t, seed }) => {
        const g = new Generator(seed);
        const ctx = new Q.TimestepContext();
        const buckets = new Q.TimestepBuckets(100, K);
        const q = new Q.TemporalActQuantizer({ grid: 'int', bits: 4 }, buckets, ctx);
        expect(q.scale!.shape).toEqual([K, 1]);
        noGrad(() => q.scale!.copy_(tensor(Array.from({ length: K }, (_, k) => 0.05 * (k + 1)), { dtype: 'float32' }).reshape([K, 1])));
        const x = randn([t.length, 3, 4], { generator: g });
        const y = ctx.run(t, () => q.forward(x));
        // each row, quantized per tensor with its bucket's step, as a one-bucket quantizer would
        t.forEach((ti, i) => {
          const s = 0.05 * (buckets.bucketOf(ti) + 1);
          const row = x.narrow(0, i, 1).dataSync();
          const want = Array.from(row, (v) => Math.max(-8, Math.min(7, Math.round(v / s))) * s);
          const got = y.narrow(0, i, 1).dataSync();
          want.forEach((w, j) => expect(got[j]).toBeCloseTo(w, 5));
        });
        ctx.run(t, () => q.forward(x).mul(randn([t.length, 3, 4], { generator: g })).sum()).backward();
        const active = new Set(t.map((ti) => buckets.bucketOf(ti)));
        values(q.scale!.grad!).forEach((gk, k) => (active.has(k) ? expect(Number.isFinite(gk)).toBe(true) : expect(gk).toBe(0)));
        expect(buckets.bucketOf(t[0]!)).toBe(Math.floor((t[0]! * K) / 100));
      }),
      { numRuns: 40 },
    );
  });

  it('needs the timesteps of the forward and says so', () => {
    const q = new Q.TemporalActQuantizer({ grid: 'int', bits: 8 }, new Q.TimestepBuckets(100, 4), new Q.TimestepContext());
    expect(() => q.forward(randn([2, 3]))).toThrow(/no timesteps are set; run the model through TimestepModule.forward/);
  });

  it('installed on a calibrated model, starts at the calibrated scale: outputs unchanged', () => {
    const { model, cal } = ptqModel();
    const before = noGrad(() => model.forward(cal.x, cal.t, cal.labels));
    const installed = Q.talsq(model, { input: A8, timesteps: 100, buckets: 10 });
    expect(installed.length).toBeGreaterThan(5);
    const after = noGrad(() => model.forward(cal.x, cal.t, cal.labels));
    expect(values(after)).toEqual(values(before));
  });
});

describe('EfficientDMLinear', () => {
  it('with B = 0 gives the PTQ weight exactly, for 2–8 bits and per-channel or per-tensor scales', () => {
    fc.assert(
      fc.property(fc.record({ bits: fc.integer({ min: 2, max: 8 }), granularity: fc.constantFrom<Q.Granularity>('channel', 'tensor'), inF: fc.integer({ min: 4, max: 24 }), out: fc.integer({ min: 4, max: 24 }), seed: fc.integer({ min: 0, max: 1e6 }) }), ({ bits, granularity, inF, out, seed }) => {
        const g = new Generator(seed);
        const model = new Sequential(new Linear(inF, out, { generator: g }));
        Q.ptq(model, [], { method: 'rtn', default: { weight: { grid: 'int', bits, granularity } } });
        const src = model.at(0) as Q.QuantLinear;
        const want = noGrad(() => src.quantizedWeight());
        const layer = new Q.EfficientDMLinear(src, { rank: 2, generator: g });
        expect(values(noGrad(() => layer.quantizedWeight()))).toEqual(values(want));
      }),
      { numRuns: 40 },
    );
  });

  it('merges into the quantized model exactly: same outputs bit for bit, weights on the grid, no adapter left', () => {
    const { model, cal } = ptqModel();
    const ptqOut = noGrad(() => model.forward(cal.x, cal.t, cal.labels));
    Q.talsq(model, { input: A8, timesteps: 100, buckets: 10 });
    const layers = Q.efficientDM(model, { rank: 2, generator: new Generator(3) });
    const g = new Generator(4);
    noGrad(() => {
      for (const [, l] of layers) l.loraB.copy_(randn(l.loraB.shape, { generator: g }).mul(0.2));
      for (const p of Q.efficientDMParameters(model).activationScales) p.copy_(p.mul(randn(p.shape, { generator: g }).mul(0.1).add(1)));
    });
    const before = noGrad(() => model.forward(cal.x, cal.t, cal.labels));
    expect(values(before)).not.toEqual(values(ptqOut)); // the adapters and steps moved the output
    const names = Q.mergeEfficientDM(model);
    expect(names).toEqual(layers.map(([n]) => n));
    const after = noGrad(() => model.forward(cal.x, cal.t, cal.labels));
    expect(values(after)).toEqual(values(before));
    expect(Object.keys(model.stateDict()).filter((k) => /lora/i.test(k))).toEqual([]);
    for (const n of names) {
      const q = model.getSubmodule(n) as Q.QuantLinear;
      expect(q).toBeInstanceOf(Q.QuantLinear);
      // on the grid: its own fixed quantizer returns the weight unchanged
      expect(values(noGrad(() => q.quantizedWeight()))).toEqual(values(q.weight));
    }
  });

  it('efficientDM freezes everything but the adapters, Δ_w and TALSQ steps', () => {
    const { model } = ptqModel();
    Q.talsq(model, { input: A8, timesteps: 100, buckets: 10 });
    Q.efficientDM(model, { rank: 2 });
    const p = Q.efficientDMParameters(model);
    const trainable = new Set(model.parameters().filter((t) => t.requiresGrad));
    const listed = [...p.lora.flatMap((l) => l.params), ...p.weightScales, ...p.activationScales];
    expect(new Set(listed)).toEqual(trainable);
    expect(p.lora.every((l) => l.meanWeightScale > 0)).toBe(true);
  });
});

describe('data-free distillation', () => {
  it('lowers the distillation loss against the float teacher on a fixed held-out teacher trajectory', () => {
    const { diffusion, float, model } = ptqModel();
    Q.talsq(model, { input: A8, timesteps: 100, buckets: 10 });
    Q.efficientDM(model, { rank: 2, generator: new Generator(3) });
    const labels = [0, 1, 2, 3, 0, 1, 2, 3];
    const heldOut = Q.teacherTrajectory(diffusion, float, { shape: [8, 1, 8, 8], steps: 10, labels, generator: new Generator(77) });
    expect(heldOut.map((s) => s.t)).toEqual([90, 80, 70, 60, 50, 40, 30, 20, 10, 0]);
    const loss = () => noGrad(() => heldOut.reduce((a, s) => a + Q.kdLoss(model.forward(s.x, new Array(8).fill(s.t), labels).reshape([8, -1]), s.eps.reshape([8, -1]), { kind: 'mse' }).item(), 0) / heldOut.length);
    const before = loss();
    const p = Q.efficientDMParameters(model);
    const optimizer = new AdamW([{ params: p.lora.flatMap((l) => l.params), lr: 3e-3 }, { params: p.weightScales, lr: 1e-6 }, { params: p.activationScales, lr: 5e-4 }], { weightDecay: 0 });
    const losses = Q.efficientDMDistill(model, float, diffusion, { optimizer, trajectories: 4, batchSize: 8, shape: [1, 8, 8], steps: 10, labels: () => labels, generator: new Generator(8) });
    expect(losses).toHaveLength(40);
    const after = loss();
    console.log(`distillation loss on the held-out trajectory: ${before.toFixed(4)} → ${after.toFixed(4)}`);
    expect(after).toBeLessThan(before);
  });
});
