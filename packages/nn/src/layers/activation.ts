/**
 * @file Stateless layers as modules: activations (ReLU, GELU, SiLU, Tanh, Sigmoid, LeakyReLU,
 * Softmax) and Dropout, which reads the module's training flag.
 */
import { dropout, gelu, leakyRelu, relu, sigmoid, silu, softmax, tanh, type Generator, type Tensor } from '@qgrad/core';
import { Module } from '../module.js';

/**
 * max(x, 0) as a module, for `Sequential`.
 * @example new Sequential(new Linear(4, 8), new ReLU(), new Linear(8, 2));
 */
export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

/**
 * GELU, exact (erf) or with the tanh approximation (`approximate: 'tanh'`).
 * @example new Sequential(new Linear(64, 256), new GELU('tanh'), new Linear(256, 64));
 */
export class GELU extends Module {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') {
    super();
  }
  forward(x: Tensor): Tensor {
    return gelu(x, this.approximate);
  }
  override extraRepr(): string {
    return this.approximate === 'none' ? '' : `approximate='${this.approximate}'`;
  }
}

/**
 * x·σ(x), also known as swish.
 * @example new Sequential(new Linear(64, 256), new SiLU());
 */
export class SiLU extends Module {
  forward(x: Tensor): Tensor {
    return silu(x);
  }
}

/**
 * tanh as a module, for `Sequential`.
 * @example new Sequential(new Linear(4, 8), new Tanh());
 */
export class Tanh extends Module {
  forward(x: Tensor): Tensor {
    return tanh(x);
  }
}

/**
 * The logistic sigmoid as a module, for `Sequential`.
 * @example new Sequential(new Linear(4, 1), new Sigmoid());
 */
export class Sigmoid extends Module {
  forward(x: Tensor): Tensor {
    return sigmoid(x);
  }
}

/**
 * Leaky ReLU as a module (slope `negativeSlope` below 0).
 * @example new LeakyReLU(0.2).forward(tensor([-1, 1])); // [-0.2, 1]
 */
export class LeakyReLU extends Module {
  constructor(readonly negativeSlope = 0.01) {
    super();
  }
  forward(x: Tensor): Tensor {
    return leakyRelu(x, this.negativeSlope);
  }
  override extraRepr(): string {
    return `negativeSlope=${this.negativeSlope}`;
  }
}

/**
 * Softmax over `dim` as a module.
 * @example new Softmax(-1).forward(logits);
 */
export class Softmax extends Module {
  constructor(readonly dim: number) {
    super();
  }
  forward(x: Tensor): Tensor {
    return softmax(x, this.dim);
  }
  override extraRepr(): string {
    return `dim=${this.dim}`;
  }
}

/**
 * Inverted dropout while `training`, identity in eval mode (`nn.Dropout`).
 * @example const d = new Dropout(0.1); d.eval(); d.forward(x) === x; // true
 */
export class Dropout extends Module {
  constructor(readonly p = 0.5, readonly opts: { generator?: Generator } = {}) {
    super();
    if (!(p >= 0 && p <= 1)) throw new RangeError(`Dropout: probability has to be between 0 and 1, but got ${p}`);
  }
  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training, this.opts);
  }
  override extraRepr(): string {
    return `p=${this.p}`;
  }
}

/** The activations `MLP` (and `activationModule`) take by name. */
export type Activation = 'relu' | 'gelu' | 'geluTanh' | 'silu' | 'tanh' | 'sigmoid';

/**
 * The activation module named by `name` (used by MLP).
 * @example activationModule('gelu').forward(x);
 */
export function activationModule(name: Activation): Module & { forward(x: Tensor): Tensor } {
  switch (name) {
    case 'relu': return new ReLU();
    case 'gelu': return new GELU();
    case 'geluTanh': return new GELU('tanh');
    case 'silu': return new SiLU();
    case 'tanh': return new Tanh();
    case 'sigmoid': return new Sigmoid();
    default: { const never: never = name; throw new Error(`activation: unknown activation '${String(never)}'`); }
  }
}
