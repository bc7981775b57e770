/**
 * @file `LoraLayer`, what every LoRA-on-quantized-weights layer shares: the adapter factors
 * `loraA` [r, in′] and `loraB` [out, r] (PEFT's lora_A / lora_B), α and the scaling, dropout on the
 * adapter's input, the frozen bias, and the contract `merge` relies on; plus `frozenBase`, the
 * stored quantized base (a convert-style QuantizedLinear). The methods are one file each.
 */
import { dropout, linear, noGrad, type Generator, type Tensor } from '@qgrad/core';
import { Linear, Module } from '@qgrad/nn';
import type { FloatDType } from '../grids/grid.js';
import { QuantizedLinear } from '../qat/convert.js';
import { QuantLinear } from '../qat/modules.js';
import type { WeightQuantConfig } from '../qat/quantizers.js';

/** The LoRA-on-quantized-weights methods `loraQuant` builds. */
export type LoraMethod = 'qlora' | 'qa-lora' | 'l4q' | 'lr-qat' | 'loqt';

/** What a method's layer is built from (loraQuant fills it from its options). */
export interface LoraLayerOptions {
  rank: number;
  alpha: number;
  /** Dropout probability on the adapter's input (default 0). */
  dropout?: number;
  /** The base quantizer, on the one vocabulary (each method checks what it needs). */
  quant: WeightQuantConfig;
  generator?: Generator;
  /** Names the layer in errors ("loraQuant: layer 'fc1' (qlora)"). */
  who: string;
}

/** One merged layer: what replaced the adapter layer, and (requantized merges) the SQNR of putting it back on the grid. */
export interface MergedLayer {
  layer: Module;
  /** 'float' (Linear), or 'quantized' (QuantizedLinear on the base's grid). */
  kind: 'float' | 'quantized';
  /** Requantized merges: SQNR in dB of the requantized weight against the exact float merge. */
  sqnrDb?: number;
}

/**
 * Base of the LoRA layers: y = base(x) + adapter(x), where the base is frozen in its quantized
 * form. Subclasses give the forward, the merge and which tensors must stay unchanged in training.
 * @example for (const [name, layer] of loraLayers(model)) console.log(name, layer.method);
 */
export abstract class LoraLayer extends Module {
  abstract readonly method: LoraMethod;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly rank: number;
  /** α: the adapter is scaled by α/r (LoQT: by α). Loading an adapter sets it from the file. */
  alpha: number;
  readonly dropoutP: number;
  readonly who: string;
  readonly generator: Generator | undefined;
  /** The base quantizer config (requantizing merges and LoQT's merges reuse it). */
  readonly quant: WeightQuantConfig;
  /** PEFT's lora_A: [r, in] (QA-LoRA: [r, in/L]; LoQT: the fixed projection P, a buffer). */
  loraA!: Tensor;
  /** PEFT's lora_B: [out, r]. */
  loraB!: Tensor;

  constructor(src: Linear, o: LoraLayerOptions, adapterIn = src.inFeatures) {
    super();
    this.inFeatures = src.inFeatures;
    this.outFeatures = src.outFeatures;
    this.rank = o.rank;
    this.alpha = o.alpha;
    this.dropoutP = o.dropout ?? 0;
    this.who = o.who;
    this.generator = o.generator;
    this.quant = o.quant;
    const lim = Math.min(adapterIn, src.outFeatures);
    if (!Number.isInteger(o.rank) || o.rank < 1 || o.rank >= lim) {
      throw new Error(`${o.who}: rank ${o.rank} must be an integer in 1 … ${lim - 1} (below min(in${adapterIn === src.inFeatures ? '' : '/groupSize'} = ${adapterIn}, out = ${src.outFeatures}), or the adapter is no low-rank update)`);
    }
    if (!(o.alpha > 0 && Number.isFinite(o.alpha))) throw new Error(`${o.who}: alpha must be a positive number, got ${o.alpha}`);
    if (!(this.dropoutP >= 0 && this.dropoutP < 1)) throw new Error(`${o.who}: dropout must be in [0, 1), got ${this.dropoutP}`);
  }

  get dtype(): FloatDType {
    return this.loraB.dtype as FloatDType;
  }
  /** The factor on B·A: α/r (PEFT's scaling). */
  get scaling(): number {
    return this.alpha / this.rank;
  }
  /** The adapter's input after dropout (training only). */
  protected adapterInput(x: Tensor): Tensor {
    return dropout(x, this.dropoutP, this.training, { generator: this.generator });
  }
  /** scaling·B·A·x′ for the adapter's input x′ (already pooled or projected as the method does). */
  protected adapterOf(xIn: Tensor): Tensor {
    // the scaling on B (out × r values) rather than on the output (tokens × out), forward and backward
    return linear(linear(xIn, this.loraA), this.loraB.mul(this.scaling));
  }
  /** The float ΔW = scaling·B·A (no gradient), [out, in′], rounded as `loraLinear` rounds it. */
  deltaWeight(): Tensor {
    return noGrad(() => this.loraB.matmul(this.loraA.mul(this.scaling)));
  }
  /** What the optimizer trains: the adapter factors (and the scales where the method learns them). */
  trainable(): Tensor[] {
    return [this.loraA, this.loraB];
  }
  /** The frozen base as stored (codes, scales, integer weights): unchanged by training. */
  abstract baseState(): Record<string, Tensor>;
  /** A layer without adapters whose output equals this one's (eval mode); `requantize` puts float merges back on the base's grid. */
  abstract merged(opts: { requantize?: boolean }): MergedLayer;
  abstract forward(x: Tensor): Tensor;

  override extraRepr(): string {
    return `${this.method}, inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, r=${this.rank}, alpha=${this.alpha}${this.dropoutP ? `, dropout=${this.dropoutP}` : ''}`;
  }
}

/**
 * Frozen-base defaults: integer grids get a fixed data scale (absmax, minmax when asymmetric) unless the config says otherwise.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function frozenConfig(quant: WeightQuantConfig): WeightQuantConfig {
  if ((quant.grid ?? 'int') !== 'int' || quant.scale !== undefined || quant.estimator !== undefined) return quant;
  return { ...quant, scale: { mode: 'fixed', rule: quant.asymmetric ? 'minmax' : 'absmax' } };
}

/**
 * A float Linear [out, in] holding `weight` and `bias` (copies).
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function floatLinear(weight: Tensor, bias: Tensor | null): Linear {
  const [out, inF] = weight.shape as [number, number];
  const lin = new Linear(inF, out, { bias: bias !== null, dtype: weight.dtype });
  noGrad(() => {
    lin.weight.copy_(weight);
    if (bias && lin.bias) lin.bias.copy_(bias);
  });
  return lin;
}

/**
 * The frozen quantized base of `weight` (and `bias`) under `quant`: convert's QuantizedLinear
 * (packed codes, scales — double-quantized where the config says — and zero points).
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function frozenBase(weight: Tensor, bias: Tensor | null, quant: WeightQuantConfig, who: string): QuantizedLinear {
  const q = QuantLinear.from(floatLinear(weight, bias), { weight: frozenConfig(quant) }, who);
  return new QuantizedLinear(q);
}
