/**
 * @file Affine and lookup layers: Linear, Identity, Embedding, with PyTorch's default
 * initialisations (kaiming-uniform weights with a = √5 and U(±1/√fan_in) bias; N(0, 1) rows).
 */
import { embedding, linear, noGrad, zeros, type DType, type Generator, type Tensor } from '@qgrad/core';
import { kaimingUniform_, normal_, uniform_ } from '../init.js';
import { Module } from '../module.js';

/** Options every layer with parameters takes: the parameters' dtype and the generator of their initial values. */
export interface LayerOptions {
  /** Parameter dtype (default float32). */
  dtype?: DType;
  /** Random source for the initial values (default: core's default generator). */
  generator?: Generator;
}

/**
 * y = x·Wᵀ + b with W [outFeatures, inFeatures], as `nn.Linear`.
 * @example new Linear(3, 4).forward(randn([8, 3])).shape; // [8, 4]
 */
export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LayerOptions & { bias?: boolean } = {}) {
    super();
    const dtype = opts.dtype ?? 'float32';
    this.weight = this.registerParameter('weight', zeros([outFeatures, inFeatures], { dtype }));
    this.bias = this.registerParameter('bias', opts.bias ?? true ? zeros([outFeatures], { dtype }) : null);
    this.resetParameters(opts.generator);
  }
  /** PyTorch's init: kaiming-uniform (a = √5) weight, U(±1/√inFeatures) bias. */
  resetParameters(generator?: Generator): void {
    kaimingUniform_(this.weight, { a: Math.sqrt(5), generator });
    if (this.bias) {
      const bound = this.inFeatures > 0 ? 1 / Math.sqrt(this.inFeatures) : 0;
      uniform_(this.bias, -bound, bound, { generator });
    }
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, bias=${this.bias !== null}`;
  }
}

/**
 * Returns its input (a placeholder layer, as `nn.Identity`).
 * @example const head = useHead ? new Linear(64, 10) : new Identity();
 */
export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

/**
 * A table of `numEmbeddings` vectors of size `embeddingDim`, looked up by int32 indices
 * (`nn.Embedding`), initialised N(0, 1) with the `paddingIdx` row zeroed and kept out of the
 * gradient.
 * @example new Embedding(10, 4).forward(tensor([[1, 2]], { dtype: 'int32' })).shape; // [1, 2, 4]
 */
export class Embedding extends Module {
  weight: Tensor;
  readonly paddingIdx: number | undefined;
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, opts: LayerOptions & { paddingIdx?: number } = {}) {
    super();
    if (opts.paddingIdx !== undefined) {
      const p = opts.paddingIdx;
      if (!Number.isInteger(p) || p < -numEmbeddings || p >= numEmbeddings) throw new RangeError(`Embedding: paddingIdx ${p} must be within the ${numEmbeddings} embeddings`);
      this.paddingIdx = p < 0 ? p + numEmbeddings : p;
    }
    this.weight = this.registerParameter('weight', zeros([numEmbeddings, embeddingDim], { dtype: opts.dtype ?? 'float32' }));
    this.resetParameters(opts.generator);
  }
  resetParameters(generator?: Generator): void {
    normal_(this.weight, 0, 1, { generator });
    const p = this.paddingIdx;
    if (p !== undefined) noGrad(() => this.weight.select(0, p).zero_()); // a view: writes the row in place
  }
  forward(indices: Tensor): Tensor {
    return embedding(indices, this.weight, { paddingIdx: this.paddingIdx });
  }
  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}${this.paddingIdx !== undefined ? `, paddingIdx=${this.paddingIdx}` : ''}`;
  }
}
