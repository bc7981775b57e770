/**
 * @file Bench section `lora` (issue 14): one QLoRA training step of the reference tiny Llama (NF4
 * base with double-quantized absmaxes, rank-8 adapters on every Linear of the decoder layers,
 * AdamW on the adapters) against its full float fine-tune step (AdamW on every parameter), batch 16
 * × 128 tokens; and the weight + optimizer-state memory of each (targets: ≤ 0.8× the time, ≤ 0.35×
 * the memory). The 4-bit model's own full fine-tune, W4 g32 LSQ QAT of every decoder Linear with
 * every parameter trained, is the second reference. The models step in turn so that load changes
 * hit all alike. The floor is the float model with every weight frozen but one norm of the first
 * layer: the same forward and the whole backward through the activations, with no weight gradient
 * and no adapter, so no LoRA step of this model can be faster; it says how much of the target the
 * adapters' own work may take. The same four again at 4× the width, batch 8 (not with --quick).
 */
import * as q from '@qgrad/core';
import { AdamW, Llama, modelBytes, optimizerStateBytes, tensorBytes, tinyLlamaConfig, trainStep, type LlamaConfig } from '@qgrad/nn';
import { loraLayers, loraParameters, loraQuant, prepareQAT, QLoraLinear } from '@qgrad/quant';
import { type BenchContext, cpuMs } from './context.js';

const BATCH = 16;
const SEQ = 128;
const RANK = 8;

/** One step's wall-clock and CPU time (this process, every thread) in ms. */
interface Timing { wall: number; cpu: number }
interface Contender { model: Llama; opt: AdamW; trainable: number; step: () => Timing }

/**
 * The tiny Llama widened 4× (dim 512, SwiGLU 1536, 8 heads / 4 KV heads): the frozen weight
 * gradient LoRA skips grows with width², the adapter's extra passes over the activations only with
 * width, so this shows where the time ratio goes as models grow.
 */
const WIDE: LlamaConfig = { ...tinyLlamaConfig, dim: 512, hiddenDim: 1536, nHeads: 8, nKvHeads: 4 };

function contender(kind: 'full' | 'qat' | 'qlora' | 'floor', config: LlamaConfig, batch: number): Contender {
  const g = new q.Generator(0);
  const model = new Llama(config, { generator: g });
  const lora = kind === 'qlora';
  if (lora) loraQuant(model, { method: 'qlora', rank: RANK, alpha: 2 * RANK, targets: 'model.layers.**', generator: g });
  const w4 = { grid: 'int', bits: 4, granularity: { group: 32 }, estimator: 'lsq' } as const;
  if (kind === 'qat') prepareQAT(model, { rules: [{ match: 'model.layers.**', types: ['Linear'], weight: w4 }] });
  // the first layer's norm weight still takes a gradient, so backward runs through every layer
  if (kind === 'floor') for (const [name, p] of model.namedParameters()) p.requiresGrad = name === 'model.layers.0.input_layernorm.weight';
  const params = lora ? loraParameters(model) : model.parameters().filter((p) => p.requiresGrad);
  const opt = new AdamW(params, { lr: 1e-3 });
  const idx = q.randint(0, 256, [batch, SEQ + 1], { generator: g });
  const x = idx.narrow(1, 0, SEQ).contiguous();
  const y = idx.narrow(1, 1, SEQ).contiguous();
  const step = (): Timing => {
    const t = performance.now();
    const cpu = cpuMs(() =>
      trainStep(model, opt, () => {
        const loss = model.loss(x, y);
        opt.zeroGrad();
        loss.backward();
        opt.step();
        return loss.item();
      }),
    );
    return { wall: performance.now() - t, cpu };
  };
  return { model, opt, trainable: params.reduce((a, p) => a + p.numel(), 0), step };
}

/** The three fine-tunes of one config, stepped in turn; figures keyed with `prefix`, and a table. */
function compare(ctx: BenchContext, config: LlamaConfig, batch: number, steps: number, prefix: string, title: string): Record<string, number> {
  const full = contender('full', config, batch);
  const qat = contender('qat', config, batch);
  const lora = contender('qlora', config, batch);
  const floor = contender('floor', config, batch);
  // first steps compile kernels and create the optimizer state
  for (const c of [full, qat, lora, floor]) c.step();
  const t = { full: [] as Timing[], qat: [] as Timing[], lora: [] as Timing[], floor: [] as Timing[] };
  for (let s = 0; s < steps; s++) {
    t.full.push(full.step());
    t.qat.push(qat.step());
    t.lora.push(lora.step());
    t.floor.push(floor.step());
  }
  // QLoRA's weights include what its layers keep beside the codes between steps: each base's
  // decoded float scales (NF4: one per block of 64 weights), cached for the per-step dequantization
  const cacheBytes = (m: Llama) => tensorBytes(loraLayers(m).flatMap(([, l]) => {
    const p = l instanceof QLoraLinear ? l.baseLayer.packedWeight() : null;
    return p ? [p.levels, p.scale, ...(p.zeroPoint ? [p.zeroPoint] : [])] : [];
  }));
  const mem = (c: Contender) => ({ weights: modelBytes(c.model) + cacheBytes(c.model), optimizer: optimizerStateBytes(c.opt) });
  const [mf, mq, ml] = [mem(full), mem(qat), mem(lora)];
  type Who = keyof typeof t;
  // paired: each step against the reference's step of the same round, so load changes cancel
  const ratio = (c: Who, to: Who = 'full', k: keyof Timing = 'wall') => ctx.median(t[c].map((v, i) => v[k] / t[to][i]![k]));
  const ms = (c: Who, k: keyof Timing = 'wall') => ctx.median(t[c].map((v) => v[k]));
  const memRatio = (m: typeof mf, to = mf) => (m.weights + m.optimizer) / (to.weights + to.optimizer);
  const out = {
    [`${prefix}full fine-tune ms/step`]: ms('full'),
    [`${prefix}w4 qat fine-tune ms/step`]: ms('qat'),
    [`${prefix}qlora ms/step`]: ms('lora'),
    [`${prefix}qlora / full time (paired median)`]: ratio('lora'),
    [`${prefix}qlora / w4 qat time (paired median)`]: ratio('lora', 'qat'),
    [`${prefix}floor ms/step`]: ms('floor'),
    [`${prefix}floor / full time (paired median)`]: ratio('floor'),
    [`${prefix}qlora / full CPU time (paired median)`]: ratio('lora', 'full', 'cpu'),
    [`${prefix}qlora / w4 qat CPU time (paired median)`]: ratio('lora', 'qat', 'cpu'),
    [`${prefix}floor / full CPU time (paired median)`]: ratio('floor', 'full', 'cpu'),
    [`${prefix}full weight bytes`]: mf.weights,
    [`${prefix}full optimizer bytes`]: mf.optimizer,
    [`${prefix}w4 qat weight bytes`]: mq.weights,
    [`${prefix}w4 qat optimizer bytes`]: mq.optimizer,
    [`${prefix}qlora weight bytes`]: ml.weights,
    [`${prefix}qlora cached scale bytes (in its weight bytes)`]: cacheBytes(lora.model),
    [`${prefix}qlora optimizer bytes`]: ml.optimizer,
    [`${prefix}qlora / full memory`]: memRatio(ml),
    [`${prefix}qlora / w4 qat memory`]: memRatio(ml, mq),
    [`${prefix}full trainable params`]: full.trainable,
    [`${prefix}qlora trainable params`]: lora.trainable,
  };
  const kib = (b: number) => (b / 1024).toFixed(0);
  // CPU time counts the work itself: on a shared machine a step's wall time also holds the time the
  // process waited for a core (with one wasm thread the two agree on a quiet machine)
  const times = (c: Who, to: Who) => [ratio(c, to).toFixed(3), ratio(c, to, 'cpu').toFixed(3)];
  ctx.table(`${title}: QLoRA (NF4 + double quant, rank ${RANK} on every decoder Linear) vs the full float fine-tune and the full W4 g32 LSQ QAT fine-tune (batch ${batch} × ${SEQ}, fwd+bwd+AdamW; median of ${steps}, in turn; ratios are medians of per-round ratios, of wall and of CPU time)`,
    ['what', 'ms/step', 'CPU ms/step', 'weights KiB', 'optimizer KiB', 'trainable params', '× full time', '× full CPU', '× full memory', '× W4 QAT time', '× W4 QAT CPU'], [
      ['full fine-tune (fp32)', ms('full').toFixed(1), ms('full', 'cpu').toFixed(1), kib(mf.weights), kib(mf.optimizer), full.trainable, 1, 1, 1, '', ''],
      ['full W4 QAT fine-tune', ms('qat').toFixed(1), ms('qat', 'cpu').toFixed(1), kib(mq.weights), kib(mq.optimizer), qat.trainable, ...times('qat', 'full'), memRatio(mq).toFixed(3), 1, 1],
      ['QLoRA', ms('lora').toFixed(1), ms('lora', 'cpu').toFixed(1), kib(ml.weights), kib(ml.optimizer), lora.trainable, ...times('lora', 'full'), memRatio(ml).toFixed(3), ...times('lora', 'qat')],
      ['floor: float, weights frozen, no adapters', ms('floor').toFixed(1), ms('floor', 'cpu').toFixed(1), '', '', floor.trainable, ...times('floor', 'full'), '', ...times('floor', 'qat')],
    ]);
  for (const c of [full, qat, lora, floor]) q.dispose([...c.model.parameters(), ...c.model.buffers(), ...[...c.opt.state.values()].flatMap((s) => Object.values(s))]);
  return out;
}

export async function run(ctx: BenchContext): Promise<Record<string, number>> {
  // 15 rounds of the four steps (about 25 s): the medians of 5 scattered by ±0.02 on a shared
  // machine, more than the changes to the QLoRA step they are read for
  const out = compare(ctx, tinyLlamaConfig, BATCH, ctx.quick ? 2 : 15, '', 'tiny Llama (dim 128) fine-tune step');
  if (ctx.quick) return out;
  // batch 8: three wide models with their activations fit the 2 GiB wasm heap
  return { ...out, ...compare(ctx, WIDE, 8, 3, 'dim 512: ', 'the tiny Llama at 4× width (dim 512, SwiGLU 1536, 8/4 heads) fine-tune step') };
}
