/**
 * @file FSQ (methods.md §9.2): each of D channels bounded to L_d levels and rounded with a
 * straight-through gradient; the implicit codebook is the product of the level sets, indexed in
 * mixed radix. No codebook, no commitment loss, no EMA. Chosen variant: the later code's shift
 * atanh(o/h) (so f(0) = 0) with h = (L − 1)(1 + ε)/2, ε = 1e−3: the paper's (1 − ε) makes o/h > 1
 * for L = 2, where atanh is NaN; both give the same L levels otherwise.
 */
import { fromTypedArray, quantRound, tensor, type Tensor } from '@qgrad/core';
import { Module } from '@qgrad/nn';
import { codeStats } from './codebook.js';

const EPS = 1e-3;

/**
 * Finite scalar quantization over the last dim (its size is levels.length).
 * @example
 * const fsq = new FSQ([8, 5, 5, 5]); // 1000 implicit codes
 * const { quantized, indices } = fsq.forward(z); // values in [−1, 1] on the grid
 */
export class FSQ extends Module {
  readonly levels: number[];
  readonly codebookSize: number;
  readonly #half: number[];
  readonly #offset: number[];
  readonly #shift: number[];
  readonly #width: number[];

  constructor(levels: number[]) {
    super();
    if (!levels.length || levels.some((l) => !Number.isInteger(l) || l < 2)) throw new Error(`FSQ: levels must be integers ≥ 2, got [${levels.join(', ')}]`);
    this.levels = [...levels];
    this.codebookSize = levels.reduce((a, b) => a * b, 1);
    this.#half = levels.map((l) => ((l - 1) * (1 + EPS)) / 2);
    this.#offset = levels.map((l) => (l % 2 === 0 ? 0.5 : 0));
    this.#shift = levels.map((_, i) => Math.atanh(this.#offset[i]! / this.#half[i]!));
    this.#width = levels.map((l) => Math.floor(l / 2));
  }

  #vec(v: number[], like: Tensor): Tensor {
    return tensor(v, { dtype: like.dtype });
  }

  /** f(z) = tanh(z + t)·h − o: each channel bounded so rounding gives exactly L_d values. */
  bound(z: Tensor): Tensor {
    return z.add(this.#vec(this.#shift, z)).tanh().mul(this.#vec(this.#half, z)).sub(this.#vec(this.#offset, z));
  }

  forward(z: Tensor): { quantized: Tensor; indices: Tensor; perplexity: number; usage: number } {
    const d = this.levels.length;
    if (z.shape[z.ndim - 1] !== d) throw new Error(`FSQ: expected ${d} channels in the last dim (one per level count), got shape [${z.shape.join(', ')}]`);
    const b = this.bound(z);
    const q = quantRound(b); // round, straight through
    const quantized = q.div(this.#vec(this.#width, z));
    const indices = this.codesToIndices(q.detach());
    const { perplexity, usage } = codeStats(indices, this.codebookSize);
    return { quantized, indices, perplexity, usage };
  }

  /** Integer codes [..., D] (in [−⌊L/2⌋, ⌈L/2⌉ − 1]) to indices: digits code + ⌊L/2⌋ in mixed radix. */
  codesToIndices(codes: Tensor): Tensor {
    const d = this.levels.length;
    const v = codes.dataSync();
    const out = new Int32Array(v.length / d);
    for (let i = 0; i < out.length; i++) {
      let idx = 0;
      for (let k = d - 1; k >= 0; k--) idx = idx * this.levels[k]! + (Math.round(v[i * d + k]!) + this.#width[k]!);
      out[i] = idx;
    }
    return fromTypedArray(out, codes.shape.slice(0, -1), 'int32');
  }

  /** Indices to the normalised code vectors [..., D] (what forward outputs). */
  indicesToCodes(indices: Tensor): Tensor {
    const d = this.levels.length;
    const v = indices.dataSync();
    const out = new Float32Array(v.length * d);
    for (let i = 0; i < v.length; i++) {
      let r = v[i]!;
      for (let k = 0; k < d; k++) {
        out[i * d + k] = ((r % this.levels[k]!) - this.#width[k]!) / this.#width[k]!;
        r = Math.floor(r / this.levels[k]!);
      }
    }
    return fromTypedArray(out, [...indices.shape, d], 'float32');
  }

  override extraRepr(): string {
    return `levels=[${this.levels.join(', ')}], codes=${this.codebookSize}`;
  }
}
