/**
 * @file The small class-conditional DiT the diffusion tests share: every Linear re-drawn (DiT's
 * adaLN-Zero init would make it predict 0), wrapped for ptq's timestep batches.
 */
import { Generator, noGrad } from '@qgrad/core';
import { DiT, init, Linear, type DiTConfig } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const TINY: DiTConfig = { imageSize: 8, patchSize: 4, inChannels: 1, dim: 16, depth: 1, numHeads: 2, numClasses: 4, freqDim: 16 };

/** A DiT (by default 8×8, one block, 4 classes) whose Linears are drawn from `seed`. */
export function tinyDiT(seed: number, config: DiTConfig = TINY): Q.TimestepModule<DiT> {
  const g = new Generator(seed);
  const net = new DiT(config, { generator: g });
  noGrad(() => {
    for (const [, m] of net.namedModules()) {
      if (!(m instanceof Linear)) continue;
      init.normal_(m.weight, 0, 1 / Math.sqrt(m.inFeatures), { generator: g });
      init.normal_(m.bias!, 0, 0.1, { generator: g });
    }
  });
  return new Q.TimestepModule(net);
}
