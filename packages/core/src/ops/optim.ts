/**
 * @file Fused optimizer steps (in place, no autograd): what optimizers call instead of ~20
 * elementwise ops per parameter when the layout allows it.
 */
import type { AdamStepParams } from '@qgrad/kernels';
import { runKernelInto } from '../dispatch.js';
import type { Tensor } from '../tensor.js';

/**
 * One Adam/AdamW update of `param` and its moment estimates in place, as PyTorch's Adam computes
 * it. Returns false, changing nothing, when the fused kernel cannot take the tensors (param or
 * state not contiguous, dtypes or sizes differ, not floating point): the caller then runs the
 * update op by op.
 * @example adamStep_(w, w.grad!, m, v, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, decoupled: true, maximize: false, step: 1 });
 */
export function adamStep_(param: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor, opts: AdamStepParams): boolean {
  const d = param.dtype;
  if (d !== 'float32' && d !== 'float64') return false;
  for (const t of [grad, expAvg, expAvgSq]) if (t.dtype !== d || t.shape.join() !== param.shape.join()) return false;
  if (!param.isContiguous() || !expAvg.isContiguous() || !expAvgSq.isContiguous()) return false;
  const backend = param.storage.backend;
  if ([grad, expAvg, expAvgSq].some((t) => t.storage.backend !== backend && !(backend.hostMemory && t.storage.backend.hostMemory))) return false;
  runKernelInto('adamStep', [param, grad, expAvg, expAvgSq], param, opts);
  expAvg.storage.version++;
  expAvgSq.storage.version++;
  return true;
}
