/**
 * @file QAT layers: QuantLinear, QuantConv2d, QuantEmbedding — the nn layers with a
 * `weightQuantizer` on the weight and (Linear/Conv2d) an `inputQuantizer` on the input, both
 * from quantizers.ts. `prepareQAT` (prepare.ts) swaps them in; `convert` (convert.ts) swaps them out.
 */
import { conv2d, embedding, linear, type Conv2dOptions, type Tensor } from '@qgrad/core';
import { Conv2d, Embedding, Linear, Module, type LayerOptions } from '@qgrad/nn';
import { ActQuantizer, WeightQuantizer, type ActQuantConfig, type WeightQuantConfig } from './quantizers.js';

/** How one layer is quantized: a weight quantizer and an input quantizer, either left out for full precision. */
export interface QuantLayerConfig {
  /** Weight quantizer config; null keeps the weight in full precision. */
  weight?: WeightQuantConfig | null;
  /** Input (activation) quantizer config; null (default) keeps inputs in full precision. */
  input?: ActQuantConfig | null;
}

/**
 * A transform applied to a Linear weight before its quantizer: a semi-structured sparsity mask
 * (sparsity/). Masking comes first so a quantizer that maps 0 to 0 keeps the pruned entries at 0.
 */
export interface WeightMask extends Module {
  /** The N:M pattern, e.g. '2:4'. */
  readonly pattern: string;
  /** The weight the layer computes with (masked, or during CAST training the scaled dense weight). */
  maskWeight(weight: Tensor): Tensor;
  /** Freezes the final mask: writes the pruned zeros (and any folded scale) into `weight` in place. */
  harden(weight: Tensor): void;
}

/** Shared part of the QAT layers: the two quantizers and switching them on and off. */
export interface QuantLayer extends Module {
  weight: Tensor;
  weightQuantizer: WeightQuantizer | null;
  inputQuantizer: ActQuantizer | null;
  /** The fake-quantized weight used by forward. */
  quantizedWeight(): Tensor;
}

/**
 * Whether a module is one of the QAT layers.
 * @example const quantized = [...model.namedModules()].filter(([, m]) => isQuantLayer(m));
 */
export function isQuantLayer(m: Module): m is QuantLayer {
  return m instanceof QuantLinear || m instanceof QuantConv2d || m instanceof QuantEmbedding;
}

/** Builds the quantizers; errors name the layer as `who` ("prepareQAT: layer 'fc1' (Linear)"). */
function attach(m: Module, weight: Tensor, cfg: QuantLayerConfig, hasInput: boolean, who: string): [WeightQuantizer | null, ActQuantizer | null] {
  const wq = m.registerModule('weightQuantizer', cfg.weight ? new WeightQuantizer(weight.shape, cfg.weight, `${who} weight`, weight.dtype === 'float64' ? 'float64' : 'float32') : null);
  const aq = m.registerModule('inputQuantizer', hasInput && cfg.input ? new ActQuantizer(cfg.input, `${who} input`) : null);
  wq?.initFrom(weight);
  return [wq, aq];
}

/**
 * y = Q_a(x)·Q_w(W)ᵀ + b. Built from a Linear (sharing its weight and bias tensors) or fresh.
 * @example
 * const q = QuantLinear.from(new Linear(784, 256), { weight: { grid: 'int', bits: 4 }, input: { bits: 4, signed: false } });
 * QuantLinear.from(new Linear(784, 256), { weight: { grid: 'nf4' } });
 * q.forward(x).sum().backward(); // grads reach q.weight, q.weightQuantizer.scale, q.inputQuantizer.scale, x
 */
export class QuantLinear extends Module implements QuantLayer {
  weight: Tensor;
  bias: Tensor | null;
  weightQuantizer: WeightQuantizer | null;
  inputQuantizer: ActQuantizer | null;
  /** A sparsity mask applied before the weight quantizer (set by `sparsify`, carried over from a SparseLinear), or null. */
  weightMask: WeightMask | null;
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(inFeatures: number, outFeatures: number, cfg: QuantLayerConfig & LayerOptions & { bias?: boolean } = {}, from?: Linear, who = 'QuantLinear') {
    super();
    const src = from ?? new Linear(inFeatures, outFeatures, cfg);
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.weight = this.registerParameter('weight', src.weight);
    this.bias = this.registerParameter('bias', src.bias);
    [this.weightQuantizer, this.inputQuantizer] = attach(this, this.weight, cfg, true, who);
    this.weightMask = this.registerModule('weightMask', (from as { weightMask?: WeightMask | null } | undefined)?.weightMask ?? null) as WeightMask | null;
  }
  /** Wraps an existing Linear: same weight and bias tensors (optimizer state stays valid). `who` names it in errors. */
  static from(l: Linear, cfg: QuantLayerConfig, who = 'QuantLinear'): QuantLinear {
    return new QuantLinear(l.inFeatures, l.outFeatures, cfg, l, who);
  }
  quantizedWeight(): Tensor {
    const w = this.weightMask ? this.weightMask.maskWeight(this.weight) : this.weight;
    return this.weightQuantizer ? this.weightQuantizer.forward(w) : w;
  }
  forward(x: Tensor): Tensor {
    const xq = this.inputQuantizer ? this.inputQuantizer.forward(x) : x;
    return linear(xq, this.quantizedWeight(), this.bias);
  }
  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, bias=${this.bias !== null}`;
  }
}

/**
 * 2-D convolution with quantized weight (one scale per output channel by default) and input.
 * @example prepareQAT(cnn, { default: { weight: { grid: 'int', bits: 4 } }, types: ['Conv2d'] }); // swaps in QuantConv2d layers
 */
export class QuantConv2d extends Module implements QuantLayer {
  weight: Tensor;
  bias: Tensor | null;
  weightQuantizer: WeightQuantizer | null;
  inputQuantizer: ActQuantizer | null;
  readonly conv: Conv2dOptions;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];

  constructor(src: Conv2d, cfg: QuantLayerConfig, who = 'QuantConv2d') {
    super();
    this.conv = { ...src.conv };
    this.inChannels = src.inChannels;
    this.outChannels = src.outChannels;
    this.kernelSize = src.kernelSize;
    this.weight = this.registerParameter('weight', src.weight);
    this.bias = this.registerParameter('bias', src.bias);
    [this.weightQuantizer, this.inputQuantizer] = attach(this, this.weight, cfg, true, who);
  }
  static from(c: Conv2d, cfg: QuantLayerConfig, who = 'QuantConv2d'): QuantConv2d {
    return new QuantConv2d(c, cfg, who);
  }
  quantizedWeight(): Tensor {
    return this.weightQuantizer ? this.weightQuantizer.forward(this.weight) : this.weight;
  }
  forward(x: Tensor): Tensor {
    const xq = this.inputQuantizer ? this.inputQuantizer.forward(x) : x;
    return conv2d(xq, this.quantizedWeight(), this.bias, this.conv);
  }
  override extraRepr(): string {
    return `${this.inChannels}, ${this.outChannels}, kernelSize=(${this.kernelSize.join(', ')})`;
  }
}

/**
 * Embedding table with a quantized weight (per row by default); indices are not quantized.
 * @example prepareQAT(llama, { rules: [{ types: ['Embedding'], weight: { grid: 'int', bits: 8 } }] }); // swaps in QuantEmbedding
 */
export class QuantEmbedding extends Module implements QuantLayer {
  weight: Tensor;
  weightQuantizer: WeightQuantizer | null;
  inputQuantizer: ActQuantizer | null = null;
  readonly paddingIdx: number | undefined;
  readonly numEmbeddings: number;
  readonly embeddingDim: number;

  constructor(src: Embedding, cfg: QuantLayerConfig, who = 'QuantEmbedding') {
    super();
    this.paddingIdx = src.paddingIdx;
    this.numEmbeddings = src.numEmbeddings;
    this.embeddingDim = src.embeddingDim;
    this.weight = this.registerParameter('weight', src.weight);
    [this.weightQuantizer] = attach(this, this.weight, cfg, false, who);
  }
  static from(e: Embedding, cfg: QuantLayerConfig, who = 'QuantEmbedding'): QuantEmbedding {
    return new QuantEmbedding(e, cfg, who);
  }
  quantizedWeight(): Tensor {
    return this.weightQuantizer ? this.weightQuantizer.forward(this.weight) : this.weight;
  }
  forward(indices: Tensor): Tensor {
    return embedding(indices, this.quantizedWeight(), { paddingIdx: this.paddingIdx });
  }
  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}`;
  }
}

/**
 * Every weight and input quantizer in a model, with its dotted path.
 * @example for (const [name, q] of namedQuantizers(model)) console.log(name, describeQuantizer(q));
 */
export function* namedQuantizers(model: Module): Generator<[string, WeightQuantizer | ActQuantizer]> {
  for (const [name, m] of model.namedModules()) if (m instanceof WeightQuantizer || m instanceof ActQuantizer) yield [name, m];
}

/**
 * Switches fake quantization on or off everywhere (full-precision phase → QAT phase). With
 * `reinit`, switching on re-initialises weight scales from the current weights (in place, so
 * optimizer state keeps pointing at the same tensors) and activation scales at the next batch.
 * @example setQuantEnabled(model, false); // full-precision warmup
 * setQuantEnabled(model, true, { reinit: true }); // QAT from here, scales re-initialised
 */
export function setQuantEnabled(model: Module, on: boolean, opts: { reinit?: boolean; weights?: boolean; inputs?: boolean } = {}): void {
  for (const [, m] of model.namedModules()) {
    if (!isQuantLayer(m)) continue;
    const wq = m.weightQuantizer;
    const aq = m.inputQuantizer;
    if (wq && opts.weights !== false) {
      if (on && opts.reinit && !wq.enabled) wq.initFrom(m.weight);
      wq.enabled = on;
    }
    if (aq && opts.inputs !== false) {
      if (on && opts.reinit && !aq.enabled) aq.initialized.fill_(0);
      aq.enabled = on;
    }
  }
}
