/**
 * @file Training checkpoints in one .safetensors file, written atomically (core's
 * saveSafetensors): model tensors under `model.*`, optimizer moment tensors under
 * `optimizer.<param index>.<name>`, and as JSON metadata the optimizer's groups and scalar state,
 * the LR scheduler, the step, the run's config and the callbacks' state (early stopping's best
 * value, …). Randomness is drawn from generators seeded by the step (`stepGenerator`), so no RNG
 * state needs saving: resuming at step s replays exactly what an uninterrupted run does from s.
 */
import { loadSafetensorsWithMetadata, saveSafetensors, type Tensor } from '@qgrad/core';
import type { Module } from '../module.js';
import type { Optimizer, OptimizerStateDict, ParamState } from '../optim/optimizer.js';
import type { LambdaLR } from '../optim/schedule.js';

/** What a checkpoint restores: the model, its optimizer and (optionally) its LR scheduler. */
export interface TrainingState {
  model: Module;
  optimizer: Optimizer<object>;
  scheduler?: LambdaLR;
}

/** A checkpoint's step, run config and extra metadata (callback state), as `loadCheckpoint` returns them. */
export interface CheckpointInfo {
  step: number;
  config: Record<string, unknown>;
  /** JSON-able state stored beside the tensors (the Trainer keeps its callbacks' state here). */
  extra: Record<string, unknown>;
}

/**
 * The tensors and metadata of a checkpoint (what `saveCheckpoint` writes).
 * @example const { tensors, metadata } = checkpointContents({ model, optimizer }, 100);
 */
export function checkpointContents(s: TrainingState, step: number, config: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const tensors: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(s.model.stateDict())) tensors[`model.${k}`] = t;
  const sd = s.optimizer.stateDict();
  const scalars: Record<string, Record<string, number>> = {};
  for (const [i, st] of Object.entries(sd.state)) {
    for (const [k, v] of Object.entries(st)) {
      if (typeof v === 'number') (scalars[i] ??= {})[k] = v;
      else tensors[`optimizer.${i}.${k}`] = v;
    }
  }
  const metadata: Record<string, string> = {
    step: String(step),
    config: JSON.stringify(config),
    optimizer: JSON.stringify({ paramGroups: sd.paramGroups, scalars, stateKeys: Object.keys(sd.state) }),
    extra: JSON.stringify(extra),
  };
  if (s.scheduler) metadata.scheduler = JSON.stringify(s.scheduler.stateDict());
  return { tensors, metadata };
}

/**
 * Writes a checkpoint atomically (temporary file + fsync + rename).
 * @example saveCheckpoint('runs/x/checkpoint.safetensors', { model, optimizer, scheduler }, 200, { lr: 3e-3 });
 */
export function saveCheckpoint(path: string, s: TrainingState, step: number, config: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): void {
  const { tensors, metadata } = checkpointContents(s, step, config, extra);
  saveSafetensors(path, tensors, metadata);
}

/**
 * Restores model, optimizer and scheduler in place from a checkpoint; returns its step, config and extra state.
 * @example const { step } = loadCheckpoint('runs/x/checkpoint.safetensors', { model, optimizer, scheduler });
 */
export function loadCheckpoint(path: string, s: TrainingState): CheckpointInfo {
  const { tensors, metadata } = loadSafetensorsWithMetadata(path);
  if (!metadata.optimizer) throw new Error(`loadCheckpoint: ${path} has no optimizer metadata (not a training checkpoint?)`);
  const model: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(tensors)) if (k.startsWith('model.')) model[k.slice('model.'.length)] = t;
  s.model.loadStateDict(model);
  const opt = JSON.parse(metadata.optimizer) as { paramGroups: OptimizerStateDict<object>['paramGroups']; scalars: Record<string, Record<string, number>>; stateKeys: string[] };
  const state: Record<number, ParamState> = {};
  for (const i of opt.stateKeys) state[Number(i)] = { ...opt.scalars[i] };
  for (const [k, t] of Object.entries(tensors)) {
    if (!k.startsWith('optimizer.')) continue;
    const [, i, ...name] = k.split('.');
    (state[Number(i)] ??= {})[name.join('.')] = t;
  }
  s.optimizer.loadStateDict({ state, paramGroups: opt.paramGroups });
  if (s.scheduler) {
    if (!metadata.scheduler) throw new Error(`loadCheckpoint: ${path} has no scheduler state but a scheduler was given`);
    s.scheduler.loadStateDict(JSON.parse(metadata.scheduler));
  }
  return { step: Number(metadata.step), config: JSON.parse(metadata.config ?? '{}'), extra: JSON.parse(metadata.extra ?? '{}') };
}
