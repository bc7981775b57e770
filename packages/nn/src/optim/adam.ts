/**
 * @file Adam (L2 weight decay folded into the gradient, optional AMSGrad) and AdamW (decoupled
 * weight decay), with `torch.optim.Adam` / `AdamW`'s update formulas and operation order.
 */
import { adamStep_, zerosLike, type Tensor } from '@qgrad/core';
import { lerp_, Optimizer, type ParamGroup, type ParamGroupSpec, type ParamState } from './optimizer.js';

/** Options of `Adam` and `AdamW`, as PyTorch: learning rate, betas, eps, weight decay and AMSGrad. */
export interface AdamOptions {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  amsgrad: boolean;
  maximize: boolean;
}

/**
 * One Adam step as PyTorch computes it (single-tensor path), g negated first when maximizing:
 * m ← lerp(m, g, 1−β₁); v ← β₂·v + (1−β₂)·g²; p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε).
 * Weight decay `wd`: AdamW's p·(1 − lr·wd) when `decoupled`, Adam's L2 term g + wd·p otherwise
 * (all inside the fused kernel's pass when it runs).
 */
function adamStep(p: Tensor, g: Tensor, s: ParamState, o: AdamOptions, wd = 0, decoupled = false): void {
  const [b1, b2] = o.betas;
  if (s.step === undefined) {
    s.step = 0;
    s.expAvg = zerosLike(p);
    s.expAvgSq = zerosLike(p);
    if (o.amsgrad) s.maxExpAvgSq = zerosLike(p);
  }
  const step = (s.step as number) + 1;
  s.step = step;
  const m = s.expAvg as Tensor;
  const v = s.expAvgSq as Tensor;
  if (!o.amsgrad && adamStep_(p, g, m, v, { lr: o.lr, beta1: b1, beta2: b2, eps: o.eps, weightDecay: wd, decoupled, maximize: o.maximize, step })) return;
  if (o.maximize) g = g.neg();
  if (decoupled && wd) p.mul_(1 - o.lr * wd);
  else if (wd) g = g.add(p, wd); // Adam's L2 term
  lerp_(m, g, 1 - b1);
  v.mul_(b2).add_(g.mul(1 - b2).mul(g)); // addcmul_(g, g, value = 1 − β₂)
  const bc1 = 1 - b1 ** step;
  const bc2Sqrt = Math.sqrt(1 - b2 ** step);
  let second = v;
  if (o.amsgrad) {
    const vMax = s.maxExpAvgSq as Tensor;
    vMax.copy_(vMax.maximum(v));
    second = vMax;
  }
  const denom = second.sqrt().div(bc2Sqrt).add(o.eps);
  p.add_(m.mul(-o.lr / bc1).div(denom)); // addcdiv_(m, denom, value = −lr / bc1)
}

/**
 * Adam. `weightDecay` adds wd·p to the gradient (L2, coupled); for decoupled decay use AdamW.
 * @example const opt = new Adam(model.parameters(), { lr: 1e-3 });
 */
export class Adam extends Optimizer<AdamOptions> {
  constructor(params: Tensor[] | ParamGroupSpec<AdamOptions>[], opts: Partial<AdamOptions> = {}) {
    super(params, checkAdam('Adam', { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, amsgrad: false, maximize: false, ...opts }));
  }
  protected update(p: Tensor, grad: Tensor, s: ParamState, o: ParamGroup<AdamOptions>): void {
    adamStep(p, grad, s, o, o.weightDecay, false);
  }
}

/**
 * AdamW: Adam with decoupled weight decay, p ← p·(1 − lr·wd) before the Adam step
 * (Loshchilov & Hutter). Default weightDecay 0.01, as PyTorch.
 * @example const opt = new AdamW([{ params: decay, weightDecay: 0.1 }, { params: noDecay, weightDecay: 0 }], { lr: 3e-4 });
 */
export class AdamW extends Optimizer<AdamOptions> {
  constructor(params: Tensor[] | ParamGroupSpec<AdamOptions>[], opts: Partial<AdamOptions> = {}) {
    super(params, checkAdam('AdamW', { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, amsgrad: false, maximize: false, ...opts }));
  }
  protected update(p: Tensor, grad: Tensor, s: ParamState, o: ParamGroup<AdamOptions>): void {
    adamStep(p, grad, s, o, o.weightDecay, true);
  }
}

function checkAdam(name: string, o: AdamOptions): AdamOptions {
  if (!(o.lr >= 0)) throw new RangeError(`${name}: invalid learning rate ${o.lr}`);
  if (!(o.eps >= 0)) throw new RangeError(`${name}: invalid epsilon ${o.eps}`);
  o.betas.forEach((b, i) => {
    if (!(b >= 0 && b < 1)) throw new RangeError(`${name}: invalid beta parameter at index ${i}: ${b}`);
  });
  return { ...o, betas: [...o.betas] as [number, number] };
}
