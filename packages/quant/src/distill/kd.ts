/**
 * @file The logit-distillation losses: `kdLoss` (Hinton's KL at a temperature, scaled by τ², as
 * PyTorch's KD tutorial and TernaryBERT/TI write it) and `kdMix`, its α-mix with a task loss.
 * The teacher wrapper that feeds them lives in distill.ts.
 */
import { klDiv, logSoftmax, mseLoss, type Tensor } from '@qgrad/core';

/** Options of `kdLoss`: the temperature and which discrepancy of the logits. */
export interface KdLossOptions {
  /** Softmax temperature τ (default 1). The KL term is multiplied by τ² so its gradients keep their size as τ grows. */
  temperature?: number;
  /**
   * 'kl' (default): τ²·KL(softmax(t/τ) ‖ softmax(s/τ)), averaged over rows (every position of
   * [..., C] logits is a row: `batchmean` over [N, C]). 'mse': Σ(s − t)² / rows, EfficientDM's
   * output regression (its reference sums; dividing by the rows keeps α meaningful across batch sizes).
   */
  kind?: 'kl' | 'mse';
}

/**
 * Distillation loss of student logits against teacher logits [..., C] (same shape), both
 * flattened to rows [N, C]: τ²·KL(softmax(t/τ) ‖ softmax(s/τ)), summed over classes and averaged
 * over rows — `F.kl_div(F.log_softmax(s/τ, -1), F.log_softmax(t/τ, -1), reduction='batchmean',
 * log_target=True)·τ²`. It is 0 exactly when the two rows give the same softmax. Gradients reach
 * both arguments (detach the teacher's, or compute it under noGrad, as `distill` does).
 * @example kdLoss(studentLogits, teacherLogits, { temperature: 2 }).item();
 */
export function kdLoss(student: Tensor, teacher: Tensor, opts: KdLossOptions = {}): Tensor {
  const tau = opts.temperature ?? 1;
  if (!(tau > 0) || !Number.isFinite(tau)) throw new RangeError(`kdLoss: temperature must be a positive number, got ${tau}`);
  if (student.shape.join() !== teacher.shape.join()) throw new Error(`kdLoss: student logits [${student.shape.join(', ')}] and teacher logits [${teacher.shape.join(', ')}] must have the same shape`);
  if (student.ndim === 0) throw new Error('kdLoss: logits need a class dimension, got a scalar');
  const c = student.shape[student.ndim - 1]!;
  const s = student.reshape([-1, c]); // [N, C]
  const t = teacher.reshape([-1, c]);
  if (opts.kind === 'mse') return mseLoss(s, t, { reduction: 'sum' }).div(s.shape[0]!);
  if (opts.kind !== undefined && opts.kind !== 'kl') throw new Error(`kdLoss: kind must be 'kl' or 'mse', got ${JSON.stringify(opts.kind)}`);
  // both in log space: e^t·(t − s) has no 0·log 0 where the teacher's softmax underflows
  const kl = klDiv(logSoftmax(s.div(tau), -1), logSoftmax(t.div(tau), -1), { reduction: 'batchmean', logTarget: true });
  return tau === 1 ? kl : kl.mul(tau * tau);
}

/**
 * The α-mix of a task loss and a distillation loss, PyTorch/Hinton's convention:
 * (1 − α)·task + α·kd (α = 1: distillation only, the task loss may be null; α = 0: task only).
 * @example kdMix(crossEntropy(s, y), kdLoss(s, t, { temperature: 4 }), 0.9);
 */
export function kdMix(task: Tensor | null, kd: Tensor, alpha: number): Tensor {
  if (!(alpha >= 0 && alpha <= 1)) throw new RangeError(`kdMix: alpha must lie in [0, 1], got ${alpha}`);
  if (alpha === 1) return kd;
  if (!task) throw new Error(`kdMix: alpha ${alpha} < 1 weighs a task loss, but none was given (pass one, or alpha 1 for distillation only)`);
  return alpha === 0 ? task : task.mul(1 - alpha).add(kd.mul(alpha));
}
