/**
 * @file Bench section `lora` (issue 14): one QLoRA training step of the reference tiny Llama (NF4
 * base with double-quantized absmaxes, rank-8 adapters on every Linear of the decoder layers,
 * AdamW on the adapters) against its full float fine-tune step (AdamW on every parameter), batch 16
 * × 128 tokens; and the weight + optimizer-state memory of each (targets: ≤ 0.8× the time, ≤ 0.35×
 * the memory). The two models step alternately so that load changes hit both alike.
 */
import * as q from '@qgrad/core';
import { AdamW, Llama, modelBytes, optimizerStateBytes, tinyLlamaConfig, trainStep } from '@qgrad/nn';
import { loraParameters, loraQuant } from '@qgrad/quant';
import type { BenchContext } from './context.js';

const BATCH = 16;
const SEQ = 128;
const RANK = 8;

interface Contender { model: Llama; opt: AdamW; trainable: number; step: () => number }

function contender(lora: boolean): Contender {
  const g = new q.Generator(0);
  const model = new Llama(tinyLlamaConfig, { generator: g });
  if (lora) loraQuant(model, { method: 'qlora', rank: RANK, alpha: 2 * RANK, targets: 'model.layers.**', generator: g });
  const params = lora ? loraParameters(model) : model.parameters();
  const opt = new AdamW(params, { lr: 1e-3 });
  const idx = q.randint(0, 256, [BATCH, SEQ + 1], { generator: g });
  const x = idx.narrow(1, 0, SEQ).contiguous();
  const y = idx.narrow(1, 1, SEQ).contiguous();
  const step = () => {
    const t = performance.now();
    trainStep(model, opt, () => {
      const loss = model.loss(x, y);
      opt.zeroGrad();
      loss.backward();
      opt.step();
      return loss.item();
    });
    return performance.now() - t;
  };
  return { model, opt, trainable: params.reduce((a, p) => a + p.numel(), 0), step };
}

export async function run(ctx: BenchContext): Promise<Record<string, number>> {
  const steps = ctx.quick ? 2 : 5;
  const full = contender(false);
  const lora = contender(true);
  full.step(); // first steps compile kernels and create the optimizer state
  lora.step();
  const t = { full: [] as number[], lora: [] as number[] };
  for (let s = 0; s < steps; s++) {
    t.full.push(full.step());
    t.lora.push(lora.step());
  }
  const mem = (c: Contender) => ({ weights: modelBytes(c.model), optimizer: optimizerStateBytes(c.opt) });
  const mf = mem(full);
  const ml = mem(lora);
  const out = {
    'full fine-tune ms/step': ctx.median(t.full),
    'qlora ms/step': ctx.median(t.lora),
    'qlora / full time (paired median)': ctx.median(t.lora.map((v, i) => v / t.full[i]!)),
    'full weight bytes': mf.weights,
    'full optimizer bytes': mf.optimizer,
    'qlora weight bytes': ml.weights,
    'qlora optimizer bytes': ml.optimizer,
    'qlora / full memory': (ml.weights + ml.optimizer) / (mf.weights + mf.optimizer),
    'full trainable params': full.trainable,
    'qlora trainable params': lora.trainable,
  };
  const kib = (b: number) => (b / 1024).toFixed(0);
  ctx.table(`tiny Llama fine-tune step, QLoRA (NF4 + double quant, rank ${RANK} on every decoder Linear) vs full float (batch ${BATCH} × ${SEQ}, fwd+bwd+AdamW; median of ${steps}, alternating)`,
    ['what', 'ms/step', 'weights KiB', 'optimizer KiB', 'trainable params', '× full time', '× full memory'], [
      ['full fine-tune (fp32)', out['full fine-tune ms/step'].toFixed(1), kib(mf.weights), kib(mf.optimizer), full.trainable, 1, 1],
      ['QLoRA', out['qlora ms/step'].toFixed(1), kib(ml.weights), kib(ml.optimizer), lora.trainable, out['qlora / full time (paired median)'].toFixed(3), out['qlora / full memory'].toFixed(3)],
    ]);
  return out;
}
