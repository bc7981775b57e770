/**
 * @file Normalisation layers: LayerNorm, RMSNorm, GroupNorm (affine weights start at ones,
 * biases at zeros, as in PyTorch). The arithmetic is core's layerNorm / rmsNorm / groupNorm.
 */
import { groupNorm, layerNorm, ones, rmsNorm, zeros, type DType, type Tensor } from '@qgrad/core';
import { Module } from '../module.js';

const asShape = (s: number | number[]) => (typeof s === 'number' ? [s] : [...s]);

/**
 * Normalises over the trailing `normalizedShape` dims (`nn.LayerNorm`).
 * @example new LayerNorm(16).forward(randn([2, 5, 16])).shape; // [2, 5, 16]
 */
export class LayerNorm extends Module {
  readonly normalizedShape: number[];
  readonly eps: number;
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(normalizedShape: number | number[], opts: { eps?: number; elementwiseAffine?: boolean; bias?: boolean; dtype?: DType } = {}) {
    super();
    this.normalizedShape = asShape(normalizedShape);
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.elementwiseAffine ?? true;
    const dtype = opts.dtype ?? 'float32';
    this.weight = this.registerParameter('weight', affine ? ones(this.normalizedShape, { dtype }) : null);
    this.bias = this.registerParameter('bias', affine && (opts.bias ?? true) ? zeros(this.normalizedShape, { dtype }) : null);
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.normalizedShape, this.weight, this.bias, this.eps);
  }
  override extraRepr(): string {
    return `[${this.normalizedShape.join(', ')}], eps=${this.eps}, elementwiseAffine=${this.weight !== null}`;
  }
}

/**
 * Root-mean-square normalisation over the trailing dims (`nn.RMSNorm`, as in Llama). An omitted
 * `eps` means the machine epsilon of the input dtype, PyTorch's default; Llama uses 1e-5 or 1e-6.
 * @example new RMSNorm(16, { eps: 1e-6 }).forward(randn([2, 16])).shape; // [2, 16]
 */
export class RMSNorm extends Module {
  readonly normalizedShape: number[];
  readonly eps: number | null;
  weight: Tensor | null;
  constructor(normalizedShape: number | number[], opts: { eps?: number | null; elementwiseAffine?: boolean; dtype?: DType } = {}) {
    super();
    this.normalizedShape = asShape(normalizedShape);
    this.eps = opts.eps ?? null;
    this.weight = this.registerParameter('weight', opts.elementwiseAffine ?? true ? ones(this.normalizedShape, { dtype: opts.dtype ?? 'float32' }) : null);
  }
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.normalizedShape, this.weight, this.eps);
  }
  override extraRepr(): string {
    return `[${this.normalizedShape.join(', ')}], eps=${this.eps}, elementwiseAffine=${this.weight !== null}`;
  }
}

/**
 * Normalises groups of channels of [N, C, *] inputs (`nn.GroupNorm`), per-channel affine.
 * @example new GroupNorm(2, 8).forward(randn([4, 8, 5, 5])).shape; // [4, 8, 5, 5]
 */
export class GroupNorm extends Module {
  readonly eps: number;
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(readonly numGroups: number, readonly numChannels: number, opts: { eps?: number; affine?: boolean; dtype?: DType } = {}) {
    super();
    if (!Number.isInteger(numGroups) || numGroups < 1 || numChannels % numGroups !== 0) {
      throw new Error(`GroupNorm: numChannels ${numChannels} must be divisible by numGroups ${numGroups}`);
    }
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.affine ?? true;
    const dtype = opts.dtype ?? 'float32';
    this.weight = this.registerParameter('weight', affine ? ones([numChannels], { dtype }) : null);
    this.bias = this.registerParameter('bias', affine ? zeros([numChannels], { dtype }) : null);
  }
  forward(x: Tensor): Tensor {
    return groupNorm(x, this.numGroups, this.weight, this.bias, this.eps);
  }
  override extraRepr(): string {
    return `${this.numGroups}, ${this.numChannels}, eps=${this.eps}, affine=${this.weight !== null}`;
  }
}
