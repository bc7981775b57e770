/** ViT: token layout, gradients reaching every parameter, overfitting a tiny batch, errors. */
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { AdamW, ViT, mnistViTConfig, type ViTConfig } from '@qgrad/nn';
import { paramsWithoutGrad } from '../helpers.js';

const tiny: ViTConfig = { imageSize: 8, patchSize: 4, inChannels: 1, numClasses: 4, dim: 16, depth: 2, numHeads: 2, mlpDim: 32 };

describe('ViT', () => {
  it('embeds 7×7 patches of 28×28 digits as 16 tokens plus a class token', () => {
    const vit = new ViT(mnistViTConfig);
    expect(vit.numPatches).toBe(16);
    expect(vit.pos_embed.shape).toEqual([1, 17, 64]);
    expect(vit.patch_embed.forward(q.randn([3, 1, 28, 28])).shape).toEqual([3, 16, 64]);
    expect(vit.forward(q.randn([3, 1, 28, 28])).shape).toEqual([3, 10]);
  });

  it('sends gradients to every parameter, class token and position embedding included', () => {
    const vit = new ViT(tiny, { generator: new q.Generator(0) });
    q.noGrad(() => vit.head.weight.copy_(q.randn([4, 16]))); // the zero-initialised head would block the rest
    expect(paramsWithoutGrad(vit, vit.forward(q.randn([2, 1, 8, 8])))).toEqual([]);
  });

  it('classifies by the class token: permuting patches changes nothing only if position embeddings are equal', () => {
    const vit = new ViT(tiny, { generator: new q.Generator(1) });
    q.noGrad(() => vit.pos_embed.zero_());
    const x = q.randn([1, 1, 8, 8]);
    // swap the left and right halves: the 4 patches are permuted, the token set is the same
    const swapped = q.cat([x.narrow(3, 4, 4), x.narrow(3, 0, 4)], 3);
    const a = vit.forward(x).dataSync();
    const b = vit.forward(swapped).dataSync();
    a.forEach((v, i) => expect(v).toBeCloseTo(b[i]!, 5));
  });

  it('overfits 8 images with random labels: cross entropy below 0.05 within 80 AdamW steps', () => {
    const vit = new ViT(tiny, { generator: new q.Generator(2) });
    const opt = new AdamW(vit.parameters(), { lr: 1e-2, weightDecay: 0 });
    const x = q.randn([8, 1, 8, 8], { generator: new q.Generator(3) });
    const y = q.tensor([0, 1, 2, 3, 3, 2, 1, 0], { dtype: 'int32' });
    let loss = Infinity;
    for (let i = 0; i < 80 && loss > 0.05; i++) {
      const l = q.crossEntropy(vit.forward(x), y);
      loss = l.item();
      l.backward();
      opt.step();
      opt.zeroGrad();
    }
    expect(loss).toBeLessThan(0.05);
  });

  it('names a wrong image size and a patch size that does not divide it', () => {
    const vit = new ViT(tiny);
    expect(() => vit.forward(q.randn([2, 1, 9, 9]))).toThrow(/PatchEmbed: expected images \[N, 1, 8, 8\], got \[2, 1, 9, 9\]/);
    expect(() => new ViT({ ...tiny, patchSize: 3 })).toThrow(/imageSize 8 is not a multiple of patchSize 3/);
  });
});
