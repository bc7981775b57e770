/**
 * @file modelBytes / optimizerStateBytes / tensorBytes: parameters and buffers at their dtype's
 * width, shared tensors once, and AdamW's two moments per stepped parameter (none before a step,
 * none for a frozen one).
 */
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { AdamW, Linear, Module, modelBytes, optimizerStateBytes, tensorBytes } from '@qgrad/nn';

class WithBuffer extends Module {
  lin = this.registerModule('lin', new Linear(4, 3));
  codes = this.registerBuffer('codes', q.zeros([10], { dtype: 'uint8' }));
  forward(x: q.Tensor): q.Tensor {
    return this.lin.forward(x);
  }
}

describe('training memory', () => {
  it('counts each distinct tensor once, at its dtype width', () => {
    const a = q.zeros([2, 3]);
    expect(tensorBytes([a, a, q.zeros([5], { dtype: 'int8' }), q.zeros([1], { dtype: 'float64' })])).toBe(24 + 5 + 8);
  });

  it('counts parameters, frozen or not, and buffers', () => {
    const m = new WithBuffer();
    m.lin.bias!.requiresGrad = false;
    expect(modelBytes(m)).toBe((12 + 3) * 4 + 10);
  });

  it("counts AdamW's two moments per parameter once it has stepped", () => {
    const m = new WithBuffer();
    const opt = new AdamW([m.lin.weight], { lr: 1e-3 });
    expect(optimizerStateBytes(opt)).toBe(0);
    m.forward(q.ones([2, 4])).sum().backward();
    opt.step();
    expect(optimizerStateBytes(opt)).toBe(2 * 12 * 4);
    expect(optimizerStateBytes([opt, new AdamW([m.lin.bias!], { lr: 1e-3 })])).toBe(2 * 12 * 4);
  });
});
