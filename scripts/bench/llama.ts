/**
 * @file Bench section `llama`: one training step (forward + backward + AdamW) of the reference
 * tiny Llama (dim 128, 4 layers, 4 heads, 2 KV heads, SwiGLU 384, vocab 256, seq 128, batch 16)
 * in float32 and with 4-bit per-group(32) LSQ weights + 8-bit per-token activations, against the
 * same model in PyTorch (scripts/bench/torch_bench.py llama).
 */
import * as q from '@qgrad/core';
import { AdamW, Llama, tinyLlamaConfig } from '@qgrad/nn';
import { prepareQAT } from '@qgrad/quant';
import type { BenchContext } from './context.js';

const BATCH = 16;
const SEQ = 128;

function stepTimes(quant: boolean, steps: number): number[] {
  const g = new q.Generator(0);
  const model = new Llama(tinyLlamaConfig, { generator: g });
  if (quant) {
    prepareQAT(model, {
      default: { weight: { bits: 4, granularity: { group: 32 } }, input: { bits: 8, granularity: 'token' } },
      types: ['Linear'],
    });
  }
  const opt = new AdamW(model.parameters(), { lr: 1e-3 });
  const idx = q.randint(0, 256, [BATCH, SEQ + 1], { generator: g });
  const x = idx.narrow(1, 0, SEQ).contiguous();
  const y = idx.narrow(1, 1, SEQ).contiguous();
  const times: number[] = [];
  for (let s = 0; s < steps + 1; s++) {
    const t = performance.now();
    const loss = model.loss(x, y);
    opt.zeroGrad();
    loss.backward();
    opt.step();
    loss.item();
    if (s > 0) times.push(performance.now() - t); // the first step compiles kernels and inits LSQ scales
  }
  return times;
}

export async function run(ctx: BenchContext): Promise<Record<string, number>> {
  const steps = ctx.quick ? 2 : 5;
  const out: Record<string, number> = {};
  const backends = q.availableBackends().filter((b) => b !== 'js' || ctx.quick || q.availableBackends().length === 1);
  for (const backend of backends) {
    q.setBackend(backend);
    out[`qgrad-${backend} fp32`] = ctx.median(stepTimes(false, steps));
    out[`qgrad-${backend} W4g32 A8/token LSQ`] = ctx.median(stepTimes(true, steps));
  }
  q.setBackend('js');
  const t = ctx.torch('llama', String(steps));
  if (t) for (const [k, v] of Object.entries(t)) out[`pytorch ${k}`] = v;
  const rows = Object.entries(out).map(([k, v]) => {
    const quant = k.includes('W4');
    const ref = out[quant ? 'pytorch W4g32 A8/token LSQ' : 'pytorch fp32'];
    const fp = out[k.replace(' W4g32 A8/token LSQ', ' fp32')];
    return [k, v, ref ? v / ref : '-', quant && fp ? v / fp : '-'];
  });
  ctx.table(`tiny Llama training step (batch ${BATCH} × ${SEQ} tokens, fwd+bwd+AdamW; median of ${steps})`, ['what', 'ms/step', '× pytorch', '× own fp32'], rows);
  return out;
}
