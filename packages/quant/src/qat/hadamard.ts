/**
 * @file QuEST-style QAT linear layer (methods.md §3): weights and inputs rotated by a normalised
 * block Hadamard transform along the input dim (so (xH)(WH)ᵀ = xWᵀ), each quantized on a centred
 * b-bit grid whose step comes from the RMS (Δ = 2·α*_b·RMS/(2^b − 1), the Gaussian-MSE clip),
 * with the trust estimator by default. `rotate: false` + `estimator: 'ste'` is QuEST's STE
 * baseline on the same grid. `prepareHadamardQAT` swaps a model's Linear layers for it.
 */
import { fakeQuantize, hadamard, linear, mean, mul, noGrad, sqrt, square, type Tensor } from '@qgrad/core';
import { Linear, Module } from '@qgrad/nn';
import { GAUSSIAN_MSE_ALPHA } from '../scale/rules.js';
import { matchesName, replaceSubmodule, type NamePattern } from './prepare.js';

export interface HadamardQuantConfig {
  /** Weight bits (a key of GAUSSIAN_MSE_ALPHA: 1 … 8). */
  weightBits: number;
  /** Input (activation) bits; 0 keeps inputs in float. */
  inputBits?: number;
  /** 'trust' (QuEST, default) or any core estimator name ('ste' for the baseline). */
  estimator?: string;
  /** Trust radius in steps (default ½: T = Δ/2, QuEST's code default). */
  trust?: number;
  /** Rotate by the Hadamard transform (default true). */
  rotate?: boolean;
  /** Hadamard block along the input dim (default: the largest power of two ≤ 128 dividing it). */
  blockSize?: number;
  /** Weight RMS scales per output row ('channel', default) or per `group` consecutive inputs. */
  granularity?: 'channel' | { group: number };
}

/** Largest power of two ≤ cap dividing n. */
function defaultBlock(n: number, cap = 128): number {
  let b = 1;
  while (b * 2 <= cap && n % (b * 2) === 0) b *= 2;
  return b;
}

/**
 * Fake-quantizes along the last axis on the centred b-bit grid {±Δ/2, ±3Δ/2, …, ±α}, one step per
 * row: Δ = 2·α*_b·RMS(row)/(2^b − 1) (detached). Written as fakeQuantize with zero point ½ (not
 * rounded) and range [1 − 2^(b−1), 2^(b−1)]: x̂ = Δ·(clip(R(x/Δ + ½)) − ½).
 * @example rmsQuantize(x, 4, 'trust'); // 16 levels per row, trust-masked gradient
 */
export function rmsQuantize(x: Tensor, bits: number, estimator = 'trust', trust?: number): Tensor {
  const a = GAUSSIAN_MSE_ALPHA[bits];
  if (a === undefined) throw new Error(`rmsQuantize: bits must be one of ${Object.keys(GAUSSIAN_MSE_ALPHA).join(', ')}, got ${bits} (input shape [${x.shape.join(', ')}])`);
  const step = noGrad(() => mul(sqrt(mean(square(x.detach()), -1, true)), (2 * a) / (2 ** bits - 1)).clamp(1e-8)); // [..., 1]
  const half = 2 ** (bits - 1);
  return fakeQuantize(x, step, 0.5, { qmin: 1 - half, qmax: half, estimator, trust, roundZeroPoint: false });
}

/**
 * y = Q_a(xH)·Q_w(WH)ᵀ + b: the Hadamard-rotated QAT linear layer. Shares the source Linear's
 * weight and bias tensors.
 * @example
 * const q = HadamardQuantLinear.from(new Linear(128, 64), { weightBits: 4, inputBits: 4 });
 * q.forward(x); // ≈ linear(x, W, b) at high bit-widths
 */
export class HadamardQuantLinear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly config: Required<Omit<HadamardQuantConfig, 'trust'>> & { trust: number | undefined };
  /** Quantization on/off (off: the plain linear layer), for FP → QAT phases. */
  enabled = true;

  constructor(src: Linear, cfg: HadamardQuantConfig) {
    super();
    this.inFeatures = src.inFeatures;
    this.outFeatures = src.outFeatures;
    this.weight = this.registerParameter('weight', src.weight);
    this.bias = this.registerParameter('bias', src.bias);
    const blockSize = cfg.blockSize ?? defaultBlock(src.inFeatures);
    if (src.inFeatures % blockSize) throw new Error(`HadamardQuantLinear: blockSize ${blockSize} must divide inFeatures ${src.inFeatures}`);
    const g = cfg.granularity ?? 'channel';
    if (g !== 'channel' && (!Number.isInteger(g.group) || g.group < 1 || src.inFeatures % g.group)) throw new Error(`HadamardQuantLinear: group size ${g.group} must divide inFeatures ${src.inFeatures}`);
    for (const b of [cfg.weightBits, cfg.inputBits ?? 0]) {
      if (b && GAUSSIAN_MSE_ALPHA[b] === undefined) throw new Error(`HadamardQuantLinear: bits must be one of ${Object.keys(GAUSSIAN_MSE_ALPHA).join(', ')}, got ${b}`);
    }
    this.config = { weightBits: cfg.weightBits, inputBits: cfg.inputBits ?? 0, estimator: cfg.estimator ?? 'trust', trust: cfg.trust, rotate: cfg.rotate ?? true, blockSize, granularity: g };
  }
  static from(l: Linear, cfg: HadamardQuantConfig): HadamardQuantLinear {
    return new HadamardQuantLinear(l, cfg);
  }
  #rot(t: Tensor): Tensor {
    return this.config.rotate ? hadamard(t, { blockSize: this.config.blockSize }) : t;
  }
  /** The rotated, fake-quantized weight WH (what multiplies the rotated input). */
  quantizedWeight(): Tensor {
    const c = this.config;
    const wh = this.#rot(this.weight); // [out, in]
    const g = c.granularity === 'channel' ? this.inFeatures : c.granularity.group;
    const w3 = wh.reshape([this.outFeatures, this.inFeatures / g, g]); // one RMS step per (row, group)
    return rmsQuantize(w3, c.weightBits, c.estimator, c.trust).reshape([this.outFeatures, this.inFeatures]);
  }
  forward(x: Tensor): Tensor {
    if (!this.enabled) return linear(x, this.weight, this.bias);
    const c = this.config;
    const xh = this.#rot(x); // [..., in]
    const xq = c.inputBits ? rmsQuantize(xh, c.inputBits, c.estimator, c.trust) : xh; // per token
    return linear(xq, this.quantizedWeight(), this.bias);
  }
  override extraRepr(): string {
    const c = this.config;
    return `${this.inFeatures}, ${this.outFeatures}, W${c.weightBits}A${c.inputBits || 'fp'}, ${c.rotate ? `hadamard${c.blockSize}` : 'no rotation'}, estimator=${c.estimator}`;
  }
}

/**
 * Replaces every Linear of `model` whose dotted name matches `match` (default all) and not
 * `skip` with a HadamardQuantLinear, in place; returns the replaced names.
 * @example prepareHadamardQAT(llama, { weightBits: 4, inputBits: 4 }, { skip: ['lm_head'] });
 */
export function prepareHadamardQAT(model: Module, cfg: HadamardQuantConfig, opts: { match?: NamePattern | NamePattern[]; skip?: NamePattern[] } = {}): string[] {
  const targets = [...model.namedModules()].filter(([n, m]) => n !== '' && m instanceof Linear && (opts.match === undefined || matchesName(n, opts.match)) && !(opts.skip && matchesName(n, opts.skip)));
  for (const [name, m] of targets) {
    const q = HadamardQuantLinear.from(m as Linear, cfg);
    q.train(m.training);
    replaceSubmodule(model, name, q);
  }
  return targets.map(([n]) => n);
}
