/**
 * @file `fit`: a Trainer run in a run directory with the usual callbacks — a progress bar,
 * metrics.jsonl, checkpoint.safetensors every N steps (and `resume` from it), curves.svg — plus
 * any of the caller's (early stopping, …).
 */
import { Checkpointer, JsonlMetrics } from './callbacks.js';
import { joinPath, nodeFs } from './node.js';
import { PlotCurves } from './plot.js';
import { ProgressBar, type ProgressBarOptions } from './progress.js';
import { Trainer, type FitResult, type TrainerOptions } from './trainer.js';

/** Trainer options plus where and how often `fit` keeps its files. */
export interface FitOptions extends TrainerOptions {
  /** Run directory for metrics.jsonl, checkpoint.safetensors and curves.svg (none: keep no files). */
  dir?: string;
  /** Checkpoint every N steps, at the end and at an early stop (default 100). */
  ckptEvery?: number;
  /** The terminal progress bar (default on). */
  progress?: boolean | ProgressBarOptions;
  /** Plot panels (title → metric names) for curves.svg; `false`: no plot. */
  panels?: Record<string, string[]> | false;
}

/** A finished `fit`: the Trainer's result and the run directory. */
export interface RunResult extends FitResult {
  dir: string | undefined;
}

/**
 * Trains with a progress bar and, when `dir` is given, writes `dir/{metrics.jsonl,
 * checkpoint.safetensors, curves.svg}`; `resume: true` continues from the checkpoint exactly.
 * @example
 * const r = await fit({ model, optimizer, scheduler, steps: 500, dir: 'runs/mlp', resume: true,
 *   loss: ({ index }) => crossEntropy(model.forward(xs[index]), ys[index]),
 *   evaluate: () => ({ val_loss: crossEntropy(model.forward(xv), yv).item() }),
 *   callbacks: [new EarlyStopping({ monitor: 'val_loss', patience: 3 })] });
 */
export async function fit(o: FitOptions): Promise<RunResult> {
  const callbacks = [];
  if (o.progress !== false) callbacks.push(new ProgressBar(o.progress === true || o.progress === undefined ? {} : o.progress));
  if (o.dir) {
    nodeFs('fit').mkdirSync(o.dir, { recursive: true });
    callbacks.push(new JsonlMetrics(joinPath(o.dir, 'metrics.jsonl')), new Checkpointer(joinPath(o.dir, 'checkpoint.safetensors'), o.ckptEvery ?? 100));
    if (o.panels !== false) callbacks.push(new PlotCurves(joinPath(o.dir, 'curves.svg'), o.panels ?? {}));
  } else if (o.resume) throw new Error('fit: resume needs a run directory (dir) to resume from');
  const result = await new Trainer({ ...o, callbacks: [...callbacks, ...(o.callbacks ?? [])] }).fit();
  return { ...result, dir: o.dir };
}
