/** @file The GGUF tests' model: a seeded Llama whose outputs move when any exported tensor is wrong. */
import { Generator } from '@qgrad/core';
import { Embedding, init, Linear, Llama, RMSNorm, type LlamaConfig } from '@qgrad/nn';

/**
 * A seeded Llama whose logits have std ≈ 1: HF's N(0, 0.02²) init leaves them nearly uniform,
 * where no export error would move the logits or the KL divergence. Norm gains vary so a swapped
 * norm shows. In train mode (the caller sets eval or prepares QAT).
 */
export function seededLlama(cfg: LlamaConfig, seed: number): Llama {
  const generator = new Generator(seed);
  const llama = new Llama(cfg, { generator });
  for (const m of llama.modules()) {
    if (m instanceof Linear) init.normal_(m.weight, 0, 1 / Math.sqrt(m.weight.shape[1]!), { generator });
    if (m instanceof Embedding) init.normal_(m.weight, 0, 1, { generator });
    if (m instanceof RMSNorm) init.normal_(m.weight!, 1, 0.2, { generator });
  }
  return llama;
}
