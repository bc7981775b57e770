/**
 * @file Losses: core's loss functions re-exported, and the same as modules (CrossEntropyLoss,
 * MSELoss, L1Loss, NLLLoss, KLDivLoss, BCEWithLogitsLoss, HuberLoss) holding their options.
 */
import {
  binaryCrossEntropyWithLogits, crossEntropy, huberLoss, klDiv, l1Loss, mseLoss, nllLoss,
  type BceOptions, type CrossEntropyOptions, type KlDivOptions, type NllLossOptions, type ReductionOptions, type Tensor,
} from '@qgrad/core';
import { Module } from './module.js';

export {
  binaryCrossEntropy, binaryCrossEntropyWithLogits, crossEntropy, huberLoss, klDiv, l1Loss, mseLoss, nllLoss, smoothL1Loss,
} from '@qgrad/core';

/** A loss module: `forward(input, target)` with the options given at construction. */
abstract class Loss<O extends object> extends Module {
  constructor(readonly opts: O = {} as O) {
    super();
  }
  abstract forward(input: Tensor, target: Tensor): Tensor;
  override extraRepr(): string {
    return Object.entries(this.opts).filter(([, v]) => !(v && typeof v === 'object')).map(([k, v]) => `${k}=${v}`).join(', ');
  }
}

/**
 * Cross entropy of logits [N, C, …] against int32 class indices or class probabilities.
 * @example new CrossEntropyLoss({ labelSmoothing: 0.1 }).forward(logits, labels);
 */
export class CrossEntropyLoss extends Loss<CrossEntropyOptions> {
  forward(input: Tensor, target: Tensor): Tensor {
    return crossEntropy(input, target, this.opts);
  }
}
/**
 * Negative log-likelihood of log-probabilities at class targets, as a module (`nllLoss`).
 * @example new NLLLoss().forward(logSoftmax(logits, 1), labels);
 */
export class NLLLoss extends Loss<NllLossOptions> {
  forward(input: Tensor, target: Tensor): Tensor {
    return nllLoss(input, target, this.opts);
  }
}
/**
 * Mean squared error (reduction 'mean' by default).
 * @example new MSELoss().forward(prediction, target);
 */
export class MSELoss extends Loss<ReductionOptions> {
  forward(input: Tensor, target: Tensor): Tensor {
    return mseLoss(input, target, this.opts);
  }
}
/**
 * Mean absolute error as a module (`l1Loss`).
 * @example new L1Loss().forward(prediction, target);
 */
export class L1Loss extends Loss<ReductionOptions> {
  forward(input: Tensor, target: Tensor): Tensor {
    return l1Loss(input, target, this.opts);
  }
}
/**
 * Huber loss as a module (`huberLoss`): quadratic below `delta`, linear above.
 * @example new HuberLoss({ delta: 0.5 }).forward(prediction, target);
 */
export class HuberLoss extends Loss<ReductionOptions & { delta?: number }> {
  forward(input: Tensor, target: Tensor): Tensor {
    return huberLoss(input, target, this.opts);
  }
}
/**
 * KL(target ‖ exp(input)) for distillation; use `reduction: 'batchmean'` for the true KL.
 * @example new KLDivLoss({ reduction: 'batchmean' }).forward(logSoftmax(student, -1), softmax(teacher, -1));
 */
export class KLDivLoss extends Loss<KlDivOptions> {
  forward(input: Tensor, target: Tensor): Tensor {
    return klDiv(input, target, this.opts);
  }
}
/**
 * Binary cross-entropy of logits as a module (`binaryCrossEntropyWithLogits`), stable for any logit.
 * @example new BCEWithLogitsLoss().forward(logits, targets);
 */
export class BCEWithLogitsLoss extends Loss<BceOptions & { posWeight?: Tensor | null }> {
  forward(input: Tensor, target: Tensor): Tensor {
    return binaryCrossEntropyWithLogits(input, target, this.opts);
  }
}
