/**
 * @file `sparsify(model, { pattern: '2:4', method, targets })`: attaches a 2:4 mask to the chosen
 * Linear / QuantLinear layers (plain Linear layers become SparseLinear), returns a `Sparsifier`
 * whose `step(lr)` drives CAST's schedule; `hardMasks` freezes the final masks.
 */
import { isGradEnabled, keep, linear, noGrad, sparse24Linear, sparse24Weight, type Sparse24Weight, type Tensor } from '@qgrad/core';
import { Linear, type Module } from '@qgrad/nn';
import { QuantLinear } from '../qat/modules.js';
import { matchesName, replaceSubmodule, type NamePattern } from '../qat/prepare.js';
import { SemiStructuredMask, type CastOptions, type SparsityMethod, type SparsityPattern } from './mask.js';

/**
 * A Linear whose weight goes through a 2:4 mask: y = x·maskWeight(W)ᵀ + b. Still a Linear, so
 * `prepareQAT` afterwards turns it into a QuantLinear that keeps the same mask (mask first, then
 * the weight quantizer). In eval mode with a hardened mask, no gradient wanted and at most
 * `sparseMaxRows` rows of x, the forward multiplies by the kept half of W ⊙ M only
 * (`sparse24Linear` on a cached compressed weight; within float32 summation error of the dense
 * product).
 * @example
 * const l = SparseLinear.from(new Linear(16, 8), new SemiStructuredMask([8, 16], 'magnitude', 'float32'));
 * l.forward(x); // x·(W ⊙ top2(|W|))ᵀ + b
 */
export class SparseLinear extends Linear {
  weightMask: SemiStructuredMask;
  /**
   * Most rows of x (tokens) the eval forward runs on the 2:4 kernel; more take the dense product.
   * Measured on wasm at the tiny-Llama shapes (two runs, a loaded 2-core machine), dense time /
   * 2:4 time: 0.7–13× for one row (decode; median 5.6, single figures move 2× run to run there),
   * 1.03–2 for 2–16 rows, 0.8–1.3 from 32 rows on, where
   * the dense micro-kernel's reuse of each x load over eight outputs catches up with half the
   * multiply-adds.
   */
  sparseMaxRows = 16;
  #sparse: { weight: Sparse24Weight; key: unknown[] } | null = null;
  constructor(src: Linear, mask: SemiStructuredMask) {
    super(0, 0, { bias: false });
    Object.assign(this, { inFeatures: src.inFeatures, outFeatures: src.outFeatures });
    this.weight = src.weight;
    this.bias = src.bias;
    this.weightMask = this.registerModule('weightMask', mask) as SemiStructuredMask;
  }
  /** Wraps a Linear (same weight and bias tensors, so optimizer state stays valid). */
  static from(src: Linear, mask: SemiStructuredMask): SparseLinear {
    const s = new SparseLinear(src, mask);
    s.train(src.training);
    return s;
  }
  /** The weight the forward multiplies by. */
  maskedWeight(): Tensor {
    return this.weightMask.maskWeight(this.weight);
  }
  /**
   * W ⊙ M in 2:4 compressed form, built once per weight and mask version (kept past the tidy of
   * the forward that builds it). Needs a hardened mask.
   * @example sp.harden(); layer.eval(); const sw = layer.sparseWeight(); // sw.values [out, in/2]
   */
  sparseWeight(): Sparse24Weight {
    const m = this.weightMask;
    if (!m.hardened) throw new Error(`SparseLinear.sparseWeight: the mask is not hardened (call hardMasks or Sparsifier.harden first); until then more than two weights per group of four may be non-zero`);
    const key = [this.weight, this.weight.version, m.mask, m.mask.version];
    if (this.#sparse && key.every((k, i) => k === this.#sparse!.key[i])) return this.#sparse.weight;
    const sw = noGrad(() => sparse24Weight(this.maskedWeight()));
    const weight = { ...sw, values: keep(sw.values), indices: keep(sw.indices) };
    this.#sparse = { weight, key };
    return weight;
  }
  override forward(x: Tensor): Tensor {
    const rows = x.numel() / Math.max(this.inFeatures, 1);
    const needsGrad = isGradEnabled() && (x.requiresGrad || this.weight.requiresGrad || Boolean(this.bias?.requiresGrad));
    if (!this.training && this.weightMask.hardened && !needsGrad && rows <= this.sparseMaxRows) return sparse24Linear(x, this.sparseWeight(), this.bias);
    return linear(x, this.maskedWeight(), this.bias);
  }
  override extraRepr(): string {
    return `${super.extraRepr()}, sparsity=${this.weightMask.pattern} ${this.weightMask.method}`;
  }
}

/** Which layers `sparsify` masks and how. */
export interface SparsifyConfig {
  /** The N:M pattern; only '2:4'. */
  pattern: SparsityPattern;
  /** 'cast' (continuous: decay of the pruned entries, see SemiStructuredMask) or 'magnitude' (hard top-2 each forward, straight-through). */
  method: SparsityMethod;
  /** Dotted module names to sparsify (globs as in prepareQAT, or RegExps); default every Linear / QuantLinear except the model itself. */
  targets?: NamePattern | NamePattern[];
  /** Names left dense, checked first (e.g. the LM head). */
  skip?: NamePattern[];
  /** CAST's schedule (ignored for magnitude). */
  cast?: CastOptions;
}

type Sparsified = SparseLinear | QuantLinear;

/**
 * The masked layers of a model and CAST's per-step hook. Call `step(lr)` right after each
 * optimizer step (with the learning rate of that step); `harden()` at the end of training.
 * @example
 * const sp = sparsify(model, { pattern: '2:4', method: 'cast', skip: ['head'] });
 * for (const batch of data) { loss(batch).backward(); opt.step(); sp.step(opt.lr); opt.zeroGrad(); }
 * sp.harden(); // weights now hold exact 2:4 zeros
 */
export class Sparsifier {
  constructor(readonly layers: ReadonlyMap<string, Sparsified>) {}
  /** CAST's decay and mask refresh on every masked layer (no-op for magnitude). */
  step(lr: number): void {
    for (const l of this.layers.values()) (l.weightMask as SemiStructuredMask).step(l.weight, lr);
  }
  /** Freezes every mask (see `hardMasks`). */
  harden(): void {
    for (const l of this.layers.values()) l.weightMask!.harden(l.weight);
  }
  /** Fraction of the masked layers' weights that are exactly zero. */
  zeroFraction(): number {
    let zeros = 0;
    let n = 0;
    for (const l of this.layers.values()) {
      const w = l.weight.dataSync();
      for (let i = 0; i < w.length; i++) if (w[i] === 0) zeros++;
      n += w.length;
    }
    return n ? zeros / n : 0;
  }
}

/**
 * Attaches a 2:4 mask to the Linear and QuantLinear layers of `model` that `targets` select, in
 * place. A QuantLinear keeps its quantizers and masks before quantizing (any weight quantizer: a
 * grid with 0 on it keeps the pruned entries at exactly 0); a plain Linear becomes a SparseLinear.
 *
 * CAST (methods-2.md §8) is reconstructed from summaries, as the notes say: the forward stays
 * dense, W_eff = g ⊙ W with a learnable per-row gain; the mask (top-2 |w| per group of 4) is
 * recomputed every 10 steps, and the pruned entries alone are shrunk by a proximal L1 step of
 * lr·λ_t·mean|W| with λ_t ramped linearly; `harden` folds g into W and writes the zeros.
 * @example
 * prepareQAT(model, { default: { weight: { grid: 'int', bits: 4, granularity: { group: 32 } } }, skip: ['head'] });
 * const sp = sparsify(model, { pattern: '2:4', method: 'cast', skip: ['head'], cast: { rampSteps: 500 } });
 */
export function sparsify(model: Module, config: SparsifyConfig): Sparsifier {
  if (config.pattern !== '2:4') throw new Error(`sparsify: pattern must be '2:4', got ${JSON.stringify(config.pattern)}`);
  const chosen: [string, Linear | QuantLinear][] = [];
  for (const [name, m] of model.namedModules()) {
    if (name === '' || !(m instanceof Linear || m instanceof QuantLinear)) continue;
    if (config.skip && matchesName(name, config.skip)) continue;
    if (config.targets !== undefined && !matchesName(name, config.targets)) continue;
    chosen.push([name, m]);
  }
  const layers = new Map<string, Sparsified>();
  for (const [name, m] of chosen) {
    const who = `sparsify: layer '${name}' (${m.constructor.name})`;
    if ((m as { weightMask?: unknown }).weightMask) throw new Error(`${who} already has a sparsity mask`);
    const dtype = m.weight.dtype === 'float64' ? 'float64' : 'float32';
    const mask = new SemiStructuredMask(m.weight.shape, config.method, dtype, config.cast, who);
    noGrad(() => mask.refresh(m.weight));
    if (m instanceof QuantLinear) {
      m.weightMask = mask;
      layers.set(name, m);
    } else {
      const s = SparseLinear.from(m, mask);
      replaceSubmodule(model, name, s);
      layers.set(name, s);
    }
  }
  if (layers.size === 0) throw new Error(`sparsify: no Linear or QuantLinear layer matched targets ${String(config.targets ?? '(all)')}${config.skip ? ` minus skip ${config.skip.map(String).join(', ')}` : ''}`);
  return new Sparsifier(layers);
}

/**
 * Freezes every sparsity mask in a model: CAST's gains are folded into the weights and the pruned
 * entries become exact zeros in the weight tensors, so each group of four inputs holds at most two
 * non-zeros. Returns the names of the layers hardened.
 * @example sparsify(model, { pattern: '2:4', method: 'magnitude' }); train(model); hardMasks(model);
 */
export function hardMasks(model: Module): string[] {
  const names: string[] = [];
  for (const [name, m] of model.namedModules()) {
    const wm = (m as { weightMask?: SemiStructuredMask | null }).weightMask;
    if (!(m instanceof SparseLinear || m instanceof QuantLinear) || !wm) continue;
    wm.harden(m.weight);
    names.push(name);
  }
  return names;
}
