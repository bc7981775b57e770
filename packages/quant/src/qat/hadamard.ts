/**
 * @file QuEST-style QAT linear layer (methods.md §3): weights and inputs rotated by a normalised
 * block Hadamard transform along the input dim (so (xH)(WH)ᵀ = xWᵀ), then quantized by ordinary
 * quantizers of the one vocabulary — by default QuEST's: the centred grid with the Gaussian-MSE
 * step Δ = 2·α*_b·RMS/(2^b − 1) per row / token and the trust estimator (`questConfig`).
 * `rotate: false` + estimator 'ste' is QuEST's STE baseline. `prepareHadamardQAT` swaps a model's
 * Linear layers for it.
 */
import { hadamard, linear, type Tensor } from '@qgrad/core';
import { Linear, Module } from '@qgrad/nn';
import { fakeQuant, type FakeQuantConfig } from '../quantizer/functional.js';
import type { QuantizerConfig } from '../quantizer/config.js';
import { GAUSSIAN_MSE_ALPHA } from '../scale/rules.js';
import { matchesName, replaceSubmodule, type NamePattern } from './prepare.js';
import { ActQuantizer, WeightQuantizer, type ActQuantConfig, type WeightQuantConfig } from './quantizers.js';

/**
 * QuEST's quantizer in the vocabulary: `{ grid: 'centered', bits, scale: 'gaussian', estimator:
 * 'trust' }` (trust radius Δ/2 by default).
 * @example prepareQAT(m, { default: { weight: questConfig(4), input: { ...questConfig(4), granularity: 'token' } } });
 */
export function questConfig(bits: number, o: { estimator?: string; trust?: number } = {}): QuantizerConfig {
  return { grid: 'centered', bits, scale: 'gaussian', estimator: o.estimator ?? 'trust', ...(o.trust !== undefined && { trust: o.trust }) };
}

const rmsConfigs = new Map<string, FakeQuantConfig>();

/**
 * Fake-quantizes along the last axis with QuEST's quantizer: the centred b-bit grid
 * {±Δ/2, ±3Δ/2, …, ±α}, one step per row Δ = 2·α*_b·RMS(row)/(2^b − 1) (detached).
 * @example rmsQuantize(x, 4, 'trust'); // 16 levels per row, trust-masked gradient
 */
export function rmsQuantize(x: Tensor, bits: number, estimator = 'trust', trust?: number): Tensor {
  if (GAUSSIAN_MSE_ALPHA[bits] === undefined) throw new Error(`rmsQuantize: bits must be one of ${Object.keys(GAUSSIAN_MSE_ALPHA).join(', ')}, got ${bits} (input shape [${x.shape.join(', ')}])`);
  const key = `${bits}/${estimator}/${trust}`;
  let c = rmsConfigs.get(key);
  if (!c) rmsConfigs.set(key, (c = { ...questConfig(bits, { estimator, trust }), granularity: 'token' }));
  return fakeQuant(x, c);
}

/** The quantizers of a Hadamard-rotated layer (QuEST): of the rotated weight and of the rotated input. */
export interface HadamardQuantConfig {
  /** Quantizer of the rotated weight WH (default questConfig(4), per output row); null keeps it float. */
  weight?: WeightQuantConfig | null;
  /** Quantizer of the rotated input xH (granularity 'token' unless given); null / omitted keeps it float. */
  input?: ActQuantConfig | null;
  /** Rotate by the Hadamard transform (default true). */
  rotate?: boolean;
  /** Hadamard block along the input dim (default: the largest power of two ≤ 128 dividing it). */
  blockSize?: number;
}

/** Largest power of two ≤ cap dividing n. */
function defaultBlock(n: number, cap = 128): number {
  let b = 1;
  while (b * 2 <= cap && n % (b * 2) === 0) b *= 2;
  return b;
}

/**
 * y = Q_a(xH)·Q_w(WH)ᵀ + b: the Hadamard-rotated QAT linear layer. Shares the source Linear's
 * weight and bias tensors; its quantizers are the ordinary modules.
 * @example
 * const q = HadamardQuantLinear.from(new Linear(128, 64), { weight: questConfig(4), input: questConfig(4) });
 * q.forward(x); // ≈ linear(x, W, b) at high bit-widths
 */
export class HadamardQuantLinear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  weightQuantizer: WeightQuantizer | null;
  inputQuantizer: ActQuantizer | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly config: { rotate: boolean; blockSize: number };
  /** Quantization on/off (off: the plain linear layer), for FP → QAT phases. */
  enabled = true;

  constructor(src: Linear, cfg: HadamardQuantConfig = {}, who = 'HadamardQuantLinear') {
    super();
    this.inFeatures = src.inFeatures;
    this.outFeatures = src.outFeatures;
    this.weight = this.registerParameter('weight', src.weight);
    this.bias = this.registerParameter('bias', src.bias);
    const blockSize = cfg.blockSize ?? defaultBlock(src.inFeatures);
    if (src.inFeatures % blockSize) throw new Error(`${who}: blockSize ${blockSize} must divide inFeatures ${src.inFeatures}`);
    this.config = { rotate: cfg.rotate ?? true, blockSize };
    const w = cfg.weight === undefined ? questConfig(4) : cfg.weight;
    const dtype = src.weight.dtype === 'float64' ? 'float64' : 'float32';
    this.weightQuantizer = this.registerModule('weightQuantizer', w ? new WeightQuantizer(src.weight.shape, w, `${who} weight`, dtype) : null);
    this.inputQuantizer = this.registerModule('inputQuantizer', cfg.input ? new ActQuantizer({ granularity: 'token', ...cfg.input }, `${who} input`) : null);
  }
  static from(l: Linear, cfg: HadamardQuantConfig = {}, who?: string): HadamardQuantLinear {
    return new HadamardQuantLinear(l, cfg, who);
  }
  #rot(t: Tensor): Tensor {
    return this.config.rotate ? hadamard(t, { blockSize: this.config.blockSize }) : t;
  }
  /** The rotated, fake-quantized weight WH (what multiplies the rotated input). */
  quantizedWeight(): Tensor {
    const wh = this.#rot(this.weight); // [out, in]
    return this.weightQuantizer ? this.weightQuantizer.forward(wh) : wh;
  }
  forward(x: Tensor): Tensor {
    if (!this.enabled) return linear(x, this.weight, this.bias);
    const xh = this.#rot(x); // [..., in]
    const xq = this.inputQuantizer ? this.inputQuantizer.forward(xh) : xh;
    return linear(xq, this.quantizedWeight(), this.bias);
  }
  override extraRepr(): string {
    return `${this.inFeatures}, ${this.outFeatures}, ${this.config.rotate ? `hadamard${this.config.blockSize}` : 'no rotation'}`;
  }
}

/**
 * Replaces every Linear of `model` whose dotted name matches `match` (default all) and not
 * `skip` with a HadamardQuantLinear, in place; returns the replaced names.
 * @example prepareHadamardQAT(llama, { weight: questConfig(4), input: questConfig(4) }, { skip: ['lm_head'] });
 */
export function prepareHadamardQAT(model: Module, cfg: HadamardQuantConfig, opts: { match?: NamePattern | NamePattern[]; skip?: NamePattern[] } = {}): string[] {
  const targets = [...model.namedModules()].filter(([n, m]) => n !== '' && m instanceof Linear && (opts.match === undefined || matchesName(n, opts.match)) && !(opts.skip && matchesName(n, opts.skip)));
  for (const [name, m] of targets) {
    const q = HadamardQuantLinear.from(m as Linear, cfg, `prepareHadamardQAT: layer '${name}'`);
    q.train(m.training);
    replaceSubmodule(model, name, q);
  }
  return targets.map(([n]) => n);
}
