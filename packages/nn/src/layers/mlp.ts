/**
 * @file Feed-forward blocks: MLP (Linear → activation → dropout → Linear, as in GPT/ViT) and
 * SwiGLU (Llama's gated feed-forward, down(silu(gate(x)) ⊙ up(x))).
 */
import { swiglu, type Tensor } from '@qgrad/core';
import { Module } from '../module.js';
import { activationModule, Dropout, type Activation } from './activation.js';
import { Linear, type LayerOptions } from './linear.js';

/** Options of `MLP`: the output size, activation, biases and dropout, and the layers' options. */
export interface MLPOptions extends LayerOptions {
  /** Output size (default: inFeatures). */
  outFeatures?: number;
  activation?: Activation;
  bias?: boolean;
  /** Dropout after the activation (default 0). */
  dropout?: number;
}

/**
 * Two-layer perceptron: fc2(dropout(act(fc1(x)))).
 * @example new MLP(16, 64).forward(randn([2, 5, 16])).shape; // [2, 5, 16]
 */
export class MLP extends Module {
  fc1: Linear;
  act: Module & { forward(x: Tensor): Tensor };
  drop: Dropout;
  fc2: Linear;
  constructor(inFeatures: number, hiddenFeatures: number, opts: MLPOptions = {}) {
    super();
    const layer = { bias: opts.bias ?? true, dtype: opts.dtype, generator: opts.generator };
    this.fc1 = this.registerModule('fc1', new Linear(inFeatures, hiddenFeatures, layer));
    this.act = this.registerModule('act', activationModule(opts.activation ?? 'gelu'));
    this.drop = this.registerModule('drop', new Dropout(opts.dropout ?? 0));
    this.fc2 = this.registerModule('fc2', new Linear(hiddenFeatures, opts.outFeatures ?? inFeatures, layer));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.drop.forward(this.act.forward(this.fc1.forward(x))));
  }
}

/**
 * Llama's gated feed-forward: downProj(silu(gateProj(x)) ⊙ upProj(x)), no biases by default.
 * @example new SwiGLU(16, 44).forward(randn([2, 5, 16])).shape; // [2, 5, 16]
 */
export class SwiGLU extends Module {
  gateProj: Linear;
  upProj: Linear;
  downProj: Linear;
  constructor(dim: number, hiddenDim: number, opts: LayerOptions & { bias?: boolean } = {}) {
    super();
    const layer = { bias: opts.bias ?? false, dtype: opts.dtype, generator: opts.generator };
    this.gateProj = this.registerModule('gateProj', new Linear(dim, hiddenDim, layer));
    this.upProj = this.registerModule('upProj', new Linear(dim, hiddenDim, layer));
    this.downProj = this.registerModule('downProj', new Linear(hiddenDim, dim, layer));
  }
  forward(x: Tensor): Tensor {
    return this.downProj.forward(swiglu(this.gateProj.forward(x), this.upProj.forward(x)));
  }
}
