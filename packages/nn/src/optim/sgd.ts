/**
 * @file SGD with momentum, dampening, Nesterov momentum and L2 weight decay, with
 * `torch.optim.SGD`'s update formula.
 */
import type { Tensor } from '@qgrad/core';
import { Optimizer, type ParamGroup, type ParamGroupSpec, type ParamState } from './optimizer.js';

/** Options of `SGD`, as PyTorch: learning rate, momentum, dampening, coupled weight decay, Nesterov and maximize. */
export interface SGDOptions {
  lr: number;
  momentum: number;
  dampening: number;
  /** L2 penalty added to the gradient (coupled, unlike AdamW). */
  weightDecay: number;
  nesterov: boolean;
  /** Ascend instead of descend. */
  maximize: boolean;
}

/**
 * Stochastic gradient descent. With g = ∇ + wd·p: b ← g on the first step, then
 * b ← μ·b + (1 − dampening)·g; the step uses g + μ·b (Nesterov) or b; p ← p − lr·step.
 * @example const opt = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9, nesterov: true });
 */
export class SGD extends Optimizer<SGDOptions> {
  constructor(params: Tensor[] | ParamGroupSpec<SGDOptions>[], opts: Partial<SGDOptions> = {}) {
    const d: SGDOptions = { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false, ...opts };
    if (d.lr < 0) throw new RangeError(`SGD: invalid learning rate ${d.lr}`);
    if (d.nesterov && (d.momentum <= 0 || d.dampening !== 0)) throw new Error('SGD: Nesterov momentum requires a momentum and zero dampening');
    super(params, d);
  }
  protected update(p: Tensor, grad: Tensor, s: ParamState, o: ParamGroup<SGDOptions>): void {
    let g = o.maximize ? grad.neg() : grad;
    if (o.weightDecay) g = g.add(p, o.weightDecay);
    if (o.momentum) {
      let buf = s.momentumBuffer as Tensor | undefined;
      if (!buf) s.momentumBuffer = buf = g.clone();
      else buf.mul_(o.momentum).add_(g, 1 - o.dampening);
      g = o.nesterov ? g.add(buf, o.momentum) : buf;
    }
    p.add_(g, -o.lr);
  }
}
