/**
 * @file Training memory as the LoRA papers count it: the bytes a model stores (parameters,
 * trainable or frozen, and buffers such as packed codes and scales) and the bytes of an
 * optimizer's per-parameter state (Adam's two moments). Activations and gradients are left out:
 * they depend on the batch and the backend more than on the fine-tuning method.
 */
import type { DType, Tensor } from '@qgrad/core';
import type { Module } from '../module.js';
import { stateTensors, type Optimizer } from './optimizer.js';

// a full Record: adding a dtype to core fails to compile here until its width is known
const BYTES: Record<DType, number> = { float32: 4, float64: 8, int32: 4, int8: 1, uint8: 1 };

/**
 * Bytes of distinct tensors (a tensor listed twice, a tied weight say, counts once).
 * @example tensorBytes([zeros([2, 3])]); // 24
 */
export function tensorBytes(tensors: Iterable<Tensor>): number {
  let n = 0;
  for (const t of new Set(tensors)) n += t.numel() * BYTES[t.dtype];
  return n;
}

/**
 * Bytes of everything `model` stores: parameters (trainable or frozen) and buffers.
 * @example modelBytes(new Linear(4, 2)); // (8 + 2) · 4 = 40
 */
export function modelBytes(model: Module): number {
  return tensorBytes([...model.parameters(), ...model.buffers()]);
}

/**
 * Bytes of the optimizers' per-parameter state tensors (AdamW: two moments per trained
 * parameter once it has stepped; step counts are numbers and count nothing).
 * @example optimizerStateBytes(adamw); // 2 · 4 · trained parameters, after the first step
 */
export function optimizerStateBytes(optimizers: Optimizer<object> | Optimizer<object>[]): number {
  const all = Array.isArray(optimizers) ? optimizers : [optimizers];
  return tensorBytes(all.flatMap((o) => [...o.state.values()].flatMap((s) => [...stateTensors(s)])));
}
