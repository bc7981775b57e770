/**
 * @file QAT of the tiny byte-level Llama on Moby-Dick, as a function (examples/qat-llama.ts is
 * its command line, examples/experiments/llama.ts runs a grid of it): the named configurations
 * (FP; W4A4/W2A4 with STE, QuEST Hadamard+trust, or LSQ; ternary with STE or HESTIA; FP→QAT
 * switches and QAT fused with the cooldown; HALO int8/fp8 training; 2:4 sparsity by CAST or
 * magnitude, alone or with W4), one training run through nn's `fit` (progress bar, metrics.jsonl,
 * checkpoints, exact resume, curves.svg), validation bits per byte.
 */
import { Generator, crossEntropy, dispose, loadSafetensorsWithMetadata, noGrad, type Tensor } from '@qgrad/core';
import { AdamW, AuON, LambdaLR, Llama, Muon, cosineSchedule, fit, tinyLlamaConfig, trainStep, type Callback, type LlamaConfig, type LrLambda } from '@qgrad/nn';
import {
  HestiaScheduler, QATPhase, calibrateHestia, distill, nmMask, prepareHadamardQAT, prepareHalo, prepareQAT, questConfig, sparsify, tiSchedule, wsdSchedule,
  type ActQuantConfig, type Distiller, type SemiStructuredMask, type HaloFormat, type Sparsifier, type SparsityMethod, type WeightQuantConfig,
} from '@qgrad/quant';
import { CliError } from './args.js';
import { mobyDickWindows } from './text.js';
import { NONFINITE_HINT, stepGenerator } from './train.js';

/** Every Linear inside the decoder layers; the embedding and lm_head stay in float (first/last layer). */
const LAYERS = 'model.layers.**';

export interface QatLlamaConfig {
  name: string;
  /** What it is, for tables. */
  about: string;
  /** 'plain': cosine LR, quantized throughout; 'split': WSD per phase, FP then QAT at `switchAt`; 'fused': one WSD, QAT during its cooldown. */
  schedule: 'plain' | 'split' | 'fused';
  switchAt?: number;
  /** Installs the quantizers (none for FP). */
  prepare?: (m: Llama) => void;
  hestia?: boolean;
  /**
   * 2:4 sparsity on the decoder Linears, installed after `prepare` (so a quantized layer masks
   * before it quantizes). CAST's decay ramps over the first half of the run (its default 1000-step
   * ramp would never finish in a 200-step run), and the masks harden before the final evaluation.
   */
  sparsity?: { method: SparsityMethod; decay?: number };
}

/** The optimizers a run can train with (docs/experiments/optimizers.md compares them on `fp`). */
export const LLAMA_OPTIMIZERS = ['adamw', 'muon', 'auon'] as const;
export type LlamaOptimizer = (typeof LLAMA_OPTIMIZERS)[number];

const g32 = { group: 32 } as const;
const lsqW = (bits: number): WeightQuantConfig => ({ grid: 'int', bits, granularity: g32, estimator: 'lsq' });
const lsqA4: ActQuantConfig = { bits: 4, signed: true }; // learned per-tensor LSQ step
const tokenA8: ActQuantConfig = { bits: 8, signed: true, granularity: 'token' }; // dynamic absmax per token, STE
/** The W4 g32 LSQ + A8 per-token setting of the compute-split runs. */
const speed = (m: Llama) => void prepareQAT(m, { rules: [{ match: LAYERS, types: ['Linear'], weight: lsqW(4), input: tokenA8 }] });
/** w4-int4's weight quantizer (int4 g32, learned LSQ step; A float), under the 2:4 masks of the sparse configs. */
const int4g32 = (m: Llama) => void prepareQAT(m, { rules: [{ match: LAYERS, types: ['Linear'], weight: { grid: 'int', bits: 4, granularity: g32 } }] });
const rms = (wBits: number, rotate: boolean, estimator: string) => (m: Llama) =>
  void prepareHadamardQAT(m, { weight: { ...questConfig(wBits, { estimator }), granularity: g32 }, input: questConfig(4, { estimator }), rotate }, { match: LAYERS });

export const QAT_LLAMA_CONFIGS: QatLlamaConfig[] = [
  { name: 'fp', about: 'float32', schedule: 'plain' },
  ...[4, 2].flatMap((b): QatLlamaConfig[] => [
    { name: `w${b}a4-ste`, about: `W${b} g32 / A4 per-token, RMS-optimal centred grid, identity STE`, schedule: 'plain', prepare: rms(b, false, 'ste') },
    { name: `w${b}a4-quest`, about: `as ste + Hadamard(128) rotation of W and x + trust estimator (QuEST)`, schedule: 'plain', prepare: rms(b, true, 'trust') },
    { name: `w${b}a4-lsq`, about: `W${b} g32 LSQ (learned steps) / A4 per-tensor LSQ`, schedule: 'plain', prepare: (m) => void prepareQAT(m, { rules: [{ match: LAYERS, types: ['Linear'], weight: lsqW(b), input: lsqA4 }] }) },
  ]),
  {
    name: 'ternary-ste', about: 'BitNet b1.58: W ∈ {−γ,0,γ}, γ = mean|W| per tensor, STE; A float', schedule: 'plain',
    prepare: (m) => void prepareQAT(m, { rules: [{ match: LAYERS, types: ['Linear'], weight: { grid: 'ternary', granularity: 'tensor', scale: 'absmean' } }] }),
  },
  {
    name: 'ternary-hestia', about: 'HESTIA: soft ternary, P ramp 0.2, T₀ 0.351 cosine-annealed over the last 80 %, Hutchinson temp scales; A float', schedule: 'plain', hestia: true,
    prepare: (m) => void prepareQAT(m, { rules: [{ match: LAYERS, types: ['Linear'], weight: { grid: 'ternary', granularity: 'tensor', soft: {} } }] }),
  },
  // the grid family of docs/experiments/grids.md: weights only, 4 bits, one scale per 32 inputs,
  // each grid with prepareQAT's defaults (int: learned LSQ step; FP/NF4: dynamic absmax, STE; MX: E8M0)
  ...([['int4', { grid: 'int', bits: 4, granularity: g32 }, 'int4 g32, learned LSQ step'], ['e2m1', { grid: 'e2m1', granularity: g32 }, 'FP4 E2M1 g32, absmax, STE'],
    ['mxfp4', { grid: 'mxfp4' }, 'MXFP4: E2M1 with an E8M0 scale per 32, STE'], ['nf4', { grid: 'nf4', granularity: g32 }, 'NF4 g32, absmax, STE']] as const).map(([n, weight, about]): QatLlamaConfig => ({
    name: `w4-${n}`, about: `${about}; A float`, schedule: 'plain',
    prepare: (m) => void prepareQAT(m, { rules: [{ match: LAYERS, types: ['Linear'], weight: { ...weight } }] }),
  })),
  ...[0, 0.5, 0.8].map((s): QatLlamaConfig => ({ name: `split-${s}`, about: `FP for ${s * 100} % of steps (own WSD), then W4 g32 LSQ / A8 per-token QAT (own WSD)`, schedule: 'split', switchAt: s, prepare: speed })),
  // the split family's float reference: same WSD schedule, QAT never switched on (evaluated in float)
  { name: 'split-1', about: 'FP only, one WSD (the float reference of the split family; fp uses cosine)', schedule: 'split', switchAt: 1, prepare: speed },
  { name: 'fused', about: 'one WSD (20 % cooldown); W4 g32 LSQ / A8 per-token QAT switched on at the cooldown (last 20 %)', schedule: 'fused', switchAt: 0.8, prepare: speed },
  // weight-only W2, the student of docs/experiments/distill.md
  { name: 'w2-lsq', about: 'W2 g32 LSQ (learned steps); A float', schedule: 'plain', prepare: (m) => void prepareQAT(m, { rules: [{ match: LAYERS, types: ['Linear'], weight: lsqW(2) }] }) },
  // HALO (docs/experiments/halo.md): the decoder Linears' three matmuls in low precision after Hadamard rotations
  ...(['int8', 'fp8'] as HaloFormat[]).map((format): QatLlamaConfig => ({
    name: `halo-${format}`, about: `HALO: forward and both backward matmuls of the decoder Linears in ${format === 'int8' ? 'int8 (int32 accumulation)' : 'FP8 E4M3 (emulated, float32 accumulation)'} after block-Hadamard rotations; per-token/channel absmax`, schedule: 'plain',
    prepare: (m) => void prepareHalo(m, { format }, { match: LAYERS }),
  })),
  // 2:4 sparsity (docs/experiments/cast.md), float and with w4-int4's weight quantizer
  ...([['cast', 'CAST (dense scaled forward, ramped proximal decay of the pruned half, learned row gains)'], ['magnitude', 'magnitude (top-2 |w| of 4 each forward, straight-through)']] as const).flatMap(([method, how]): QatLlamaConfig[] => [
    { name: `${method === 'cast' ? 'cast' : 'mag'}24`, about: `2:4 ${how}; float`, schedule: 'plain', sparsity: { method } },
    {
      name: `${method === 'cast' ? 'cast' : 'mag'}24-w4`, about: `2:4 ${how}, then int4 g32 learned LSQ step as w4-int4; A float`, schedule: 'plain', sparsity: { method },
      prepare: int4g32,
    },
  ]),
  // CAST's decay is in units of mean|w| per unit LR, sized for SGD-like steps: under AdamW (steps ≈ lr each) the
  // default λ = 2 left 28 % of the weight norm outside the mask after 200 steps (cast.md); 10× stronger
  {
    name: 'cast24-w4-d20', about: '2:4 CAST as cast24-w4 with decay λ = 20 (10× the default); int4 g32 learned LSQ step; A float', schedule: 'plain', sparsity: { method: 'cast', decay: 20 },
    prepare: int4g32,
  },
];

export interface QatLlamaOptions {
  config: string;
  seed: number;
  steps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  /**
   * 'adamw' (default): AdamW (β 0.9/0.95, wd 0.1 on matrices) at `lr` for everything. 'muon' / 'auon':
   * that optimizer at `lr` for the 2-D weights of the decoder layers (no weight decay, the references'
   * default) and its auxiliary AdamW at `adamLr` for the embedding, the head (wd 0.1) and the norms,
   * as in Muon's reference setup. The LR schedule scales both rates.
   */
  optimizer?: LlamaOptimizer;
  /** LR of the auxiliary AdamW under 'muon' / 'auon' (default 3e-3, the AdamW default of the experiment runners). */
  adamLr?: number;
  /** Model size (default tinyLlamaConfig's: 128 wide, 4 layers, 4 heads, 2 KV heads; SwiGLU 3 × dim). */
  dim?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  valBlocks: number;
  /** Run directory: metrics.jsonl, checkpoint.safetensors and curves.svg (none: no files, no resume). */
  dir?: string;
  /**
   * Start from the float weights of this training checkpoint (its `model.*` tensors, e.g. an `fp`
   * run's checkpoint.safetensors) instead of a fresh initialisation: QAT fine-tuning of a pretrained
   * model. The quantizers are installed after the weights load, so their scales initialise from them.
   */
  init?: string;
  /**
   * Distil from the float model the run starts from (`init`'s weights, taken before the quantizers
   * go in) into the QAT student: (1 − α)·CE + α·τ²·KL on the logits, + Σ MSE of the decoder-layer
   * outputs (`hidden` weight, TernaryBERT's rep loss), and with `tiSteps` > 0 TI-G (Teacher
   * Intervention O→C→M on every self_attn, with its score loss) over the first tiSteps steps.
   */
  distill?: { temperature?: number; alpha?: number; hidden?: number; tiSteps?: number };
  /** HESTIA: calibrate the per-tensor temperature scales by Hutchinson traces (default true; false: every scale 1). */
  hestiaCalibrate?: boolean;
  /** Continue from `dir`'s checkpoint (model, optimizer, scheduler, HESTIA calibration; batches are step-seeded). */
  resume?: boolean;
  /** Checkpoint every N steps (default: at the end only). */
  ckptEvery?: number;
  /** Stop after this step with a checkpoint, as if interrupted (0: run to the end). */
  stopAt?: number;
  /** Keep training through a NaN or infinite loss (default: throw NonFiniteLossError, metrics written up to that step). */
  allowNonfinite?: boolean;
  /** The progress bar (default on). */
  progress?: boolean;
  log?: (s: string) => void;
}

export interface QatLlamaResult {
  config: string;
  seed: number;
  valBpb: number;
  trainBpb: number;
  msPerStep: number;
  /** Milliseconds inside `optimizer.step()` per step (the update alone, no forward/backward). */
  optMsPerStep: number;
  params: number;
  steps: number;
  /** Process CPU time per training step (all threads; evaluation excluded): the timing to compare on a shared machine. */
  cpuMsPerStep: number;
  /**
   * Sparse configs: the share of the masked weights that are exactly zero after hardening; CAST
   * also the val bits/byte of its dense forward (g ⊙ W) just before, and the share of that
   * weight's L2 norm the hardening removed (what its decay failed to move to zero).
   */
  sparsity?: { zeroFraction: number; denseValBpb?: number; prunedNormPct?: number };
}

/** Per-step LR multiplier: cosine (plain), a WSD per phase (split), one WSD (fused). */
function lrLambda(c: QatLlamaConfig, steps: number, start: number): LrLambda {
  const warm = (n: number) => Math.max(1, Math.min(20, Math.floor(n / 10)));
  if (c.schedule === 'plain') return cosineSchedule({ warmupSteps: warm(steps), totalSteps: steps, minLrRatio: 0.1 });
  const wsd = (n: number) => wsdSchedule({ lr: 1, totalSteps: n, warmupSteps: warm(n), cooldownFraction: 0.2, minLr: 0.1 });
  if (c.schedule === 'fused') return wsd(steps);
  const fp = start > 0 ? wsd(start) : null;
  const qat = wsd(steps - start);
  return (i) => (i < start ? fp!(i) : qat(i - start));
}

/** The model configuration of a run: tinyLlamaConfig resized by the options (SwiGLU width 3 × dim, as the tiny model's 384 for 128). */
export function qatLlamaModelConfig(o: Pick<QatLlamaOptions, 'seqLen' | 'dim' | 'layers' | 'heads' | 'kvHeads'>): LlamaConfig {
  const dim = o.dim ?? tinyLlamaConfig.dim;
  return {
    ...tinyLlamaConfig, maxSeqLen: o.seqLen, dim, hiddenDim: dim === tinyLlamaConfig.dim ? tinyLlamaConfig.hiddenDim : 3 * dim,
    nLayers: o.layers ?? tinyLlamaConfig.nLayers, nHeads: o.heads ?? tinyLlamaConfig.nHeads, nKvHeads: o.kvHeads ?? tinyLlamaConfig.nKvHeads,
  };
}

/** Loads the `model.*` tensors of a training checkpoint into `model` (shapes must match: loadStateDict says which do not). */
function loadModelWeights(model: Llama, path: string, { tensors } = loadSafetensorsWithMetadata(path)): void {
  const sd: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(tensors)) if (k.startsWith('model.')) sd[k.slice('model.'.length)] = t;
  if (!Object.keys(sd).length) throw new Error(`qat-llama: --init ${path} holds no model.* tensors (not a training checkpoint?)`);
  // loadStateDict copies into the model's own tensors; the optimizer moments are not wanted (a fine-tune starts its own)
  try {
    model.loadStateDict(sd);
  } finally {
    dispose(Object.values(tensors));
  }
}

/**
 * The model of a runQatLlama training checkpoint (e.g. an `fp` run's checkpoint.safetensors): its
 * configuration from the checkpoint's metadata, its `model.*` weights; float, no quantizers.
 * @example const m = llamaFromCheckpoint('runs/experiments/llama-1k/fp/seed0/checkpoint.safetensors');
 */
export function llamaFromCheckpoint(path: string): Llama {
  const loaded = loadSafetensorsWithMetadata(path);
  const saved = JSON.parse(loaded.metadata.config ?? '{}') as Partial<LlamaConfig>;
  const missing = (Object.keys(tinyLlamaConfig) as (keyof LlamaConfig)[]).filter((k) => saved[k] === undefined);
  if (missing.length) {
    dispose(Object.values(loaded.tensors));
    throw new Error(`qat-llama: ${path}'s metadata has no model ${missing.join(', ')} (not a runQatLlama checkpoint?)`);
  }
  const config = Object.fromEntries(Object.keys(tinyLlamaConfig).map((k) => [k, saved[k as keyof LlamaConfig]])) as unknown as LlamaConfig;
  const model = new Llama(config);
  loadModelWeights(model, path, loaded);
  return model;
}

/** Next-token cross entropy of logits [B, T, V] against targets [B, T] (what Llama.loss computes from its own logits). */
const lmLoss = (logits: Tensor, y: Tensor) => {
  const [b, t, v] = logits.shape as [number, number, number];
  return crossEntropy(logits.view(b * t, v), y.reshape(b * t));
};

/** A frozen float copy of `model` (built before the quantizers go in) as the teacher of a `distill`. */
function distillFromFloat(model: Llama, config: LlamaConfig, c: QatLlamaConfig, o: QatLlamaOptions, d: NonNullable<QatLlamaOptions['distill']>): { kd: Distiller; teacher: Llama } {
  // without a pretrained start the teacher is the student's own random initialisation: nothing to learn from it
  if (!o.init) throw new CliError('--distill needs --init <float checkpoint>: the teacher is the float model the fine-tune starts from');
  if (!c.prepare || c.schedule !== 'plain') throw new Error(`qat-llama: distillation needs a quantized student trained throughout (a 'plain' config other than fp); '${c.name}' is not one`);
  const teacher = new Llama(config);
  teacher.loadStateDict(model.stateDict());
  const alpha = d.alpha ?? 0.5;
  const kd = distill(model, teacher, {
    temperature: d.temperature ?? 1, alpha,
    ...(d.hidden && { features: [{ match: 'model.layers.*', weight: d.hidden }] }),
    ...(d.tiSteps && { intervene: { match: 'model.layers.*.self_attn', schedule: tiSchedule('gradual', d.tiSteps) } }),
  });
  return { kd, teacher };
}

/** % of the L2 norm of CAST's effective weights g ⊙ W that lies outside their 2:4 top-2 (what hardening zeroes). */
function castPrunedNormPct(sp: Sparsifier): number {
  let pruned = 0;
  let total = 0;
  for (const l of sp.layers.values()) {
    const m = l.weightMask as SemiStructuredMask;
    const w = noGrad(() => m.maskWeight(l.weight).contiguous().dataSync());
    const keep = nmMask(w, m.weightShape[1]!);
    for (let i = 0; i < w.length; i++) {
      total += w[i]! ** 2;
      if (!keep[i]) pruned += w[i]! ** 2;
    }
  }
  return total > 0 ? 100 * Math.sqrt(pruned / total) : 0;
}

/** One run (or its resumption from `dir`): trains and returns the validation bits per byte at the end. */
export async function runQatLlama(o: QatLlamaOptions): Promise<QatLlamaResult> {
  const c = QAT_LLAMA_CONFIGS.find((k) => k.name === o.config);
  if (!c) throw new Error(`qat-llama: unknown config '${o.config}'; known: ${QAT_LLAMA_CONFIGS.map((k) => k.name).join(', ')}`);
  const log = o.log ?? (() => {});
  const config = qatLlamaModelConfig(o);
  const { train, val } = mobyDickWindows(o.seqLen, o.batchSize);
  const model = new Llama(config, { generator: new Generator(o.seed) });
  if (o.init) loadModelWeights(model, o.init);
  const { kd, teacher } = o.distill ? distillFromFloat(model, config, c, o, o.distill) : { kd: null, teacher: null };
  c.prepare?.(model);
  const sparse = c.sparsity ? sparsify(model, { pattern: '2:4', method: c.sparsity.method, targets: LAYERS, cast: { rampSteps: Math.ceil(o.steps / 2), ...(c.sparsity.decay !== undefined && { decay: c.sparsity.decay }) } }) : null;
  const batch = (i: number) => {
    const g = stepGenerator(o.seed, i, 2);
    return train.getBatch(Array.from({ length: o.batchSize }, () => g.randint(0, train.length)));
  };
  // weight decay on matrices only; quantizer steps and norms without (nanoGPT / qat-mnist)
  const named = [...model.namedParameters()];
  const decay = named.filter(([n, p]) => p.ndim >= 2 && !/Quantizer\./.test(n)).map(([, p]) => p);
  const rest = named.filter(([n, p]) => !(p.ndim >= 2 && !/Quantizer\./.test(n))).map(([, p]) => p);
  const kind = o.optimizer ?? 'adamw';
  // Muon's reference gives the orthogonalised update only to hidden matrices: the embedding and
  // head are lookups/readouts whose rows are not a linear map of the residual stream
  const hidden = (n: string, p: { ndim: number }) => p.ndim >= 2 && n.startsWith('model.layers.') && !/Quantizer\./.test(n);
  const optimizer = kind === 'adamw'
    ? new AdamW([{ params: decay, weightDecay: 0.1 }, { params: rest, weightDecay: 0 }], { lr: o.lr, betas: [0.9, 0.95] })
    : new (kind === 'muon' ? Muon : AuON)([
      { params: named.filter(([n, p]) => hidden(n, p)).map(([, p]) => p), useMuon: true },
      { params: named.filter(([n, p]) => !hidden(n, p) && decay.includes(p)).map(([, p]) => p), useMuon: false, adamWeightDecay: 0.1 },
      { params: rest, useMuon: false, adamWeightDecay: 0 },
    ].filter((g) => g.params.length), { lr: o.lr, weightDecay: 0, adamLr: o.adamLr ?? 3e-3, adamBetas: [0.9, 0.95], adamEps: 1e-8 });
  const start = c.schedule === 'plain' ? 0 : Math.floor((c.switchAt ?? 0) * o.steps);
  const scheduler = new LambdaLR(optimizer, lrLambda(c, o.steps, start));
  const phase = c.schedule === 'plain' || !c.prepare ? null : new QATPhase(model, start);
  const hestia = c.hestia ? new HestiaScheduler(model, o.steps, { compressRatio: 0.2, annealRatio: 0.8, style: 'hessian' }) : null;
  // HESTIA's temperature scales are plain numbers, not tensors: calibrated on a fresh run, restored from the checkpoint on resume
  const calibration: Callback[] = !hestia ? [] : [{
    key: 'hestiaTempScales',
    onBegin: (ctx) => {
      if (ctx.resumed || o.hestiaCalibrate === false) return;
      const cal = calibrateHestia(model, () => { const [x, y] = batch(-1); return model.loss(x, y); }, { samples: 4, generator: new Generator(o.seed) });
      ctx.log(`HESTIA temperature scales: ${cal.map((r) => r.tempScale.toFixed(2)).join(' ')}`);
    },
    stateDict: () => hestia.quantizers.map((q) => q.soft!.tempScale),
    loadStateDict: (s) => hestia.quantizers.forEach((q, i) => void (q.soft!.tempScale = (s as number[])[i]!)),
  }];
  // CAST's schedule clock is a plain number per mask (its masks and gains are in the state dict)
  const castClock: Callback[] = sparse?.layers.size ? [{
    key: 'castSteps',
    stateDict: () => [...sparse.layers.values()].map((l) => (l.weightMask as SemiStructuredMask).steps),
    loadStateDict: (s) => [...sparse.layers.values()].forEach((l, i) => void ((l.weightMask as SemiStructuredMask).steps = (s as number[])[i]!)),
  }] : [];
  // validation: fixed blocks evenly spread over the held-out 10 %, quantizers on (HESTIA at ρ = 1: T = 0, P = 1, hard ternary)
  const valIdx = Array.from({ length: Math.min(o.valBlocks, val.length) }, (_, i) => Math.floor((i * (val.length - 1)) / Math.max(1, o.valBlocks - 1)));
  let sparsity: QatLlamaResult['sparsity'];
  const evaluate = (step: number) => {
    hestia?.step(step);
    model.eval();
    const valBpb = () => noGrad(() => {
      let nats = 0;
      for (let s = 0; s < valIdx.length; s += 16) {
        const idx = valIdx.slice(s, s + 16);
        const [x, y] = val.getBatch(idx);
        nats += model.loss(x, y).item() * idx.length;
      }
      return nats / valIdx.length / Math.LN2;
    });
    // the run evaluates once, at its end: the 2:4 masks harden there, for good
    if (sparse && step === o.steps) {
      const cast = c.sparsity!.method === 'cast';
      const denseValBpb = cast ? valBpb() : undefined;
      const prunedNormPct = cast ? castPrunedNormPct(sparse) : undefined;
      sparse.harden();
      sparsity = { zeroFraction: sparse.zeroFraction(), ...(cast && { denseValBpb, prunedNormPct }) };
    }
    const out = { val_bpb: valBpb(), ...(sparsity?.denseValBpb !== undefined && { dense_val_bpb: sparsity.denseValBpb }) };
    model.train();
    return out;
  };
  // summed outside the metrics, which must not depend on timing (a resumed run's equal an uninterrupted one's)
  let optMs = 0;
  let optSteps = 0;
  let cpuMs = 0;
  const result = await fit({
    name: `${c.name} seed ${o.seed}`, model, optimizer, scheduler, steps: o.steps, seed: o.seed,
    ...(o.dir !== undefined && { dir: o.dir }), resume: o.resume ?? false, ckptEvery: o.ckptEvery ?? o.steps, stopAt: o.stopAt ?? 0,
    evalEvery: o.steps, evalAtStart: false, evaluate, progress: o.progress ?? true, log,
    allowNonfinite: o.allowNonfinite ?? false, nonFiniteHint: `${NONFINITE_HINT} (${c.name}, seed ${o.seed})`,
    config: { config: c.name, seed: o.seed, ...(o.distill && { distill: o.distill }), steps: o.steps, batchSize: o.batchSize, lr: o.lr, optimizer: kind, ...(kind !== 'adamw' && { adamLr: o.adamLr ?? 3e-3 }), ...config },
    panels: { 'loss (nats/byte)': ['loss'], 'bits per byte': ['bpb', 'val_bpb'], 'learning rate': ['lr'], ...(kd && { distillation: ['kd', 'task', 'features', 'scores'] }), ...(hestia && { HESTIA: ['pressure', 'temperature'] }), ...(phase && { QAT: ['qat'] }) },
    callbacks: [...calibration, ...castClock],
    step: ({ index }) => {
      const cpu = process.cpuUsage();
      if (phase?.step(index)) log(`step ${index}: switched to QAT`);
      const h = hestia?.step(index);
      const [x, y] = batch(index); // [B, T] each
      const parts: Record<string, number> = {};
      const loss = trainStep(model, optimizer, () => {
        let l: Tensor;
        if (kd) {
          const r = kd.setStep(index).compute(x, y, lmLoss);
          for (const [k, v] of Object.entries(r.parts)) parts[k] = v.item();
          l = r.loss;
        } else l = model.loss(x, y);
        optimizer.zeroGrad();
        l.backward();
        const t = performance.now();
        optimizer.step();
        optMs += performance.now() - t; // wasm kernels are synchronous, so this is the update's compute
        optSteps++;
        return l.item();
      });
      // CAST's decay, with the LR this step's update used
      sparse?.step(scheduler.getLastLr()[0]!);
      scheduler.step();
      const used = process.cpuUsage(cpu);
      cpuMs += (used.user + used.system) / 1000;
      // under distillation `loss` is the mixed objective and bpb the task's cross entropy alone
      return { loss, bpb: (parts.task ?? loss) / Math.LN2, ...parts, lr: scheduler.getLastLr()[0]!, ...(h && { pressure: h.pressure, temperature: h.temperature }), ...(phase && { qat: phase.isQAT(index) ? 1 : 0 }) };
    },
  });
  const tailN = Math.max(1, Math.floor(o.steps / 10));
  const tail = result.records.filter((r) => typeof r.bpb === 'number' && r.step > o.steps - tailN).map((r) => r.bpb as number);
  const valBpb = result.lastEval.val_bpb ?? Number.NaN;
  const optMsPerStep = optMs / Math.max(1, optSteps);
  kd?.remove();
  if (teacher) dispose([...teacher.parameters(), ...teacher.buffers()]);
  const out = { config: c.name, seed: o.seed, valBpb, trainBpb: tail.reduce((a, b) => a + b, 0) / tail.length, msPerStep: result.msPerStep, optMsPerStep, params: model.numParameters(), steps: result.endStep, cpuMsPerStep: cpuMs / Math.max(1, optSteps), ...(sparsity && { sparsity }) };
  // A grid runs many of these in one process and nothing here awaits long enough for the garbage
  // collector to free a finished run's model: four 1,000-step runs filled the 2 GiB wasm heap.
  dispose([...model.parameters(), ...model.buffers(), ...[...optimizer.state.values()].flatMap((st) => Object.values(st))]);
  return out;
}
