import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import {
  AdamW, BCEWithLogitsLoss, Conv2d, CrossEntropyLoss, DataLoader, Flatten, KLDivLoss, L1Loss, Linear, MSELoss, MaxPool2d, NLLLoss,
  ReLU, Sequential, crossEntropy, loadMnist, mseLoss,
} from '@qgrad/nn';

describe('loss modules', () => {
  it('compute the same values as the loss functions, with their options', () => {
    const logits = q.randn([4, 3]);
    const target = q.tensor([0, 2, 1, 2], { dtype: 'int32' });
    const ce = new CrossEntropyLoss({ labelSmoothing: 0.1 });
    expect(ce.forward(logits, target).item()).toBe(crossEntropy(logits, target, { labelSmoothing: 0.1 }).item());
    expect(ce.toString()).toBe('CrossEntropyLoss(labelSmoothing=0.1)');
    expect(new NLLLoss().forward(q.logSoftmax(logits, 1), target).item()).toBeCloseTo(crossEntropy(logits, target).item(), 6);
    const a = q.randn([5]);
    const b = q.randn([5]);
    expect(new MSELoss().forward(a, b).item()).toBe(mseLoss(a, b).item());
    expect(new MSELoss({ reduction: 'sum' }).forward(a, b).item()).toBeCloseTo(a.sub(b).square().sum().item(), 5);
    expect(new L1Loss().forward(a, b).item()).toBeCloseTo(a.sub(b).abs().mean().item(), 6);
    expect(new BCEWithLogitsLoss().forward(q.zeros([2]), q.ones([2])).item()).toBeCloseTo(Math.LN2, 6);
    const p = q.softmax(q.randn([2, 3]), 1);
    expect(new KLDivLoss({ reduction: 'batchmean' }).forward(p.log(), p).item()).toBeCloseTo(0, 6);
  });
});

describe('training end to end', () => {
  it('a small CNN trained with AdamW on MNIST batches drives the loss down', () => {
    q.manualSeed(0);
    const { train } = loadMnist();
    const subset = { length: 256, get: (i: number) => train.dataset.get(i), getBatch: (idx: number[]) => train.dataset.getBatch(idx) };
    const model = new Sequential(new Conv2d(1, 4, 5, { stride: 3 }), new ReLU(), new MaxPool2d(2), new Flatten(), new Linear(4 * 4 * 4, 10));
    const opt = new AdamW(model.parameters(), { lr: 3e-2 });
    const loader = new DataLoader(subset, { batchSize: 64, shuffle: true, generator: new q.Generator(1) });
    const lossOn = () => q.noGrad(() => crossEntropy(model.forward(train.images.narrow(0, 0, 256)), train.labels.narrow(0, 0, 256)).item());
    const before = lossOn();
    for (let e = 0; e < 4; e++) {
      for (const [x, y] of loader) {
        opt.zeroGrad();
        crossEntropy(model.forward(x!), y!).backward();
        opt.step();
      }
    }
    const after = lossOn();
    expect(after).toBeLessThan(before * 0.7);
  });
});
