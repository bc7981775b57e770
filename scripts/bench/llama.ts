/**
 * @file Bench section `llama`: one training step (forward + backward + AdamW) of the reference
 * tiny Llama (dim 128, 4 layers, 4 heads, 2 KV heads, SwiGLU 384, vocab 256, seq 128, batch 16)
 * in float32 and with 4-bit per-group(32) LSQ weights + 8-bit per-token activations, against the
 * same model in PyTorch (scripts/bench/torch_bench.py llama).
 */
import * as q from '@qgrad/core';
import { AdamW, Llama, tinyLlamaConfig, trainStep } from '@qgrad/nn';
import { prepareQAT } from '@qgrad/quant';
import { type BenchContext, readBack } from './context.js';
import { gpuStatus } from './gpu.js';

const BATCH = 16;
const SEQ = 128;

/** The reference tiny Llama and its AdamW, with 4-bit per-group(32) LSQ weights + 8-bit per-token inputs when `quant` (scripts/bench/soak.ts trains the same). */
export function benchLlama(quant: boolean, g: q.Generator): { model: Llama; opt: AdamW } {
  const model = new Llama(tinyLlamaConfig, { generator: g });
  if (quant) {
    prepareQAT(model, {
      default: { weight: { bits: 4, granularity: { group: 32 } }, input: { bits: 8, granularity: 'token' } },
      types: ['Linear'],
    });
  }
  return { model, opt: new AdamW(model.parameters(), { lr: 1e-3 }) };
}

/** One next-token forward + backward + AdamW step inside trainStep, which recycles the step's activations at its end (what PyTorch's refcounting does); returns the loss. */
export function llamaStep(model: Llama, opt: AdamW, x: q.Tensor, y: q.Tensor): number {
  return trainStep(model, opt, () => {
    const loss = model.loss(x, y);
    opt.zeroGrad();
    loss.backward();
    opt.step();
    return loss.item();
  });
}

/** One training step of a fresh model (same seed either way); returns its wall time in ms. */
function trainer(quant: boolean): () => number {
  const g = new q.Generator(0);
  const { model, opt } = benchLlama(quant, g);
  const idx = q.randint(0, 256, [BATCH, SEQ + 1], { generator: g });
  const x = idx.narrow(1, 0, SEQ).contiguous();
  const y = idx.narrow(1, 1, SEQ).contiguous();
  return () => {
    const t = performance.now();
    llamaStep(model, opt, x, y);
    readBack(model);
    return performance.now() - t;
  };
}

/**
 * fp32 and QAT step times, the two models stepping alternately so that load changes and buffer
 * reuse hit both alike (run one after the other, the ratio swung from 0.97 to 1.46 here); the
 * first step of each compiles kernels and initialises LSQ scales and is not counted.
 */
function stepTimes(steps: number): { fp: number[]; qat: number[] } {
  const fp = trainer(false);
  const qat = trainer(true);
  fp();
  qat();
  const out = { fp: [] as number[], qat: [] as number[] };
  for (let s = 0; s < steps; s++) {
    out.fp.push(fp());
    out.qat.push(qat());
  }
  return out;
}

export async function run(ctx: BenchContext): Promise<Record<string, number>> {
  const steps = ctx.quick ? 2 : 5;
  // software-rendered gpu steps take minutes: one timed step (quick) or two, after the warm-up one
  const gpuSteps = ctx.quick ? 1 : 2;
  const out: Record<string, number> = {};
  const gpu = gpuStatus();
  const backends = q.availableBackends().filter((b) => (b !== 'js' || ctx.quick || q.availableBackends().length === 1) && (b !== 'gpu' || gpu.available));
  const counts: string[] = [];
  for (const backend of backends) {
    q.setBackend(backend);
    const label = backend === 'gpu' ? gpu.label : `qgrad-${backend}`;
    const n = backend === 'gpu' && gpu.software !== false ? gpuSteps : steps;
    counts.push(`${label} ${n}`);
    const t = stepTimes(n);
    out[`${label} fp32`] = ctx.median(t.fp);
    out[`${label} W4g32 A8/token LSQ`] = ctx.median(t.qat);
    out[`${label} QAT − fp32 ms (paired)`] = ctx.median(t.qat.map((v, i) => v - t.fp[i]!));
  }
  q.setBackend('js');
  const t = ctx.torch('llama', String(steps));
  if (t) for (const [k, v] of Object.entries(t)) out[`pytorch ${k}`] = v;
  const rows = Object.entries(out).filter(([k]) => !k.includes('(paired)')).map(([k, v]) => {
    const quant = k.includes('W4');
    const ref = out[quant ? 'pytorch W4g32 A8/token LSQ' : 'pytorch fp32'];
    const fp = out[k.replace(' W4g32 A8/token LSQ', ' fp32')];
    // the ratio moves with the fp32 step; the absolute cost is what quantization adds
    const added = out[k.replace(' W4g32 A8/token LSQ', ' QAT − fp32 ms (paired)')];
    return [k, v, ref ? v / ref : '-', quant && fp ? v / fp : '-', quant && added !== undefined ? added : quant && fp ? v - fp : '-'];
  });
  ctx.table(`tiny Llama training step (batch ${BATCH} × ${SEQ} tokens, fwd+bwd+AdamW; median of ${counts.join(', ')}, pytorch ${steps}; fp32 and QAT steps alternating)`, ['what', 'ms/step', '× pytorch', '× own fp32', 'QAT − own fp32 ms'], rows);
  if (gpu.available) console.log(gpu.note);
  return out;
}
