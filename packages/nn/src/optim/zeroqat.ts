/**
 * @file ZeroQAT (methods.md §10, after MeZO): a forward-only optimizer. Each step draws a seed,
 * perturbs every parameter in place by ±εz with z ~ N(0, I) regenerated from that seed (never
 * stored), takes the two-point SPSA projection g = (L(θ+εz) − L(θ−εz))/(2ε), restores θ and
 * moves θ by −lr·(g·z + wd·θ) replaying the same seed. No backward pass, no activations kept, so
 * quantizers need no gradient estimator: weights are re-quantized by the model's forward.
 */
import { Generator, noGrad, randn, tidy, type Tensor } from '@qgrad/core';
import { tensorBytes } from './memory.js';

/** Options of `ZeroQAT`: learning rate, perturbation size ε and weight decay. */
export interface ZeroQATOptions {
  /** Learning rate (default 1e−6, the reference's full fine-tuning value; LoRA used 1e−4). */
  lr: number;
  /** Perturbation size ε (default 1e−3). */
  eps: number;
  /** Decoupled weight decay added to the projected gradient, as MeZO (default 0). */
  weightDecay: number;
  /** Seed of the generator that draws each step's seed (default 0). */
  seed: number;
}

/** A loss to evaluate at the current parameters: a number or a one-element tensor. */
export type LossClosure = () => number | Tensor;

const value = (l: number | Tensor) => (typeof l === 'number' ? l : l.item());

/**
 * A forward-only (zeroth-order) optimizer: each `step` estimates the gradient from two perturbed losses, so no backward pass and no gradient estimator is needed.
 * @example
 * const opt = new ZeroQAT(model.parameters(), { lr: 1e-4, eps: 1e-3 });
 * for (const [x, y] of batches) opt.step(() => crossEntropy(model.forward(x), y));
 */
export class ZeroQAT {
  readonly options: ZeroQATOptions;
  readonly params: Tensor[];
  #seeds: Generator;
  /** Steps taken. */
  steps = 0;

  constructor(params: Tensor[], opts: Partial<ZeroQATOptions> = {}) {
    if (!params.length) throw new Error('ZeroQAT: got an empty parameter list');
    this.params = [...params];
    this.options = { lr: 1e-6, eps: 1e-3, weightDecay: 0, seed: 0, ...opts };
    if (!(this.options.eps > 0)) throw new Error(`ZeroQAT: eps must be > 0, got ${this.options.eps}`);
    this.#seeds = new Generator(this.options.seed);
  }

  /**
   * θ ← θ + scale·z(seed), one parameter at a time (z regenerated, so at most one parameter-sized
   * temporary: each z is released as soon as it is added, not left to the garbage collector).
   */
  perturb(seed: number, scale: number): void {
    const g = new Generator(seed);
    noGrad(() => {
      for (const p of this.params) tidy('ZeroQAT.perturb', () => void p.add_(randn([...p.shape], { generator: g, dtype: p.dtype }), scale));
    });
  }

  /**
   * The two-point SPSA projection g = (L(θ+εz) − L(θ−εz))/(2ε) with z from `seed`; θ is restored
   * (to rounding: θ + εz − 2εz + εz). The gradient estimate is g·z.
   */
  estimate(loss: LossClosure, seed: number): { projectedGrad: number; lossPlus: number; lossMinus: number } {
    const eps = this.options.eps;
    const ev = () => noGrad(() => value(loss()));
    this.perturb(seed, eps);
    const lossPlus = ev();
    this.perturb(seed, -2 * eps);
    const lossMinus = ev();
    this.perturb(seed, eps);
    return { projectedGrad: (lossPlus - lossMinus) / (2 * eps), lossPlus, lossMinus };
  }

  /** One step; returns the step's seed, projected gradient and the mean of the two losses. */
  step(loss: LossClosure): { seed: number; projectedGrad: number; loss: number } {
    const seed = this.#seeds.randint(0, 2 ** 31 - 1);
    const { projectedGrad, lossPlus, lossMinus } = this.estimate(loss, seed);
    const { lr, weightDecay } = this.options;
    noGrad(() => {
      if (weightDecay) for (const p of this.params) p.mul_(1 - lr * weightDecay);
    });
    this.perturb(seed, -lr * projectedGrad);
    this.steps++;
    return { seed, projectedGrad, loss: (lossPlus + lossMinus) / 2 };
  }

  /**
   * Bytes ZeroQAT keeps beside the parameters (the largest parameter's temporary z, in its dtype)
   * next to what backprop QAT with Adam keeps (gradients and two moments: 3× the parameters, in
   * their dtypes), activations aside. Widths come from nn's `tensorBytes` (int8 is 1 byte).
   * @example new ZeroQAT([zeros([4, 8])]).memory(); // { parameterBytes: 128, zeroQatExtraBytes: 128, backpropAdamExtraBytes: 384 }
   */
  memory(): { parameterBytes: number; zeroQatExtraBytes: number; backpropAdamExtraBytes: number } {
    const parameterBytes = tensorBytes(this.params);
    return { parameterBytes, zeroQatExtraBytes: Math.max(...this.params.map((p) => tensorBytes([p]))), backpropAdamExtraBytes: 3 * parameterBytes };
  }
}
