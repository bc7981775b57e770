/**
 * @file The examples' shared training driver: backend selection, the run directory
 * (runs/<name>/), resume from its checkpoint, the step loop with a progress bar, periodic
 * evaluation, JSONL metrics, atomic checkpoints and the SVG plot of the curves; a NaN or
 * infinite training metric stops the run (NonFiniteLossError) unless --allow-nonfinite.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as q from '@qgrad/core';
import { randperm } from '@qgrad/nn';
import { CliError } from './args.js';
import { loadCheckpoint, saveCheckpoint, type TrainingState } from './checkpoint.js';
import { MetricsWriter, type Record_ } from './metrics.js';
import { plotCurves } from './plot.js';
import { progress } from './progress.js';

/** Generators take seeds modulo 2³², so larger seeds would silently repeat smaller ones. */
export const SEED_MAX = 2 ** 32 - 1;

/** Flags every example takes (merge into its own `cli` options). */
export const commonOptions = {
  runDir: { type: 'string', default: '', help: 'run directory (default runs/<example name>)' },
  resume: { type: 'boolean', help: "continue from the run directory's checkpoint (optimizer state and step restored)" },
  backend: { type: 'string', default: 'wasm', help: "kernel backend: 'wasm' (SIMD, threads) or 'js' (the reference)" },
  seed: { type: 'int', default: 0, min: 0, max: SEED_MAX, help: 'seed of the initial weights, batch order and noise' },
  evalEvery: { type: 'int', default: 100, min: 1, help: 'evaluate every N steps (and at the end)' },
  ckptEvery: { type: 'int', default: 100, min: 1, help: 'save a checkpoint every N steps (and at the end)' },
  stopAt: { type: 'int', default: 0, min: 0, help: 'stop after this step with a checkpoint, as if interrupted (try --resume after); 0 runs to the end' },
  allowNonfinite: { type: 'boolean', help: 'keep training through a NaN or infinite loss (default: stop with an error)' },
} as const;

/** Selects the kernel backend by name ('wasm', core's default, or 'js', the reference). */
export function useBackend(name: string): void {
  q.setBackend(name as q.BackendName);
}

/** A generator for step `step` of stream `stream` (batches, noise, …), independent of history. */
export function stepGenerator(seed: number, step: number, stream = 0): q.Generator {
  return new q.Generator((Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b) ^ Math.imul(stream + 1, 0xc2b2ae35)) >>> 0);
}

export interface TrainOptions {
  name: string;
  /** Run directory (default runs/<name>). */
  dir?: string;
  steps: number;
  resume: boolean;
  evalEvery: number;
  ckptEvery: number;
  /** Stop after this step (0: run to `steps`), checkpointing there as if interrupted. */
  stopAt?: number;
  /** Keep training when a step returns NaN or ±∞ (default: throw NonFiniteLossError). */
  allowNonfinite?: boolean;
  state: TrainingState;
  /** Saved with the checkpoint; a resumed run warns about fields that differ. */
  config: Record<string, unknown>;
  /** One optimizer step at 0-based index `i`; returns metrics (at least `loss`). */
  step: (i: number) => Record<string, number>;
  /** Evaluation after `step` steps; its metrics are logged and plotted. */
  evaluate?: (step: number) => Record<string, number>;
  /** Plot panels: title → metric names. */
  panels?: Record<string, string[]>;
}

/** The run-control flags every training example takes, as `train` wants them. */
export function runFlags(args: { runDir: string; steps: number; resume?: boolean; evalEvery: number; ckptEvery: number; stopAt: number; allowNonfinite?: boolean }): Pick<TrainOptions, 'dir' | 'steps' | 'resume' | 'evalEvery' | 'ckptEvery' | 'stopAt' | 'allowNonfinite'> {
  return { dir: args.runDir, steps: args.steps, resume: args.resume ?? false, evalEvery: args.evalEvery, ckptEvery: args.ckptEvery, stopAt: args.stopAt, allowNonfinite: args.allowNonfinite ?? false };
}

/** A training metric became NaN or ±∞: the run stopped there (exit code 3 from an example). */
export class NonFiniteLossError extends CliError {
  constructor(readonly step: number, readonly metric: string, readonly value: number, note = '') {
    super(`stopped at step ${step}: the training ${metric} is ${value}${note}. The run has diverged; try a lower --lr, or pass --allow-nonfinite to keep going.`, 3);
    this.name = 'NonFiniteLossError';
  }
}

/**
 * A check of each step's metrics: the first NaN or ±∞ throws NonFiniteLossError naming the step,
 * the metric and its value; with `allow` it is reported once through `warn` and training goes on.
 * @example const check = nonFiniteGuard(false); check(12, { loss: NaN }); // throws "stopped at step 12: the training loss is NaN…"
 */
export function nonFiniteGuard(allow: boolean, warn: (message: string) => void = console.warn): (step: number, metrics: Record<string, number>, note?: string) => void {
  let warned = false;
  return (step, metrics, note) => {
    const bad = Object.entries(metrics).find(([, v]) => !Number.isFinite(v));
    if (!bad) return;
    if (!allow) throw new NonFiniteLossError(step, bad[0], bad[1], note);
    if (!warned) warn(`step ${step}: the training ${bad[0]} is ${bad[1]}; continuing (--allow-nonfinite; later ones are not reported)`);
    warned = true;
  };
}

export interface TrainResult {
  dir: string;
  /** Steps this process ran, and the mean wall time of one (evaluation excluded). */
  stepsRun: number;
  msPerStep: number;
  records: Record_[];
  lastEval: Record<string, number>;
}

/**
 * Runs (or resumes) training to `steps`, writing runs/<name>/{metrics.jsonl, checkpoint.safetensors, curves.svg}.
 * Train metrics are logged every step; evaluation every `evalEvery` steps and at the end.
 */
export async function train(o: TrainOptions): Promise<TrainResult> {
  const dir = o.dir || join('runs', o.name);
  mkdirSync(dir, { recursive: true });
  const ckpt = join(dir, 'checkpoint.safetensors');
  let start = 0;
  if (o.resume) {
    if (!existsSync(ckpt)) console.log(`no checkpoint at ${ckpt}; starting from step 0`);
    else {
      const info = loadCheckpoint(ckpt, o.state);
      start = info.step;
      const changed = Object.keys({ ...info.config, ...o.config }).filter((k) => JSON.stringify(info.config[k]) !== JSON.stringify(o.config[k]));
      console.log(`resumed from ${ckpt} at step ${start}${changed.length ? ` (config differs in: ${changed.join(', ')})` : ''}`);
    }
  }
  const metrics = new MetricsWriter(join(dir, 'metrics.jsonl'), o.resume ? start : undefined);
  const bar = progress(o.name, o.steps, start);
  let trainMs = 0;
  let lastEval: Record<string, number> = {};
  const runEval = (step: number) => {
    if (!o.evaluate) return;
    lastEval = o.evaluate(step);
    metrics.write({ step, ...lastEval });
    bar.log(`step ${step}: ${Object.entries(lastEval).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')}`);
  };
  if (start === 0 && o.evaluate) runEval(0);
  const end = o.stopAt && o.stopAt > start ? Math.min(o.stopAt, o.steps) : o.steps;
  const check = nonFiniteGuard(o.allowNonfinite ?? false, (s) => bar.log(s));
  let saved = start;
  try {
    for (let i = start; i < end; i++) {
      const t0 = performance.now();
      const m = o.step(i);
      trainMs += performance.now() - t0;
      metrics.write({ step: i + 1, ...m });
      // before the checkpoint: a diverged step must not overwrite the last good weights
      check(i + 1, m, saved ? ` (the checkpoint in ${dir} is from step ${saved})` : '');
      bar.update(i + 1, m);
      // evaluation follows the schedule only, so a stopped-and-resumed run logs what a full one does
      if ((i + 1) % o.evalEvery === 0 || i + 1 === o.steps) runEval(i + 1);
      if ((i + 1) % o.ckptEvery === 0 || i + 1 === end) {
        saveCheckpoint(ckpt, o.state, i + 1, o.config);
        saved = i + 1;
      }
    }
  } finally {
    bar.stop();
  }
  const records = metrics.all();
  await plotCurves(join(dir, 'curves.svg'), records, o.panels ?? {}, o.name);
  const stepsRun = end - start;
  if (end < o.steps) console.log(`stopped at step ${end} of ${o.steps}; continue with --resume`);
  return { dir, stepsRun, msPerStep: stepsRun ? trainMs / stepsRun : 0, records, lastEval };
}

/** A one-line summary of a finished run (what the examples print last). */
export function summary(r: TrainResult, extra: Record<string, string | number> = {}): string {
  const parts = Object.entries({ ...extra, 'ms/step': r.msPerStep.toFixed(0), 'steps run': r.stepsRun }).map(([k, v]) => `${k} ${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(4) : v}`);
  return `${parts.join(' | ')}\nwrote ${r.dir}/{metrics.jsonl, curves.svg, checkpoint.safetensors}`;
}

/**
 * Indices of batch `i` when a dataset of `n` items is walked in epochs of `batchSize` batches
 * (last partial batch dropped), each epoch shuffled by a generator seeded from (seed, epoch): a
 * pure function of i, so resumed runs see the same batches.
 */
export function epochBatch(n: number, batchSize: number, i: number, seed: number): number[] {
  // a batch larger than the data would make every epoch empty and the batches silently wrong
  if (!(Number.isInteger(batchSize) && batchSize >= 1 && batchSize <= n)) throw new RangeError(`epochBatch: batch size ${batchSize} must be an integer in [1, ${n}] (the dataset size)`);
  const perEpoch = Math.floor(n / batchSize);
  const epoch = Math.floor(i / perEpoch);
  let perm = permCache.get(`${n}:${seed}:${epoch}`);
  if (!perm) {
    permCache.clear();
    perm = randperm(n, stepGenerator(seed, epoch, 1));
    permCache.set(`${n}:${seed}:${epoch}`, perm);
  }
  const b = i % perEpoch;
  return Array.from(perm.subarray(b * batchSize, (b + 1) * batchSize));
}
const permCache = new Map<string, Int32Array>();
