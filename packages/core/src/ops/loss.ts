/**
 * @file Loss functions with PyTorch's defaults and reductions: crossEntropy (class indices or
 * probabilities, weights, ignoreIndex, label smoothing), nllLoss, mse/l1/huber/smoothL1, klDiv
 * and the binary cross entropies. All are composites of other tensor ops (no backward here).
 */
import { isFloat } from '@qgrad/kernels';
import { Tensor } from '../tensor.js';
import { abs, add, cast, clamp, div, exp, gt, log, lt, mul, ne, neg, softplus, sub, where } from './elementwise.js';
import { mean, sum } from './reduce.js';
import { gather, indexSelect } from './indexing.js';
import { reshape, squeeze, unsqueeze } from './movement.js';
import { logSoftmax } from './nn.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** How a loss reduces its per-element values: their mean, their sum, or 'none' (keep them). */
export type Reduction = 'mean' | 'sum' | 'none';

/** A loss's reduction (default 'mean'). */
export interface ReductionOptions {
  /** 'mean' (default) averages, 'sum' adds, 'none' keeps the per-element losses. */
  reduction?: Reduction;
}

function reduce(op: string, loss: Tensor, reduction: string): Tensor {
  switch (reduction) {
    case 'mean':
      return mean(loss);
    case 'sum':
      return sum(loss);
    case 'none':
      return loss;
    default:
      throw new Error(`${op}: reduction must be 'mean', 'sum' or 'none', got '${reduction}'`);
  }
}

function checkReduction(op: string, reduction: string, allowed: readonly string[]): void {
  if (!allowed.includes(reduction)) throw new Error(`${op}: reduction must be one of ${allowed.map((r) => `'${r}'`).join(', ')}, got '${reduction}'`);
}

// ---------------------------------------------------------------- class-index targets
/** How class-index targets select from an input [N, C, d…] or [C]. */
interface ClassSelection {
  classDim: number;
  numClasses: number;
  /** int32 class index per target with the class dim kept as size 1 (ignored targets read class 0, weighted 0). */
  index: Tensor;
  /** Per-target weight: weight[target] (or 1), 0 where the target equals ignoreIndex; target's shape. */
  w: Tensor;
  /** The class weight shaped to broadcast against the input ([1, C, 1, …]), if any. */
  weightB: Tensor | null;
}

function classDimOf(op: string, input: Tensor): number {
  if (input.ndim === 0) throw new Error(`${op}: input must have at least 1 dim ([C] or [N, C, d…]), got a 0-d tensor`);
  return input.ndim === 1 ? 0 : 1;
}

/** weight [C] reshaped to broadcast along the class dim of `input`. */
function classWeight(op: string, input: Tensor, classDim: number, weight?: Tensor | null): Tensor | null {
  if (!weight) return null;
  const c = input.shape[classDim]!;
  if (weight.ndim !== 1 || weight.shape[0] !== c) throw new Error(`${op}: weight of shape ${fmt(weight.shape)} must have shape [${c}], one entry per class of input ${fmt(input.shape)}`);
  return reshape(weight, input.shape.map((d, i) => (i === classDim ? d : 1)));
}

function selectClasses(op: string, input: Tensor, target: Tensor, ignoreIndex: number, weight?: Tensor | null): ClassSelection {
  const classDim = classDimOf(op, input);
  const numClasses = input.shape[classDim]!;
  const expected = input.shape.filter((_, i) => i !== classDim);
  if (isFloat(target.dtype) || target.shape.join() !== expected.join()) {
    throw new Error(
      `${op}: target of shape ${fmt(target.shape)} (${target.dtype}) does not match input of shape ${fmt(input.shape)}: ` +
        `class-index targets are integers of shape ${fmt(expected)}` + (op === 'crossEntropy' ? `, probability targets are floats of shape ${fmt(input.shape)}` : ''),
    );
  }
  const values = target.dataSync();
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v !== ignoreIndex && (v < 0 || v >= numClasses)) {
      throw new RangeError(`${op}: target ${v} is out of bounds for ${numClasses} classes (input of shape ${fmt(input.shape)}, ignoreIndex ${ignoreIndex})`);
    }
  }
  const valid = ne(target, ignoreIndex);
  // gather (backward: scatter-add) touches one logit per target instead of a one-hot over all C
  const safe = cast(where(valid, target, 0), 'int32');
  const index = unsqueeze(safe, classDim);
  const weightB = classWeight(op, input, classDim, weight);
  const w = weight ? mul(reshape(indexSelect(weight, 0, reshape(safe, [-1])), target.shape), valid) : valid;
  return { classDim, numClasses, index, w, weightB };
}

/** −w[t]·logp[t] per target, reduced the way nll_loss does ('mean' divides by Σ w[t]). */
function nllFromSelection(op: string, logp: Tensor, s: ClassSelection, reduction: string): Tensor {
  const picked = squeeze(gather(logp, s.classDim, s.index), s.classDim);
  const loss = neg(mul(picked, s.w));
  return reduction === 'mean' ? div(sum(loss), sum(s.w)) : reduce(op, loss, reduction);
}

/** Options of `nllLoss`: reduction, an index to ignore, and per-class weights. */
export interface NllLossOptions extends ReductionOptions {
  /** Per-class rescaling weight of shape [C]. */
  weight?: Tensor | null;
  /** Targets equal to this contribute nothing, not even to the mean's denominator (default -100). */
  ignoreIndex?: number;
}

/**
 * Negative log-likelihood (`F.nll_loss`) of log-probabilities `input` [N, C, d…] or [C] at
 * integer class targets [N, d…] or []. 'mean' is the weighted mean over non-ignored targets.
 * @example nllLoss(logSoftmax(logits, 1), tensor([0, 2], { dtype: 'int32' }));
 */
export function nllLoss(input: Tensor, target: Tensor, opts: NllLossOptions = {}): Tensor {
  const reduction = opts.reduction ?? 'mean';
  checkReduction('nllLoss', reduction, ['mean', 'sum', 'none']);
  const s = selectClasses('nllLoss', input, target, opts.ignoreIndex ?? -100, opts.weight);
  return nllFromSelection('nllLoss', input, s, reduction);
}

/** Options of `crossEntropy`: nllLoss's, plus label smoothing. */
export interface CrossEntropyOptions extends NllLossOptions {
  /** ε in [0, 1]: the target is mixed with the uniform distribution, (1−ε)·target + ε/C. */
  labelSmoothing?: number;
}

/**
 * Cross entropy of logits (`F.cross_entropy`): input [N, C, d…] or [C]; target either class
 * indices (int32, input shape without C) or class probabilities (float, input's shape).
 * Class-index targets are read back once to check their range (a sync on device backends).
 * @example crossEntropy(randn([4, 3]), tensor([0, 2, 1, 1], { dtype: 'int32' })).item();
 */
export function crossEntropy(input: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const reduction = opts.reduction ?? 'mean';
  const eps = opts.labelSmoothing ?? 0;
  checkReduction('crossEntropy', reduction, ['mean', 'sum', 'none']);
  if (!(eps >= 0 && eps <= 1)) throw new RangeError(`crossEntropy: labelSmoothing must be between 0 and 1, got ${eps}`);
  const classDim = classDimOf('crossEntropy', input);
  const numClasses = input.shape[classDim]!;
  const logp = logSoftmax(input, classDim);

  if (isFloat(target.dtype) && target.shape.join() === input.shape.join()) {
    // probability targets: −Σ_c w_c·t_c·logp_c; 'mean' divides by the number of rows (weights do not)
    const t = eps > 0 ? add(mul(target, 1 - eps), eps / numClasses) : target;
    const wB = classWeight('crossEntropy', input, classDim, opts.weight);
    const prod = mul(logp, t);
    return reduce('crossEntropy', neg(sum(wB ? mul(prod, wB) : prod, classDim)), reduction);
  }

  const s = selectClasses('crossEntropy', input, target, opts.ignoreIndex ?? -100, opts.weight);
  const nll = nllFromSelection('crossEntropy', logp, s, reduction);
  if (eps === 0) return nll;
  // label smoothing as PyTorch: (1−ε)·nll + (ε/C)·Σ_c(−w_c·logp_c), ignored targets masked out,
  // and 'mean' normalised by the same Σ w[t] as the nll term
  const valid = ne(target, opts.ignoreIndex ?? -100);
  const smooth = mul(neg(sum(s.weightB ? mul(logp, s.weightB) : logp, classDim)), valid);
  const smoothReduced = reduction === 'mean' ? div(sum(smooth), sum(s.w)) : reduce('crossEntropy', smooth, reduction);
  return add(mul(nll, 1 - eps), mul(smoothReduced, eps / numClasses));
}

// ---------------------------------------------------------------- regression losses
/**
 * Mean squared error (`F.mse_loss`); input and target broadcast.
 * @example mseLoss(tensor([1, 2]), tensor([1, 4])).item(); // 2
 */
export function mseLoss(input: Tensor, target: Tensor, opts: ReductionOptions = {}): Tensor {
  const d = sub(input, target);
  return reduce('mseLoss', mul(d, d), opts.reduction ?? 'mean');
}

/**
 * Mean absolute error (`F.l1_loss`); input and target broadcast.
 * @example l1Loss(tensor([1, 2]), tensor([1, 4])).item(); // 1
 */
export function l1Loss(input: Tensor, target: Tensor, opts: ReductionOptions = {}): Tensor {
  return reduce('l1Loss', abs(sub(input, target)), opts.reduction ?? 'mean');
}

/**
 * Huber loss (`F.huber_loss`): ½d² where |d| < delta, else delta·(|d| − ½delta).
 * @example huberLoss(tensor([0, 3]), tensor([0.5, 0])).item(); // (0.125 + 2.5) / 2
 */
export function huberLoss(input: Tensor, target: Tensor, opts: ReductionOptions & { delta?: number } = {}): Tensor {
  const delta = opts.delta ?? 1;
  if (!(delta > 0)) throw new RangeError(`huberLoss: delta must be positive, got ${delta}`);
  const d = abs(sub(input, target));
  return reduce('huberLoss', where(lt(d, delta), mul(mul(d, d), 0.5), mul(sub(d, 0.5 * delta), delta)), opts.reduction ?? 'mean');
}

/**
 * Smooth L1 loss (`F.smooth_l1_loss`): ½d²/beta where |d| < beta, else |d| − ½beta; beta = 0 is L1.
 * @example smoothL1Loss(tensor([0, 3]), tensor([0.5, 0])).item(); // (0.125 + 2.5) / 2
 */
export function smoothL1Loss(input: Tensor, target: Tensor, opts: ReductionOptions & { beta?: number } = {}): Tensor {
  const beta = opts.beta ?? 1;
  if (!(beta >= 0)) throw new RangeError(`smoothL1Loss: beta must be non-negative, got ${beta}`);
  const d = abs(sub(input, target));
  if (beta === 0) return reduce('smoothL1Loss', d, opts.reduction ?? 'mean');
  return reduce('smoothL1Loss', where(lt(d, beta), mul(mul(d, d), 0.5 / beta), sub(d, 0.5 * beta)), opts.reduction ?? 'mean');
}

// ---------------------------------------------------------------- distribution losses
/** Options of `klDiv`: the reduction and whether the target is in log space. */
export interface KlDivOptions {
  /** 'mean' (default, over all elements, as PyTorch), 'batchmean' (sum / batch size, the true KL), 'sum' or 'none'. */
  reduction?: Reduction | 'batchmean';
  /** The target is given as log-probabilities. */
  logTarget?: boolean;
}

/**
 * KL divergence KL(target ‖ exp(input)) pointwise, like `F.kl_div`: `input` holds
 * log-probabilities; `target` probabilities (or log-probabilities with `logTarget`).
 * Terms with target 0 contribute 0 (xlogy), with a finite gradient.
 * @example klDiv(logSoftmax(logits, 1), probs, { reduction: 'batchmean' });
 */
export function klDiv(input: Tensor, target: Tensor, opts: KlDivOptions = {}): Tensor {
  const reduction = opts.reduction ?? 'mean';
  checkReduction('klDiv', reduction, ['mean', 'batchmean', 'sum', 'none']);
  let loss: Tensor;
  if (opts.logTarget) loss = mul(exp(target), sub(target, input)); // e^t·(t − x)
  else {
    const pos = gt(target, 0);
    const tLogT = where(pos, mul(target, log(where(pos, target, 1))), 0); // xlogy(t, t), no 0·(−∞) in either pass
    loss = sub(tLogT, mul(target, input));
  }
  if (reduction === 'batchmean') return div(sum(loss), input.ndim === 0 ? 1 : input.shape[0]!);
  return reduce('klDiv', loss, reduction);
}

/** Options of the binary cross-entropy losses: the reduction and a per-element weight. */
export interface BceOptions extends ReductionOptions {
  /** Rescaling weight of each element (broadcast against the loss). */
  weight?: Tensor | null;
}

/**
 * Binary cross entropy of logits (`F.binary_cross_entropy_with_logits`), stable for any x:
 * (1 − y)·x + lw·softplus(−x) with lw = 1 + (posWeight − 1)·y. This equals
 * max(x, 0) − x·y + log1p(e^{−|x|}) (for posWeight 1) but its gradient is σ(x) − y even at x = 0,
 * where the max/abs form gives 1 − y.
 * @example binaryCrossEntropyWithLogits(tensor([0]), tensor([1])).item(); // ln 2
 */
export function binaryCrossEntropyWithLogits(input: Tensor, target: Tensor, opts: BceOptions & { posWeight?: Tensor | null } = {}): Tensor {
  if (input.shape.join() !== target.shape.join()) {
    throw new Error(`binaryCrossEntropyWithLogits: target of shape ${fmt(target.shape)} must have the same shape as input ${fmt(input.shape)}`);
  }
  const logSigNeg = softplus(neg(input)); // −log σ(x)
  const lw = opts.posWeight ? add(mul(sub(opts.posWeight, 1), target), 1) : null;
  let loss = add(mul(sub(1, target), input), lw ? mul(lw, logSigNeg) : logSigNeg);
  if (opts.weight) loss = mul(loss, opts.weight);
  return reduce('binaryCrossEntropyWithLogits', loss, opts.reduction ?? 'mean');
}

/**
 * Binary cross entropy of probabilities (`F.binary_cross_entropy`):
 * −(y·log x + (1 − y)·log(1 − x)), each log clamped at −100 as PyTorch does.
 * @example binaryCrossEntropy(tensor([0.5]), tensor([1])).item(); // ln 2
 */
export function binaryCrossEntropy(input: Tensor, target: Tensor, opts: BceOptions = {}): Tensor {
  if (input.shape.join() !== target.shape.join()) {
    throw new Error(`binaryCrossEntropy: target of shape ${fmt(target.shape)} must have the same shape as input ${fmt(input.shape)}`);
  }
  const logX = clamp(log(input), -100);
  const log1mX = clamp(log(sub(1, input)), -100);
  let loss = neg(add(mul(target, logX), mul(sub(1, target), log1mX)));
  if (opts.weight) loss = mul(loss, opts.weight);
  return reduce('binaryCrossEntropy', loss, opts.reduction ?? 'mean');
}
