/**
 * @file VQ-VAE's codebook (methods.md §9.3): nearest-code lookup, straight-through output,
 * codebook + commitment losses or EMA updates (Sonnet's VectorQuantizerEMA, Laplace smoothing,
 * optional zero-debiasing), dead-code re-seeding from the batch, usage and perplexity; and SimVQ
 * (methods-2.md §5.1), whose codebook is one learned linear map of a frozen one.
 */
import { embedding, fromTypedArray, noGrad, oneHot, randn, type Generator, type Tensor } from '@qgrad/core';
import { Linear, Module, Parameter } from '@qgrad/nn';

/** What a vector quantizer returns for a batch of vectors z [..., d]. */
export interface VQOutput {
  /** z + sg(z_q − z): the codes' values forward, identity gradient to z. */
  quantized: Tensor;
  /** Code index per vector (int32, z's shape without the last dim). */
  indices: Tensor;
  /** The quantizer's training loss (commitment, plus the codebook term when the codebook is learned by gradient). */
  loss: Tensor;
  /** exp(entropy) of the batch's code histogram, in [1, K]. */
  perplexity: number;
  /** Fraction of the K codes used by the batch. */
  usage: number;
}

/**
 * Squared distances ‖z‖² − 2z·e + ‖e‖² of rows z [n, d] to codes e [K, d], and the nearest code per row.
 * @example const idx = nearestCode(z, codebook); // z [n, d], codebook [K, d] → [n]
 */
export function nearestCode(z: Tensor, codes: Tensor): Tensor {
  return noGrad(() => {
    const d = z.square().sum(-1, true).sub(z.matmul(codes.t()).mul(2)).add(codes.square().sum(-1).unsqueeze(0));
    return d.argmin(-1).to('int32');
  });
}

/**
 * Perplexity and usage of a batch's code indices over K codes.
 * @example const { perplexity, usage } = codeStats(indices, 512);
 */
export function codeStats(indices: Tensor, k: number): { perplexity: number; usage: number; counts: Float64Array } {
  const counts = new Float64Array(k);
  const v = indices.dataSync();
  for (let i = 0; i < v.length; i++) counts[v[i]!]!++;
  let h = 0;
  let used = 0;
  for (const c of counts) {
    if (c === 0) continue;
    used++;
    const p = c / v.length;
    h -= p * Math.log(p);
  }
  return { perplexity: Math.exp(h), usage: used / k, counts };
}

/** Options of `VectorQuantizer`: the commitment weight β and EMA codebook updates. */
export interface VectorQuantizerOptions {
  /** Commitment weight β on ‖z − sg(e)‖² (default 0.25). */
  beta?: number;
  /** EMA codebook updates instead of the codebook loss: decay γ (0.99), Laplace ε (1e−5), zero-debiasing (false). false: learned by gradient (default). */
  ema?: false | { decay?: number; eps?: number; debias?: boolean };
  /** In training, codes whose EMA count falls below this are re-seeded from random vectors of the batch (default 0: never). */
  deadCodeThreshold?: number;
  generator?: Generator;
}

/**
 * VQ-VAE vector quantizer with a K×d codebook (init N(0, 1)).
 * @example
 * const vq = new VectorQuantizer(512, 64, { ema: { decay: 0.99 }, deadCodeThreshold: 1 });
 * const { quantized, loss, perplexity } = vq.forward(encoder(x)); // [..., 64]
 * const total = mseLoss(decoder(quantized), x).add(loss);
 */
export class VectorQuantizer extends Module {
  codebook: Tensor;
  /** EMA state: counts N [K], sums m [K, d], and the steps taken (for debiasing). */
  emaCount: Tensor | null;
  emaSum: Tensor | null;
  emaSteps = 0;
  readonly beta: number;
  readonly ema: { decay: number; eps: number; debias: boolean } | null;
  readonly deadCodeThreshold: number;
  readonly #generator: Generator | undefined;

  constructor(readonly numCodes: number, readonly dim: number, o: VectorQuantizerOptions = {}) {
    super();
    this.beta = o.beta ?? 0.25;
    this.ema = o.ema ? { decay: o.ema.decay ?? 0.99, eps: o.ema.eps ?? 1e-5, debias: o.ema.debias ?? false } : null;
    this.deadCodeThreshold = o.deadCodeThreshold ?? 0;
    this.#generator = o.generator;
    const init = randn([numCodes, dim], { generator: o.generator });
    this.codebook = this.ema ? this.registerBuffer('codebook', init) : this.registerParameter('codebook', Parameter(init));
    this.emaCount = this.registerBuffer('emaCount', this.ema ? init.sum(-1).mul(0) : null);
    this.emaSum = this.registerBuffer('emaSum', this.ema ? init.clone() : null);
  }

  forward(z: Tensor): VQOutput {
    const d = this.dim;
    if (z.shape[z.ndim - 1] !== d) throw new Error(`VectorQuantizer: expected vectors of size ${d} in the last dim, got shape [${z.shape.join(', ')}]`);
    const flat = z.reshape([-1, d]);
    const idx = nearestCode(flat, this.codebook);
    if (this.training && this.ema) this.emaUpdate(flat, idx);
    const zq = embedding(idx, this.codebook).reshape([...z.shape]);
    const commit = z.sub(zq.detach()).square().mean().mul(this.beta);
    const loss = this.ema ? commit : commit.add(zq.sub(z.detach()).square().mean());
    const { perplexity, usage } = codeStats(idx, this.numCodes);
    return { quantized: z.add(zq.sub(z).detach()), indices: idx.reshape(z.shape.slice(0, -1)), loss, perplexity, usage };
  }

  /**
   * One EMA step from rows z [n, d] assigned to `indices`: N ← γN + (1−γ)n, m ← γm + (1−γ)Σz,
   * N smoothed to (N + ε)/(ΣN + Kε)·ΣN, e = m/N (with debiasing, N and m are divided by 1 − γ^t
   * first). Then codes with N below the dead-code threshold take random rows of z.
   */
  emaUpdate(z: Tensor, indices: Tensor): void {
    const { decay, eps, debias } = this.ema!;
    noGrad(() => {
      const hot = oneHot(indices.to('int32'), this.numCodes).to(z.dtype); // [n, K]
      this.emaCount!.mul_(decay).add_(hot.sum(0), 1 - decay);
      this.emaSum!.mul_(decay).add_(hot.t().matmul(z.detach()), 1 - decay);
      this.emaSteps++;
      const corr = debias ? 1 - decay ** this.emaSteps : 1;
      const n = this.emaCount!.div(corr);
      const total = n.sum();
      const smoothed = n.add(eps).div(total.add(this.numCodes * eps)).mul(total);
      this.codebook.copy_(this.emaSum!.div(corr).div(smoothed.unsqueeze(-1)));
      if (this.deadCodeThreshold > 0) this.#reseed(z, n);
    });
  }

  #reseed(z: Tensor, counts: Tensor): void {
    const c = counts.dataSync();
    const dead: number[] = [];
    for (let j = 0; j < c.length; j++) if (c[j]! < this.deadCodeThreshold) dead.push(j);
    if (!dead.length) return;
    const rows = z.shape[0]!;
    const g = this.#generator;
    const pick = dead.map(() => Math.floor((g ? g.random() : Math.random()) * rows));
    const zv = z.dataSync();
    const cb = this.codebook.dataSync().slice();
    const sum = this.emaSum!.dataSync().slice();
    const cnt = this.emaCount!.dataSync().slice();
    const d = this.dim;
    dead.forEach((j, i) => {
      for (let k = 0; k < d; k++) {
        cb[j * d + k] = zv[pick[i]! * d + k]!;
        sum[j * d + k] = cb[j * d + k]!; // restart as one vector of count 1
      }
      cnt[j] = 1;
    });
    const put = (t: Tensor, v: ArrayLike<number>) => t.copy_(fromTypedArray(Float64Array.from(v), [...t.shape], 'float64').to(t.dtype));
    put(this.codebook, cb);
    put(this.emaSum!, sum);
    put(this.emaCount!, cnt);
  }

  override extraRepr(): string {
    return `${this.numCodes}, ${this.dim}, beta=${this.beta}${this.ema ? `, ema=${this.ema.decay}` : ''}`;
  }
}

/**
 * SimVQ: a frozen codebook C [K, d] (N(0, 1/d)) seen through one learned Linear P (with bias):
 * codes E = P(C) each forward; loss β·‖z − sg(e)‖² + ‖e − sg(z)‖², whose second term trains P,
 * so every code moves, used or not.
 * @example const q = new SimVQ(1024, 64); const { quantized, loss } = q.forward(z);
 */
export class SimVQ extends Module {
  frozen: Tensor;
  projection: Linear;
  readonly beta: number;
  constructor(readonly numCodes: number, readonly dim: number, o: { beta?: number; generator?: Generator } = {}) {
    super();
    this.beta = o.beta ?? 0.25;
    this.frozen = this.registerBuffer('frozen', randn([numCodes, dim], { generator: o.generator }).mul(1 / Math.sqrt(dim)));
    this.projection = this.registerModule('projection', new Linear(dim, dim, { generator: o.generator }));
  }
  /** The effective codebook P(C) [K, d]. */
  codes(): Tensor {
    return this.projection.forward(this.frozen);
  }
  forward(z: Tensor): VQOutput {
    const flat = z.reshape([-1, this.dim]);
    const e = this.codes();
    const idx = nearestCode(flat, e);
    const zq = embedding(idx, e).reshape([...z.shape]);
    const loss = z.sub(zq.detach()).square().mean().mul(this.beta).add(zq.sub(z.detach()).square().mean());
    const { perplexity, usage } = codeStats(idx, this.numCodes);
    return { quantized: z.add(zq.sub(z).detach()), indices: idx.reshape(z.shape.slice(0, -1)), loss, perplexity, usage };
  }
}
