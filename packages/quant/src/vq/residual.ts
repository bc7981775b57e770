/**
 * @file Residual VQ (methods-2.md §5.2): L codebooks, each quantizing what the previous left,
 * r_{l+1} = r_l − e_l, output Σ e_l. Gradient convention: RQ-VAE's single straight-through on the
 * total, ẑ = z + sg(Σe − z), so ∂ẑ/∂z = I (lucidrains' per-stage STE would give L·I); each
 * stage's loss is its own commitment/codebook term on its residual.
 */
import { embedding, type Generator, type Tensor } from '@qgrad/core';
import { Module, ModuleList } from '@qgrad/nn';
import { codeStats, VectorQuantizer, type VectorQuantizerOptions, type VQOutput } from './codebook.js';

/**
 * Residual vector quantization: `numStages` codebooks, each quantizing what the previous stages left; the output is their sum.
 * @example
 * const rvq = new ResidualVQ(4, 256, 32, { ema: {} });
 * const { quantized, indices } = rvq.forward(z); // indices [4, ...]
 */
export class ResidualVQ extends Module {
  stages: ModuleList<VectorQuantizer>;
  constructor(readonly numStages: number, readonly numCodes: number, readonly dim: number, o: VectorQuantizerOptions & { generator?: Generator } = {}) {
    super();
    this.stages = this.registerModule('stages', new ModuleList(Array.from({ length: numStages }, () => new VectorQuantizer(numCodes, dim, o))));
  }
  /** `stages`: use only the first L' ≤ L codebooks (bitrate scalability). */
  forward(z: Tensor, stages = this.numStages): Omit<VQOutput, 'indices'> & { indices: Tensor[]; perStage: { perplexity: number; usage: number }[] } {
    let residual = z.detach();
    let total: Tensor | null = null;
    let loss: Tensor | null = null;
    const indices: Tensor[] = [];
    const perStage: { perplexity: number; usage: number }[] = [];
    for (let l = 0; l < stages; l++) {
      const vq = this.stages.at(l);
      const out = vq.forward(residual);
      const e = out.quantized.detach();
      total = total ? total.add(e) : e;
      loss = loss ? loss.add(out.loss) : out.loss;
      residual = residual.sub(e);
      indices.push(out.indices);
      perStage.push({ perplexity: out.perplexity, usage: out.usage });
    }
    const first = codeStats(indices[0]!, this.numCodes);
    return { quantized: z.add(total!.sub(z).detach()), indices, loss: loss!, perplexity: first.perplexity, usage: first.usage, perStage };
  }
  /** Σ_l codebook_l[indices_l]. */
  decode(indices: Tensor[]): Tensor {
    return indices.map((idx, l) => embedding(idx, this.stages.at(l).codebook)).reduce((a, b) => a.add(b));
  }
}
