/**
 * @file The Trainer's file-keeping and stopping callbacks: metrics as JSON lines
 * (`JsonlMetrics`), checkpoints every N steps written atomically with `--resume` support
 * (`Checkpointer`) and early stopping on an evaluation metric (`EarlyStopping`). The progress
 * bar and the plot live in progress.ts and plot.ts.
 */
import { loadCheckpoint, saveCheckpoint, type CheckpointInfo } from './checkpoint.js';
import { MetricsWriter, type MetricsRecord } from './metrics.js';
import { nodeFs } from './node.js';
import type { Callback, RunContext } from './trainer.js';

/**
 * Appends every record to a .jsonl file; on resume it keeps the lines up to the checkpoint's
 * step and drops the rest (a torn last line included), so the file reads as one run.
 * @example new Trainer({ ...opts, callbacks: [new JsonlMetrics('runs/x/metrics.jsonl')] });
 */
export class JsonlMetrics implements Callback {
  #writer: MetricsWriter | null = null;
  constructor(readonly path: string) {}
  onBegin(ctx: RunContext): void {
    this.#writer = new MetricsWriter(this.path, ctx.resumed ? ctx.startStep : undefined);
  }
  onRecord(_ctx: RunContext, record: MetricsRecord): void {
    this.#writer?.write(record);
  }
  records(): MetricsRecord[] {
    return this.#writer ? this.#writer.all() : [];
  }
}

/**
 * Saves model, optimizer, scheduler, step, config and the callbacks' state every `every` steps,
 * at the last step and when the run stops early, each save atomic (temporary file + fsync +
 * rename); restores all of it when the Trainer resumes.
 * @example new Trainer({ ...opts, resume: true, callbacks: [new Checkpointer('runs/x/checkpoint.safetensors', 100)] });
 */
export class Checkpointer implements Callback {
  constructor(readonly path: string, readonly every: number) {
    if (!(Number.isSafeInteger(every) && every >= 1)) throw new RangeError(`Checkpointer: every must be an integer ≥ 1, got ${every}`);
  }
  restore(ctx: RunContext): CheckpointInfo | null {
    if (!nodeFs('Checkpointer').existsSync(this.path)) {
      ctx.log(`no checkpoint at ${this.path}; starting from step 0`);
      return null;
    }
    const info = loadCheckpoint(this.path, ctx.state);
    ctx.log(`loaded ${this.path} (step ${info.step})`);
    return info;
  }
  onStepEnd(ctx: RunContext, step: number): void {
    if (step % this.every !== 0 && step !== ctx.endStep && ctx.stopReason === null) return;
    saveCheckpoint(this.path, ctx.state, step, ctx.config, { callbacks: ctx.callbackState() });
    ctx.lastCheckpoint = step;
  }
}

/** Options of EarlyStopping. */
export interface EarlyStoppingOptions {
  /** The evaluation metric to watch (e.g. 'val_loss'). */
  monitor: string;
  /** 'min' (default): lower is better; 'max': higher is better. */
  mode?: 'min' | 'max';
  /** Evaluations without improvement before stopping (default 3). */
  patience?: number;
  /** The least change that counts as an improvement (default 0). */
  minDelta?: number;
}

/**
 * Stops the run when an evaluation metric has not improved for `patience` evaluations; its best
 * value and counter go into checkpoints, so a resumed run stops where an uninterrupted one would.
 * @example new Trainer({ ...opts, evaluate, callbacks: [new EarlyStopping({ monitor: 'val_loss', patience: 3 })] });
 */
export class EarlyStopping implements Callback {
  readonly key = 'earlyStopping';
  best: number | null = null;
  bestStep = 0;
  wait = 0;
  constructor(readonly options: EarlyStoppingOptions) {
    const p = options.patience ?? 3;
    if (!(Number.isSafeInteger(p) && p >= 1)) throw new RangeError(`EarlyStopping: patience must be an integer ≥ 1, got ${p}`);
  }
  onBegin(ctx: RunContext): void {
    if (!ctx.hasEvaluate) throw new Error(`EarlyStopping: it watches '${this.options.monitor}' from evaluations, but the Trainer has no evaluate`);
  }
  onRecord(ctx: RunContext, record: MetricsRecord, kind: 'train' | 'eval'): void {
    const { monitor, mode = 'min', patience = 3, minDelta = 0 } = this.options;
    if (kind !== 'eval') return;
    const v = record[monitor];
    if (typeof v !== 'number') throw new Error(`EarlyStopping: the evaluation at step ${record.step} has no metric '${monitor}' (it has ${Object.keys(record).filter((k) => k !== 'step').join(', ') || 'none'})`);
    const better = Number.isFinite(v) && (this.best === null || (mode === 'min' ? v < this.best - minDelta : v > this.best + minDelta));
    if (better) {
      this.best = v;
      this.bestStep = record.step;
      this.wait = 0;
      return;
    }
    if (++this.wait >= patience) ctx.stop(`${monitor} has not improved for ${patience} evaluation(s) (best ${this.best} at step ${this.bestStep})`);
  }
  stateDict(): { best: number | null; bestStep: number; wait: number } {
    return { best: this.best, bestStep: this.bestStep, wait: this.wait };
  }
  loadStateDict(s: unknown): void {
    ({ best: this.best, bestStep: this.bestStep, wait: this.wait } = s as ReturnType<EarlyStopping['stateDict']>);
  }
}
