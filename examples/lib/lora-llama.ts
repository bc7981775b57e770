/**
 * @file LoRA fine-tuning of a pretrained tiny Llama, as functions (examples/experiments/lora.ts
 * runs the grid): `pretrainedReference` trains the float reference on Moby-Dick once and keeps it
 * in a Hugging Face directory; `runLoraLlama` fine-tunes a copy on the State of the Union
 * addresses with one of `LORA_CONFIGS` (full float, full QAT, or a LoRA-on-quantized-weights
 * method of @qgrad/quant) through nn's `fit`, then measures the adapter model, its merges, the
 * forgetting on Moby-Dick and the weight + optimizer-state memory.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Generator, noGrad, tidy, type Tensor } from '@qgrad/core';
import {
  AdamW, LambdaLR, Llama, cosineSchedule, fit, modelBytes, optimizerStateBytes, savePretrained, trainStep,
  type ByteDataset, type LlamaConfig,
} from '@qgrad/nn';
import {
  loqtMerge, loqtMergeSteps, loraLayers, loraParameters, loraQuant, merge, prepareQAT,
  type LoraMethod, type WeightQuantConfig,
} from '@qgrad/quant';
import { CliError } from './args.js';
import { qatLlamaModelConfig } from './qat-llama.js';
import { mobyDickWindows, sotuWindows } from './text.js';
import { NONFINITE_HINT, stepGenerator } from './train.js';

/** Every Linear inside the decoder layers; the embedding, norms and lm_head stay float (and frozen under LoRA). */
const LAYERS = 'model.layers.**';
/** The quantization group along the inputs of every integer grid here (NF4 keeps its own block of 64). */
const GROUP = 32;

export interface LoraRunConfig {
  name: string;
  /** Table group and plot colour. */
  group: string;
  /** What it is, for tables. */
  about: string;
  /** Peak learning rate (cosine schedule). */
  lr: number;
  /** 'full': every parameter in float; 'qat': prepareQAT's W4 LSQ, every parameter; otherwise the LoRA method. */
  method: 'full' | 'qat' | LoraMethod;
  /** The LoRA base quantizer or the QAT weight quantizer (none: the method's default). */
  quant?: WeightQuantConfig;
  /** α as a function of the rank (default 2r, so α/r = 2). */
  alpha?: (rank: number) => number;
}

const int = (bits: number, extra: Partial<WeightQuantConfig> = {}): WeightQuantConfig => ({ grid: 'int', bits, granularity: { group: GROUP }, ...extra });

export const LORA_CONFIGS: LoraRunConfig[] = [
  // a tenth of the pretraining peak: the float model is already good, a larger step forgets more
  { name: 'full', group: 'float', method: 'full', lr: 3e-4, about: 'float fine-tune of every parameter' },
  { name: 'qat-w4', group: 'full QAT', method: 'qat', lr: 3e-4, quant: int(4, { estimator: 'lsq' }), about: 'prepareQAT W4 g32 LSQ on the decoder Linears, every parameter (and step) trained' },
  // adapters start at B = 0 and have few parameters: LoRA's usual 1e-3 – 2e-3 at this scale
  { name: 'qlora', group: 'LoRA 4-bit', method: 'qlora', lr: 2e-3, about: 'NF4 base (block 64, double-quantized absmax), frozen; float adapters' },
  { name: 'qa-lora', group: 'LoRA 4-bit', method: 'qa-lora', lr: 2e-3, quant: int(4, { asymmetric: true }), about: 'int4 asymmetric g32 base, frozen; adapter on the group means, merged into the zero points' },
  // these two also train the quantizer steps with the adapters: a lower rate keeps the steps stable
  { name: 'l4q', group: 'LoRA 4-bit', method: 'l4q', lr: 1e-3, quant: int(4, { scale: 'learned' }), about: 'LSQ (int4 g32) on W0 + BA, steps and adapters trained; W0 float' },
  { name: 'lr-qat', group: 'LoRA 4-bit', method: 'lr-qat', lr: 1e-3, quant: int(4), about: 'int4 g32: s·clamp(round(Φ0 + BA)), Φ0 int8 fixed point, s learned' },
  // LoQT scales B·P by α itself (not α/r); α 0.5 as LoQT's scripts, and a larger rate for the smaller update it gives
  { name: 'loqt', group: 'LoRA 4-bit', method: 'loqt', lr: 5e-3, alpha: () => 0.5, about: 'NF4 base; P fixed (gradient SVD), B trained, merged into the base after 100, 120, 144, … steps (×1.2 gaps)' },
  { name: 'qa-lora-3bit', group: 'LoRA 3-bit', method: 'qa-lora', lr: 2e-3, quant: int(3, { asymmetric: true }), about: 'as qa-lora on an int3 asymmetric g32 base' },
  { name: 'lr-qat-3bit', group: 'LoRA 3-bit', method: 'lr-qat', lr: 1e-3, quant: int(3), about: 'as lr-qat on int3 g32' },
];

/** The LoRA rank a config gets: QA-LoRA's adapter sees in/32 group means, so its rank stays below the smallest in/32. */
export function effectiveRank(c: LoraRunConfig, rank: number, model: LlamaConfig): number {
  return c.method === 'qa-lora' ? Math.min(rank, Math.floor(model.dim / GROUP) - 1) : rank;
}

/** Validation bits per byte of `model` over `blocks` windows spread evenly over `data` (eval mode, no gradient). */
export function bitsPerByte(model: Llama, data: ByteDataset, blocks: number): number {
  const n = Math.min(blocks, data.length);
  const idx = Array.from({ length: n }, (_, i) => Math.floor((i * (data.length - 1)) / Math.max(1, n - 1)));
  const was = model.training;
  model.eval();
  let nats = 0;
  // a tidy per chunk: a synchronous loop gives the garbage collector no chance to free activations
  for (let s = 0; s < n; s += 16) {
    const chunk = idx.slice(s, s + 16);
    nats += tidy(() => noGrad(() => {
      const [x, y] = data.getBatch(chunk);
      return model.loss(x, y).item() * chunk.length;
    }));
  }
  model.train(was);
  return nats / n / Math.LN2;
}

/** Cosine with a short warmup (10 %, at most 20 steps) down to a tenth: the schedule of every run here. */
const schedule = (steps: number) => cosineSchedule({ warmupSteps: Math.max(1, Math.min(20, Math.floor(steps / 10))), totalSteps: steps, minLrRatio: 0.1 });

/** The data batch of step `i` (a pure function of seed and step, so runs with the same seed see the same text). */
const batchOf = (data: ByteDataset, seed: number, batchSize: number) => (i: number): [Tensor, Tensor] => {
  const g = stepGenerator(seed, i, 2);
  return data.getBatch(Array.from({ length: batchSize }, () => g.randint(0, data.length)));
};

export interface PretrainOptions {
  /** Where the reference lives: config.json + model.safetensors + pretrain.json, and train/ (metrics, checkpoint). */
  dir: string;
  steps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  valBlocks: number;
  /** Seed of the initial weights and of the batch order (default 0). */
  seed?: number;
  /** Model size (default the tiny reference Llama). */
  dim?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  progress?: boolean;
  log?: (s: string) => void;
}

/** What pretrain.json records: how the reference was trained, and its bits per byte before any fine-tuning. */
export interface PretrainInfo {
  steps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  /** Absent in references saved before seeds were an option: those are seed 0. */
  seed?: number;
  config: LlamaConfig;
  /** Moby-Dick validation bits per byte. */
  mobyBpb: number;
  /** State of the Union validation bits per byte (zero-shot: the text the fine-tunes learn). */
  sotuBpb: number;
  msPerStep: number;
}

/**
 * The float reference on Moby-Dick: read from `dir` when pretrain.json is there (a CliError when it
 * was trained with other settings), else trained (resuming train/'s checkpoint after an
 * interruption) and saved with savePretrained, pretrain.json last so that it marks a complete one.
 */
export async function pretrainedReference(o: PretrainOptions): Promise<PretrainInfo> {
  const config = qatLlamaModelConfig(o);
  const seed = o.seed ?? 0;
  const want = { steps: o.steps, batchSize: o.batchSize, seqLen: o.seqLen, lr: o.lr, seed, config };
  const infoPath = join(o.dir, 'pretrain.json');
  if (existsSync(infoPath)) {
    const saved = JSON.parse(readFileSync(infoPath, 'utf8')) as PretrainInfo;
    const info = { ...saved, seed: saved.seed ?? 0 };
    const differ = (Object.keys(want) as (keyof typeof want)[]).filter((k) => JSON.stringify(info[k]) !== JSON.stringify(want[k]));
    if (differ.length) {
      const show = (v: unknown) => (typeof v === 'object' ? JSON.stringify(v) : String(v));
      throw new CliError(`${o.dir} holds a reference pretrained with other settings (${differ.map((k) => `${k} ${show(info[k])}, asked ${show(want[k])}`).join('; ')}): pass the same flags, another --run-dir, or delete ${o.dir}`);
    }
    return info;
  }
  const log = o.log ?? (() => {});
  const moby = mobyDickWindows(o.seqLen, o.batchSize);
  const sotu = sotuWindows(o.seqLen, 1);
  const model = new Llama(config, { generator: new Generator(seed) });
  const batch = batchOf(moby.train, seed, o.batchSize);
  // weight decay on matrices only (nanoGPT), as the QAT Llama runs
  const params = model.parameters();
  const optimizer = new AdamW([{ params: params.filter((p) => p.ndim >= 2), weightDecay: 0.1 }, { params: params.filter((p) => p.ndim < 2), weightDecay: 0 }], { lr: o.lr, betas: [0.9, 0.95] });
  const scheduler = new LambdaLR(optimizer, schedule(o.steps));
  const result = await fit({
    name: `pretrain (float, Moby-Dick, seed ${seed})`, model, optimizer, scheduler, steps: o.steps, seed, dir: join(o.dir, 'train'), resume: true,
    ckptEvery: Math.min(100, o.steps), evalEvery: o.steps, evalAtStart: false, progress: o.progress ?? true, log, nonFiniteHint: `${NONFINITE_HINT} (pretraining: --pretrain-lr)`,
    evaluate: () => ({ val_bpb: bitsPerByte(model, moby.val, o.valBlocks) }),
    config: { steps: o.steps, batchSize: o.batchSize, lr: o.lr, seed, ...config },
    panels: { 'loss (nats/byte)': ['loss'], 'bits per byte': ['bpb', 'val_bpb'], 'learning rate': ['lr'] },
    step: ({ index }) => {
      const [x, y] = batch(index); // [B, T] each
      const loss = trainStep(model, optimizer, () => {
        const l = model.loss(x, y);
        optimizer.zeroGrad();
        l.backward();
        optimizer.step();
        return l.item();
      });
      scheduler.step();
      return { loss, bpb: loss / Math.LN2, lr: scheduler.getLastLr()[0]! };
    },
  });
  savePretrained(model, o.dir);
  const info: PretrainInfo = { ...want, mobyBpb: result.lastEval.val_bpb ?? bitsPerByte(model, moby.val, o.valBlocks), sotuBpb: bitsPerByte(model, sotu.val, o.valBlocks), msPerStep: result.msPerStep };
  writeFileSync(infoPath, `${JSON.stringify(info, null, 1)}\n`);
  return info;
}

/** The pretrained reference from `dir`, checked against the configuration it was saved with. */
function loadReference(dir: string, config: LlamaConfig): Llama {
  const model = Llama.fromPretrained(dir);
  const differ = (Object.keys(config) as (keyof LlamaConfig)[]).filter((k) => JSON.stringify(model.config[k]) !== JSON.stringify(config[k]));
  if (differ.length) throw new Error(`lora-llama: ${dir}/config.json differs from pretrain.json in ${differ.join(', ')}; delete ${dir} to pretrain again`);
  return model;
}

export interface LoraLlamaOptions {
  config: string;
  seed: number;
  steps: number;
  batchSize: number;
  rank: number;
  valBlocks: number;
  /** The pretrained reference's directory and record (from pretrainedReference). */
  pretrained: { dir: string; info: PretrainInfo };
  /** Run directory: metrics.jsonl, checkpoint.safetensors and curves.svg (none: no files). */
  dir?: string;
  allowNonfinite?: boolean;
  progress?: boolean;
  log?: (s: string) => void;
}

export interface LoraLlamaResult {
  config: string;
  seed: number;
  steps: number;
  rank: number;
  lr: number;
  /** State of the Union validation bits per byte of the fine-tuned model (LoRA: with its adapters). */
  valBpb: number;
  /** Moby-Dick validation bits per byte of the same model (forgetting). */
  mobyBpb: number;
  /** LoRA: SOTU bits per byte after merge(model) (float for qlora/loqt, on the grid for the others). */
  mergedBpb: number | null;
  /** qlora/loqt: SOTU bits per byte after merge(model, { requantize: true }), back on NF4. */
  requantizedBpb: number | null;
  /** qlora/loqt: mean over layers of the requantized weight's SQNR (dB) against the exact merge. */
  requantizeSqnrDb: number | null;
  trainBpb: number;
  trainable: number;
  weightBytes: number;
  optimizerBytes: number;
  msPerStep: number;
}

/** Turns the reference into config `c`'s trainable model (in place); returns the parameters the optimizer trains. */
function prepare(model: Llama, c: LoraRunConfig, rank: number, seed: number): Tensor[] {
  if (c.method === 'full') return model.parameters();
  if (c.method === 'qat') {
    prepareQAT(model, { rules: [{ match: LAYERS, types: ['Linear'], weight: c.quant! }] });
    return model.parameters();
  }
  loraQuant(model, { method: c.method, rank, alpha: (c.alpha ?? ((r) => 2 * r))(rank), targets: LAYERS, ...(c.quant && { quant: c.quant }), generator: new Generator(seed) });
  return loraParameters(model);
}

/** One fine-tuning run from the pretrained reference; measures it, then its merges (LoRA). */
export async function runLoraLlama(o: LoraLlamaOptions): Promise<LoraLlamaResult> {
  const c = LORA_CONFIGS.find((k) => k.name === o.config);
  if (!c) throw new Error(`lora-llama: unknown config '${o.config}'; known: ${LORA_CONFIGS.map((k) => k.name).join(', ')}`);
  const log = o.log ?? (() => {});
  const { info } = o.pretrained;
  const sotu = sotuWindows(info.seqLen, o.batchSize);
  const moby = mobyDickWindows(info.seqLen, 1);
  const rank = effectiveRank(c, o.rank, info.config);
  const fresh = () => {
    const m = loadReference(o.pretrained.dir, info.config);
    return { model: m, params: prepare(m, c, rank, o.seed) };
  };
  const { model, params } = fresh();
  const optimizer = new AdamW(params, { lr: c.lr, betas: [0.9, 0.95], weightDecay: 0 });
  const scheduler = new LambdaLR(optimizer, schedule(o.steps));
  const batch = batchOf(sotu.train, o.seed, o.batchSize);
  const loqtAt = new Set(c.method === 'loqt' ? loqtMergeSteps(o.steps) : []);
  const result = await fit({
    name: `${c.name} seed ${o.seed}`, model, optimizer, scheduler, steps: o.steps, seed: o.seed,
    ...(o.dir !== undefined && { dir: o.dir }), ckptEvery: o.steps, evalEvery: o.steps, evalAtStart: false, progress: o.progress ?? true, log,
    allowNonfinite: o.allowNonfinite ?? false, nonFiniteHint: `${NONFINITE_HINT} (${c.name}, seed ${o.seed})`,
    evaluate: () => ({ val_bpb: bitsPerByte(model, sotu.val, o.valBlocks), moby_bpb: bitsPerByte(model, moby.val, o.valBlocks) }),
    config: { config: c.name, seed: o.seed, steps: o.steps, batchSize: o.batchSize, rank, lr: c.lr, pretrainSteps: info.steps },
    panels: { 'loss (nats/byte)': ['loss'], 'bits per byte': ['bpb', 'val_bpb', 'moby_bpb'], 'learning rate': ['lr'] },
    step: ({ index }) => {
      const [x, y] = batch(index); // [B, T] each
      if (loqtAt.has(index)) {
        const res = Object.values(loqtMerge(model, { loss: () => model.loss(x, y), compensate: 5 }));
        // B was reset and P replaced: moments gathered in the old basis would push the new B the wrong way
        for (const p of params) optimizer.state.delete(p);
        log(`step ${index}: LoQT merge, mean residual ${(res.reduce((a, r) => a + r.residual, 0) / res.length).toExponential(2)}`);
      }
      const loss = trainStep(model, optimizer, () => {
        const l = model.loss(x, y);
        optimizer.zeroGrad();
        l.backward();
        optimizer.step();
        return l.item();
      });
      scheduler.step();
      return { loss, bpb: loss / Math.LN2, lr: scheduler.getLastLr()[0]! };
    },
  });
  const memory = { weightBytes: modelBytes(model), optimizerBytes: optimizerStateBytes(optimizer) };
  const tailN = Math.max(1, Math.floor(o.steps / 10));
  const tail = result.records.filter((r) => typeof r.bpb === 'number' && r.step > o.steps - tailN).map((r) => r.bpb as number);
  const out: LoraLlamaResult = {
    config: c.name, seed: o.seed, steps: result.endStep, rank, lr: c.lr,
    valBpb: result.lastEval.val_bpb ?? Number.NaN, mobyBpb: result.lastEval.moby_bpb ?? Number.NaN,
    mergedBpb: null, requantizedBpb: null, requantizeSqnrDb: null,
    trainBpb: tail.reduce((a, b) => a + b, 0) / tail.length, trainable: params.reduce((a, p) => a + p.numel(), 0), ...memory, msPerStep: result.msPerStep,
  };
  if (c.method === 'full' || c.method === 'qat') return out;
  if (c.method === 'qlora' || c.method === 'loqt') {
    // merge works in place, so the requantized merge gets a copy: the reference with the same adapters, given the trained state
    const copy = fresh().model;
    copy.loadStateDict(model.stateDict());
    if (loraLayers(copy).length !== loraLayers(model).length) throw new Error('lora-llama: the copy for the requantized merge has other LoRA layers');
    const { layers } = merge(copy, { requantize: true });
    out.requantizedBpb = bitsPerByte(copy, sotu.val, o.valBlocks);
    out.requantizeSqnrDb = layers.reduce((a, l) => a + (l.sqnrDb ?? Number.NaN), 0) / layers.length;
  }
  merge(model);
  out.mergedBpb = bitsPerByte(model, sotu.val, o.valBlocks);
  return out;
}
