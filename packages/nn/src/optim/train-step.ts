/**
 * @file `trainStep`: one training step as a scope whose buffers are recycled at its end, except
 * what the model and the optimizer hold. The backward pass can only prove its own gradients and
 * temporaries dead; forward activations die when the step is over, which only the caller knows.
 */
import { scoped, Tensor } from '@qgrad/core';
import type { Module } from '../module.js';
import { stateTensors, type ParamState } from './optimizer.js';

/** What trainStep reads of an optimizer: its per-parameter state. */
interface OptimizerLike {
  state: Map<Tensor, ParamState>;
}

/**
 * Runs `step` (forward, backward, optimizer update) and then releases every buffer allocated
 * during it that is not a parameter, buffer or gradient of `model`, an optimizer's state, or a
 * tensor `step` returns, and the gradients of the previous step that this one dropped or replaced,
 * so a training loop's memory stays flat. On this kind of machine a fresh activation buffer costs more in page
 * faults than its arithmetic, so this makes steps faster (tiny Llama: about 10 %, more with QAT).
 * Return plain numbers (`loss.item()`) or the tensors you need; any other tensor made inside must
 * not be used afterwards (reading one throws an error that names trainStep). Tensors made inside
 * gradient hooks are the user's and are kept. Modules that create long-lived tensors lazily
 * during a step must register them as buffers.
 * @example const loss = trainStep(model, opt, () => { const l = model.loss(x, y); opt.zeroGrad(); l.backward(); opt.step(); return l.item(); });
 */
export function trainStep<T>(model: Module, optimizers: OptimizerLike | OptimizerLike[], step: () => T): T {
  const opts = Array.isArray(optimizers) ? optimizers : [optimizers];
  // last step's gradients: dropped by zeroGrad or replaced by accumulation, they die with this step
  const lastGrads: Tensor[] = [];
  for (const p of model.parameters()) if (p.grad) lastGrads.push(p.grad);
  return scoped(step, function* (result: T) {
    for (const p of model.parameters()) {
      yield p;
      if (p.grad) yield p.grad;
    }
    yield* model.buffers();
    for (const o of opts) for (const s of o.state.values()) yield* stateTensors(s);
    if (result instanceof Tensor) yield result;
    else if (Array.isArray(result)) for (const r of result) if (r instanceof Tensor) yield r;
  }, 'trainStep', lastGrads);
}
