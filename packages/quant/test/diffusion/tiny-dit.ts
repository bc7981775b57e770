/**
 * @file The small class-conditional DiT the diffusion tests share: every Linear re-drawn (DiT's
 * adaLN-Zero init would make it predict 0), wrapped for ptq's timestep batches.
 */
import { Generator, noGrad } from '@qgrad/core';
import { DiT, init, Linear } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

/** An 8×8, one-block DiT with 4 classes whose Linears are drawn from `seed`. */
export function tinyDiT(seed: number): Q.TimestepModule<DiT> {
  const g = new Generator(seed);
  const net = new DiT({ imageSize: 8, patchSize: 4, inChannels: 1, dim: 16, depth: 1, numHeads: 2, numClasses: 4, freqDim: 16 }, { generator: g });
  noGrad(() => {
    for (const [, m] of net.namedModules()) {
      if (!(m instanceof Linear)) continue;
      init.normal_(m.weight, 0, 1 / Math.sqrt(m.inFeatures), { generator: g });
      init.normal_(m.bias!, 0, 0.1, { generator: g });
    }
  });
  return new Q.TimestepModule(net);
}
