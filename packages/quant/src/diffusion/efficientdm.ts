/**
 * @file EfficientDM (methods-2.md §10): LoRA QAT of a PTQ'd low-bit diffusion model. Each
 * QuantLinear becomes an EfficientDMLinear, Ŵ = Q_w(deq(W_int) + (α/r)·B·A) with the step Δ_w
 * shared by deq and Q_w and learned; `mergeEfficientDM` folds B·A into on-grid weights exactly;
 * `efficientDMDistill` trains against the float teacher on the teacher's own DDIM trajectory
 * (data-free), with TALSQ (talsq.ts) on the inputs.
 */
import { dispose, getEstimator, Generator, keep, linear, noGrad, tidy, zeros, type Tensor } from '@qgrad/core';
import { init, Module, Parameter, trainStep, type Diffusion } from '@qgrad/nn';
import { kdLoss } from '../distill/kd.js';
import { fakeQuantView } from '../quantizer/apply.js';
import type { QuantizerPlan } from '../quantizer/config.js';
import { QuantLinear } from '../qat/modules.js';
import { matchesName, replaceSubmodule, type NamePattern } from '../qat/prepare.js';
import type { ActQuantizer, WeightQuantizer } from '../qat/quantizers.js';
import type { TimestepModule, TimestepPredictor } from './calibration.js';
import { TemporalActQuantizer } from './talsq.js';

/** Options of the EfficientDM LoRA layers: rank, α, whether Δ_w is learned, the init's generator. */
export interface EfficientDMLoraOptions {
  /** r (the reference: 32). */
  rank: number;
  /** The adapter is scaled by α/r (default α = r: scaling 1). */
  alpha?: number;
  /** Learn the weight step Δ_w (default true, as the reference; its lr there is 1e−6). */
  learnWeightScale?: boolean;
  generator?: Generator;
}

/**
 * y = Q_a(x)·Ŵᵀ + b with Ŵ = Q_w(Δ_w·W_int + (α/r)·B·A): the PTQ'd integers W_int frozen, the
 * adapter inside the re-quantization, so the merged model has no side branch. Δ_w is one Parameter
 * used both to dequantize W_int and to re-quantize (both paths feed its gradient, as in the
 * reference); its gradient is the STE's (LSQ's form without the gradient scale). B = 0 at the start,
 * and then Ŵ = Δ_w·W_int, the PTQ model's weight.
 * @example
 * const layer = new EfficientDMLinear(ptqLinear, { rank: 4 }); // ptqLinear: a QuantLinear after ptq
 * layer.forward(x); // same output as ptqLinear until B moves
 */
export class EfficientDMLinear extends Module {
  /** W_int in the weight quantizer's grouped-view layout, int8. */
  weightInt: Tensor;
  /** Δ_w (grouped-view layout, last dim 1). */
  weightScale: Tensor;
  bias: Tensor | null;
  loraA: Tensor;
  loraB: Tensor;
  /** The PTQ layer's fixed-scale weight quantizer: the merged layer's (its scale is refreshed from Δ_w at merge). */
  weightQuantizer: WeightQuantizer;
  inputQuantizer: ActQuantizer | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly rank: number;
  readonly alpha: number;
  readonly #plan: QuantizerPlan;

  constructor(src: QuantLinear, o: EfficientDMLoraOptions, who = 'EfficientDMLinear') {
    super();
    const wq = src.weightQuantizer;
    const int = wq?.plan.grid.integer;
    if (!wq || !wq.scale || !int || wq.plan.hasZeroPoint || int.qmin < -128 || int.qmax > 127 || src.weightMask) {
      throw new Error(`${who}: EfficientDM fine-tunes a symmetric integer weight (≤ 8 bits) with a stored scale; this layer's weight is ${wq ? `${wq.plan.grid.label} ${wq.plan.mode}${wq.plan.hasZeroPoint ? ' asymmetric' : ''}` : 'not quantized'}${src.weightMask ? ' with a sparsity mask' : ''}`);
    }
    this.inFeatures = src.inFeatures;
    this.outFeatures = src.outFeatures;
    const lim = Math.min(src.inFeatures, src.outFeatures);
    if (!Number.isInteger(o.rank) || o.rank < 1 || o.rank >= lim) throw new Error(`${who}: rank ${o.rank} must be an integer in 1 … ${lim - 1}`);
    this.rank = o.rank;
    this.alpha = o.alpha ?? o.rank;
    const dtype = src.weight.dtype === 'float64' ? 'float64' : 'float32';
    // the PTQ weight is on the grid (GPTQ wrote its result into the weight), so W_int = Ŵ/Δ rounds exactly
    const { wInt, scale } = noGrad(() => {
      const s = wq.scale!.detach();
      const view = wq.group(wq.forward(src.weight.detach())).view;
      return { wInt: view.div(s).round().to('int8'), scale: s.clone() };
    });
    this.weightInt = this.registerBuffer('weightInt', wInt);
    this.weightScale = this.registerParameter('weightScale', Parameter(scale, o.learnWeightScale ?? true));
    this.bias = this.registerBuffer('bias', src.bias ? noGrad(() => src.bias!.detach().clone()) : null);
    this.loraA = this.registerParameter('loraA', Parameter(zeros([o.rank, this.inFeatures], { dtype })));
    this.loraB = this.registerParameter('loraB', Parameter(zeros([this.outFeatures, o.rank], { dtype })));
    init.kaimingUniform_(this.loraA, { a: Math.sqrt(5), generator: o.generator });
    this.weightQuantizer = this.registerModule('weightQuantizer', wq);
    this.inputQuantizer = this.registerModule('inputQuantizer', src.inputQuantizer);
    this.#plan = { ...wq.plan, mode: 'learned', estimator: getEstimator('lsq'), gradScale: 1 };
  }

  get scaling(): number {
    return this.alpha / this.rank;
  }

  /** Ŵ = Q_w(Δ_w·W_int + (α/r)·B·A), [out, in]. */
  quantizedWeight(): Tensor {
    const delta = this.loraB.matmul(this.loraA).mul(this.scaling); // [out, in]
    const g = this.weightQuantizer.group(delta);
    const u = this.weightInt.to(delta.dtype).mul(this.weightScale).add(g.view);
    return g.restore(fakeQuantView(this.#plan, u, this.weightScale, 0)).reshape([this.outFeatures, this.inFeatures]);
  }

  forward(x: Tensor): Tensor {
    const xq = this.inputQuantizer ? this.inputQuantizer.forward(x) : x;
    return linear(xq, this.quantizedWeight(), this.bias);
  }

  /** A QuantLinear without adapters whose weight is Ŵ (on its grid, so its fixed quantizer returns it unchanged) and whose input quantizer is this one's. */
  merged(): QuantLinear {
    const w = noGrad(() => this.quantizedWeight().detach().clone());
    // a fixed generator: the throwaway initial values must not draw from the default one
    const q = new QuantLinear(this.inFeatures, this.outFeatures, { bias: this.bias !== null, dtype: w.dtype, generator: new Generator(0), weight: null, input: null });
    noGrad(() => {
      q.weight.copy_(w);
      if (this.bias && q.bias) q.bias.copy_(this.bias);
      this.weightQuantizer.scale!.copy_(this.weightScale.detach());
    });
    q.weightQuantizer = this.weightQuantizer;
    q.inputQuantizer = this.inputQuantizer;
    return q;
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, r=${this.rank}, alpha=${this.alpha}, ${this.weightQuantizer.grid.label}`;
  }
}

/**
 * Swaps the PTQ'd QuantLinear layers of `model` (those with a symmetric integer weight and a stored
 * scale; `match`/`skip` narrow them) for EfficientDMLinear layers, and freezes every parameter but
 * the adapters, Δ_w and TALSQ's step sizes. QuantConv2d layers stay as they are (LoRA here covers
 * Linear layers; a DiT's only convolution is its patch embedding). Returns the installed layers.
 * @example
 * ptq4dm(model, cal, { method: 'rtn', default: { weight: W4, input: A8 } });
 * talsq(model, { input: A8, timesteps: 1000, buckets: 20 });
 * efficientDM(model, { rank: 8 });
 */
export function efficientDM(model: Module, o: EfficientDMLoraOptions & { match?: NamePattern | NamePattern[]; skip?: NamePattern[] }): [string, EfficientDMLinear][] {
  const found = [...model.namedModules()].filter((e): e is [string, QuantLinear] => e[1] instanceof QuantLinear && !!e[1].weightQuantizer?.plan.grid.integer && !!e[1].weightQuantizer.scale);
  const chosen = found.filter(([n]) => (o.match === undefined || matchesName(n, o.match)) && !(o.skip && matchesName(n, o.skip)));
  if (!chosen.length) throw new Error(`efficientDM: no PTQ'd QuantLinear layer (integer weight with a stored scale) to adapt${found.length ? ` after match/skip; candidates are ${found.map(([n]) => n).join(', ')}` : ''}`);
  for (const p of model.parameters()) p.requiresGrad = false;
  const out: [string, EfficientDMLinear][] = [];
  for (const [name, src] of chosen) {
    const layer = new EfficientDMLinear(src, o, `efficientDM: layer '${name}'`);
    layer.train(src.training);
    replaceSubmodule(model, name, layer);
    out.push([name, layer]);
  }
  for (const [, m] of model.namedModules()) {
    if (m instanceof TemporalActQuantizer) for (const p of m.parameters()) p.requiresGrad = true;
  }
  return out;
}

/** The trainable tensors of an EfficientDM model, by role (each gets its own learning rate). */
export interface EfficientDMParameters {
  /** [A, B] per layer, with the layer's mean Δ_w (the scale-aware LoRA learning rate is proportional to it). */
  lora: { name: string; params: Tensor[]; meanWeightScale: number }[];
  weightScales: Tensor[];
  /** TALSQ's per-bucket step sizes and zero points. */
  activationScales: Tensor[];
}

/**
 * What the optimizer trains in an EfficientDM model, by role.
 * @example
 * const p = efficientDMParameters(model);
 * const opt = new AdamW([...p.lora.map((l) => ({ params: l.params, lr: l.meanWeightScale / 2500 })), { params: p.activationScales, lr: 5e-4 }]);
 */
export function efficientDMParameters(model: Module): EfficientDMParameters {
  const lora: EfficientDMParameters['lora'] = [];
  const weightScales: Tensor[] = [];
  const activationScales: Tensor[] = [];
  for (const [name, m] of model.namedModules()) {
    if (m instanceof EfficientDMLinear) {
      lora.push({ name, params: [m.loraA, m.loraB], meanWeightScale: noGrad(() => m.weightScale.mean().item()) });
      if (m.weightScale.requiresGrad) weightScales.push(m.weightScale);
    }
    if (m instanceof TemporalActQuantizer) activationScales.push(...m.parameters().filter((p) => p.requiresGrad));
  }
  if (!lora.length) throw new Error('efficientDMParameters: the model has no EfficientDMLinear layers (call efficientDM first)');
  return { lora, weightScales, activationScales };
}

/**
 * Replaces every EfficientDMLinear by its merged QuantLinear (Ŵ on the grid, no adapter), in
 * place; the output is the adapter model's bit for bit. Returns the merged layer names.
 * @example const names = mergeEfficientDM(model); // then model has no lora parameters
 */
export function mergeEfficientDM(model: Module): string[] {
  const layers = [...model.namedModules()].filter((e): e is [string, EfficientDMLinear] => e[1] instanceof EfficientDMLinear);
  if (!layers.length) throw new Error('mergeEfficientDM: the model has no EfficientDMLinear layers');
  for (const [name, l] of layers) {
    const q = l.merged();
    q.train(l.training);
    replaceSubmodule(model, name, q);
  }
  return layers.map(([n]) => n);
}

/** One denoising step of the teacher's trajectory: the state x_t, its timestep and the teacher's raw ε̂. */
export interface TeacherStep {
  x: Tensor;
  t: number;
  eps: Tensor;
}

/**
 * The float teacher's DDIM trajectory from pure noise: every state x_t it is called on (kept) with the
 * teacher's ε̂ there. x_{t−1} comes from the teacher's ε̂ only, so the states do not depend on the
 * student and can be made before the student trains on them, in the same order.
 * @example const traj = teacherTrajectory(diffusion, teacher, { shape: [8, 1, 28, 28], steps: 20, eta: 1 });
 */
export function teacherTrajectory(diffusion: Diffusion, teacher: TimestepPredictor, o: { shape: number[]; steps: number; eta?: number; labels?: readonly number[]; generator?: Generator }): TeacherStep[] {
  const out: TeacherStep[] = [];
  const record = (x: Tensor, t: number[]) => {
    const eps = tidy(() => teacher.forward(x, t, o.labels));
    out.push({ x: keep(x.clone()), t: t[0]!, eps: keep(eps.clone()) });
    return eps;
  };
  tidy(() => void diffusion.sampleDdim(record, o.shape, o.steps, { generator: o.generator, eta: o.eta ?? 1 }));
  return out;
}

/** Options of `efficientDMDistill`. */
export interface EfficientDMDistillOptions {
  /** What steps the trainable tensors (see efficientDMParameters). */
  optimizer: Extract<Parameters<typeof trainStep>[1], { state: unknown }> & { step(): void; zeroGrad(): void };
  /** Stepped after every optimizer step, if given (the reference decays linearly). */
  scheduler?: { step(): void };
  /** Teacher trajectories to train on (the reference: 160 epochs of one). */
  trajectories: number;
  /** Images per trajectory. */
  batchSize: number;
  /** Per-image shape [C, H, W]. */
  shape: number[];
  /** DDIM steps per trajectory (one optimizer step each). */
  steps: number;
  /** DDIM η of the teacher's sampler (default 1, as the reference). */
  eta?: number;
  /** Class labels of trajectory k (class-conditional models). */
  labels?: (trajectory: number) => readonly number[];
  generator?: Generator;
  onStep?: (p: { step: number; t: number; loss: number }) => void;
}

/**
 * EfficientDM's data-free distillation: along each of the float teacher's DDIM trajectories, one
 * optimizer step per denoising step on kdLoss(ε̂_student, ε̂_teacher, 'mse') — Σ(ε_q − ε_fp)² per
 * image, averaged over the batch (the reference sums over the batch too). Returns the losses.
 * @example
 * const losses = efficientDMDistill(student, teacher, diffusion, { optimizer, trajectories: 8, batchSize: 16, shape: [1, 28, 28], steps: 20 });
 */
export function efficientDMDistill(student: TimestepModule, teacher: TimestepPredictor, diffusion: Diffusion, o: EfficientDMDistillOptions): number[] {
  const g = o.generator ?? new Generator(0);
  const losses: number[] = [];
  student.train();
  for (let k = 0; k < o.trajectories; k++) {
    const labels = o.labels?.(k);
    const traj = teacherTrajectory(diffusion, teacher, { shape: [o.batchSize, ...o.shape], steps: o.steps, eta: o.eta, labels, generator: g });
    for (const s of traj) {
      const loss = trainStep(student, o.optimizer, () => {
        const eps = student.forward(s.x, new Array<number>(o.batchSize).fill(s.t), labels);
        const l = kdLoss(eps.reshape([o.batchSize, -1]), s.eps.reshape([o.batchSize, -1]), { kind: 'mse' });
        o.optimizer.zeroGrad();
        l.backward();
        o.optimizer.step();
        return l.item();
      });
      o.scheduler?.step();
      losses.push(loss);
      o.onStep?.({ step: losses.length, t: s.t, loss });
      dispose([s.x, s.eps]);
    }
  }
  student.eval();
  return losses;
}
