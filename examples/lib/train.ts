/**
 * @file What the examples add to @qgrad/nn's training API (`fit`): the run-control flags every
 * example takes and their mapping onto `fit`'s options (run directory runs/<name>/, resume,
 * cadences, the NaN/∞ stop with advice naming the flags), backend selection and the one-line
 * summary. The loop, metrics, checkpoints, progress bar and plots are nn's.
 */
import * as q from '@qgrad/core';
import { SEED_MAX, type FitOptions, type RunResult } from '@qgrad/nn';

export { SEED_MAX, epochBatch, nonFiniteGuard, stepGenerator, NonFiniteLossError } from '@qgrad/nn';

/** Flags every example takes (merge into its own `cli` options). */
export const commonOptions = {
  runDir: { type: 'string', default: '', help: 'run directory (default runs/<example name>)' },
  resume: { type: 'boolean', help: "continue from the run directory's checkpoint (model, optimizer, scheduler and step restored; batches are seeded by the step)" },
  backend: { type: 'string', default: 'wasm', help: "kernel backend: 'wasm' (SIMD, threads) or 'js' (the reference)" },
  seed: { type: 'int', default: 0, min: 0, max: SEED_MAX, help: 'seed of the initial weights, batch order and noise' },
  evalEvery: { type: 'int', default: 100, min: 1, help: 'evaluate every N steps (and at the end)' },
  ckptEvery: { type: 'int', default: 100, min: 1, help: 'save a checkpoint every N steps (and at the end)' },
  stopAt: { type: 'int', default: 0, min: 0, help: 'stop after this step with a checkpoint, as if interrupted (try --resume after); 0 runs to the end' },
  allowNonfinite: { type: 'boolean', help: 'keep training through a NaN or infinite loss (default: stop with an error)' },
} as const;

/** The advice a diverged example run ends with (exit code 3: cli() prints the message alone). */
export const NONFINITE_HINT = 'try a lower --lr, or pass --allow-nonfinite to keep going';

/** Selects the kernel backend by name ('wasm', core's default, or 'js', the reference). */
export function useBackend(name: string): void {
  q.setBackend(name as q.BackendName);
}

/** The run-control flags of `commonOptions`, as `fit` wants them; the run directory defaults to runs/<name>. */
export function runFlags(
  name: string,
  args: { runDir: string; steps: number; seed: number; resume?: boolean; evalEvery: number; ckptEvery: number; stopAt: number; allowNonfinite?: boolean },
): Pick<FitOptions, 'name' | 'dir' | 'steps' | 'seed' | 'resume' | 'evalEvery' | 'ckptEvery' | 'stopAt' | 'allowNonfinite' | 'nonFiniteHint'> {
  return {
    name, dir: args.runDir || `runs/${name}`, steps: args.steps, seed: args.seed, resume: args.resume ?? false, evalEvery: args.evalEvery, ckptEvery: args.ckptEvery,
    stopAt: args.stopAt, allowNonfinite: args.allowNonfinite ?? false, nonFiniteHint: NONFINITE_HINT,
  };
}

/**
 * A one-line summary of a finished run (what the examples print last).
 * @example console.log(summary(result, { 'test accuracy': result.lastEval.test_acc! }));
 */
export function summary(r: RunResult, extra: Record<string, string | number> = {}): string {
  const parts = Object.entries({ ...extra, 'ms/step': r.msPerStep.toFixed(0), 'steps run': r.stepsRun }).map(([k, v]) => `${k} ${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(4) : v}`);
  return `${parts.join(' | ')}\nwrote ${r.dir}/{metrics.jsonl, curves.svg, checkpoint.safetensors}`;
}
