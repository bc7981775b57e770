/**
 * @file The training loop: `Trainer` / `fit` run (or resume) optimizer steps with periodic
 * evaluation and hand every record to callbacks (progress bar, JSON-lines metrics, checkpoints,
 * early stopping, plots: callbacks.ts, progress.ts, plot.ts). A NaN or infinite training metric
 * stops the run (NonFiniteLossError) before a checkpoint can overwrite the last good weights.
 * Randomness comes from generators seeded by (seed, step), so a resumed run is exact.
 */
import { Generator, scoped, type Tensor } from '@qgrad/core';
import { randperm } from '../data/dataset.js';
import { trainStep } from '../optim/train-step.js';
import type { CheckpointInfo, TrainingState } from './checkpoint.js';
import type { MetricsRecord } from './metrics.js';

/** Generators take seeds modulo 2³², so larger seeds would silently repeat smaller ones. */
export const SEED_MAX = 2 ** 32 - 1;

/**
 * A generator for step `step` of stream `stream` (batches, noise, …), independent of history:
 * a resumed run draws exactly what an uninterrupted one does.
 * @example const g = stepGenerator(seed, i, 2); const idx = Array.from({ length: 8 }, () => g.randint(0, n));
 */
export function stepGenerator(seed: number, step: number, stream = 0): Generator {
  return new Generator((Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b) ^ Math.imul(stream + 1, 0xc2b2ae35)) >>> 0);
}

/**
 * Indices of batch `i` when a dataset of `n` items is walked in epochs of whole batches (the
 * last partial batch dropped), each epoch shuffled by a generator seeded from (seed, epoch): a
 * pure function of i, so resumed runs see the same batches.
 * @example const idx = epochBatch(8000, 64, step, seed); // 64 distinct indices
 */
export function epochBatch(n: number, batchSize: number, i: number, seed: number): number[] {
  // a batch larger than the data would make every epoch empty and the batches silently wrong
  if (!(Number.isInteger(batchSize) && batchSize >= 1 && batchSize <= n)) throw new RangeError(`epochBatch: batch size ${batchSize} must be an integer in [1, ${n}] (the dataset size)`);
  const perEpoch = Math.floor(n / batchSize);
  const epoch = Math.floor(i / perEpoch);
  const key = `${n}:${seed}:${epoch}`;
  let perm = permCache.get(key);
  if (!perm) {
    permCache.clear();
    perm = randperm(n, stepGenerator(seed, epoch, 1));
    permCache.set(key, perm);
  }
  const b = i % perEpoch;
  return Array.from(perm.subarray(b * batchSize, (b + 1) * batchSize));
}
const permCache = new Map<string, Int32Array>();

/**
 * A training metric became NaN or ±∞: the run stopped there (`exitCode` 3 for command lines).
 * @example try { await trainer.fit(); } catch (e) { if (e instanceof NonFiniteLossError) process.exitCode = e.exitCode; }
 */
export class NonFiniteLossError extends Error {
  readonly exitCode = 3;
  constructor(readonly step: number, readonly metric: string, readonly value: number, note = '', hint = 'try a lower learning rate, or set allowNonfinite to keep going') {
    super(`stopped at step ${step}: the training ${metric} is ${value}${note}. The run has diverged; ${hint}.`);
    this.name = 'NonFiniteLossError';
  }
}

/**
 * A check of each step's metrics: the first NaN or ±∞ throws NonFiniteLossError naming the step,
 * the metric and its value; with `allow` it is reported once through `warn` and training goes on.
 * @example const check = nonFiniteGuard(false); check(12, { loss: NaN }); // throws "stopped at step 12: the training loss is NaN…"
 */
export function nonFiniteGuard(allow: boolean, warn: (message: string) => void = console.warn, hint?: string): (step: number, metrics: Record<string, number>, note?: string) => void {
  let warned = false;
  return (step, metrics, note) => {
    const bad = Object.entries(metrics).find(([, v]) => typeof v === 'number' && !Number.isFinite(v));
    if (!bad) return;
    if (!allow) throw new NonFiniteLossError(step, bad[0], bad[1], note, hint);
    if (!warned) warn(`step ${step}: the training ${bad[0]} is ${bad[1]}; continuing (allowNonfinite; later ones are not reported)`);
    warned = true;
  };
}

/** What a step function is given: its 0-based index and generators seeded by (seed, index). */
export interface StepContext {
  /** 0-based index of this optimizer step. */
  index: number;
  /** A generator for this step and `stream` (0, 1, … for batches, noise, …): see `stepGenerator`. */
  generator(stream?: number): Generator;
}

/** The running loop as callbacks see it. */
export interface RunContext {
  readonly name: string;
  readonly state: TrainingState;
  readonly config: Record<string, unknown>;
  /** The step the run (re)started from and the one it will stop after. */
  readonly startStep: number;
  readonly endStep: number;
  /** The full length of the run (`endStep` < `steps` when stopAt interrupts it). */
  readonly steps: number;
  readonly resumed: boolean;
  readonly hasEvaluate: boolean;
  /** The step of the last checkpoint written or restored (0: none). */
  lastCheckpoint: number;
  /** Why the run is ending early (set by `stop`), or null. */
  readonly stopReason: string | null;
  /** Prints a line (above the progress bar when there is one). */
  log(line: string): void;
  /** Routes `log` (a progress bar prints above itself); returns the previous route. */
  setLogger(log: (line: string) => void): (line: string) => void;
  /** Ends the run after the current step (early stopping); the step is still checkpointed. */
  stop(reason: string): void;
  /** Every record of the run so far (from metrics.jsonl when it is kept, else this process's). */
  records(): MetricsRecord[];
  /** The callbacks' state, as checkpoints store it. */
  callbackState(): Record<string, unknown>;
}

/**
 * A hook into the loop. Every method is optional; `key` + `stateDict`/`loadStateDict` put the
 * callback's state into checkpoints so a resumed run continues it exactly.
 * @example const printer: Callback = { onRecord: (ctx, r, kind) => kind === 'eval' && ctx.log(JSON.stringify(r)) };
 */
export interface Callback {
  readonly key?: string;
  /** Loads the run's checkpoint into `ctx.state` when resuming; null when there is none. */
  restore?(ctx: RunContext): CheckpointInfo | null;
  onBegin?(ctx: RunContext): void | Promise<void>;
  /** A record: the metrics of a training step, or of an evaluation. */
  onRecord?(ctx: RunContext, record: MetricsRecord, kind: 'train' | 'eval'): void;
  /** After step `step` (1-based count of steps done) and its evaluation. */
  onStepEnd?(ctx: RunContext, step: number): void;
  /** The run ended: normally, early, or with `error`. */
  onEnd?(ctx: RunContext, error?: unknown): void | Promise<void>;
  stateDict?(): unknown;
  loadStateDict?(state: unknown): void;
  /** Records this callback keeps (metrics.jsonl): preferred by `ctx.records()`. */
  records?(): MetricsRecord[];
}

/** Options of a Trainer: the state to train, how one step goes, and the schedule. */
export interface TrainerOptions extends TrainingState {
  /** Total optimizer steps. */
  steps: number;
  /**
   * One optimizer step returning the loss: the Trainer runs it as a `trainStep` scope with
   * zeroGrad → backward → optimizer.step, then steps the scheduler. Give this or `step`.
   */
  loss?: (ctx: StepContext) => Tensor;
  /** A whole optimizer step (you call backward/step/scheduler); returns its metrics, at least `loss`. */
  step?: (ctx: StepContext) => Record<string, number>;
  /**
   * Evaluation after `step` steps; its metrics are recorded, shown and plotted. It runs as a scope:
   * every tensor it makes, except the model's parameters and buffers, is released when it returns,
   * because a synchronous eval loop never lets the garbage collector in (a CNN's test pass left
   * 2 GiB of activations on the wasm heap before).
   */
  evaluate?: (step: number) => Record<string, number>;
  /** Evaluate every N steps, and at the end (default 100). */
  evalEvery?: number;
  /** Also evaluate the untrained model at step 0 of a fresh run (default true). */
  evalAtStart?: boolean;
  /** Seed of the step generators (default 0). */
  seed?: number;
  /** Shown by the progress bar and in messages (default 'train'). */
  name?: string;
  /** Saved with checkpoints; a resumed run reports fields that differ. */
  config?: Record<string, unknown>;
  callbacks?: Callback[];
  /** Continue from the checkpoint a callback (`Checkpointer`) restores. */
  resume?: boolean;
  /** Stop after this step as if interrupted, checkpointing there (0: run to `steps`). */
  stopAt?: number;
  /** Keep training through NaN or ±∞ metrics (default: throw NonFiniteLossError). */
  allowNonfinite?: boolean;
  /** The advice a NonFiniteLossError ends with (command lines name their flags). */
  nonFiniteHint?: string;
  /** Where `log` lines go when no progress bar takes them (default console.log). */
  log?: (line: string) => void;
}

/** What a finished (or interrupted) run reports. */
export interface FitResult {
  startStep: number;
  endStep: number;
  /** Steps this process ran, and the mean wall time of one (evaluation excluded). */
  stepsRun: number;
  msPerStep: number;
  records: MetricsRecord[];
  lastEval: Record<string, number>;
  /** Why an early stop ended the run, else null. */
  stoppedEarly: string | null;
}

/**
 * The training loop. Each step's metrics are recorded and checked for NaN/∞; evaluation runs at
 * step 0 (fresh runs, unless evalAtStart is false), every `evalEvery` steps and at the end; callbacks see every record and
 * the end of every step. See `fit` for the usual set of callbacks in a run directory.
 * @example
 * const t = new Trainer({ model, optimizer, steps: 100, loss: ({ index }) => crossEntropy(model.forward(xs[index]), ys[index]) });
 * const { records } = await t.fit();
 */
export class Trainer {
  constructor(readonly options: TrainerOptions) {
    const o = options;
    if (!!o.loss === !!o.step) throw new Error('Trainer: give exactly one of `loss` (a loss per step) and `step` (a whole optimizer step)');
    if (!(Number.isSafeInteger(o.steps) && o.steps >= 1)) throw new RangeError(`Trainer: steps must be an integer ≥ 1, got ${o.steps}`);
    const every = o.evalEvery ?? 100;
    if (!(Number.isSafeInteger(every) && every >= 1)) throw new RangeError(`Trainer: evalEvery must be an integer ≥ 1, got ${every}`);
  }

  /** Runs (or resumes) training to `steps` (or `stopAt`). */
  async fit(): Promise<FitResult> {
    const o = this.options;
    const callbacks = o.callbacks ?? [];
    const seed = o.seed ?? 0;
    const evalEvery = o.evalEvery ?? 100;
    const state: TrainingState = { model: o.model, optimizer: o.optimizer, ...(o.scheduler && { scheduler: o.scheduler }) };
    let logger = o.log ?? ((line: string) => console.log(line));
    let stopReason: string | null = null;
    const history: MetricsRecord[] = [];
    const ctx: RunContext = {
      name: o.name ?? 'train', state, config: o.config ?? {}, startStep: 0, endStep: o.steps, steps: o.steps, resumed: false,
      hasEvaluate: !!o.evaluate, lastCheckpoint: 0, stopReason: null,
      log: (line) => logger(line),
      setLogger: (f) => {
        const previous = logger;
        logger = f;
        return previous;
      },
      stop: (reason) => void (stopReason ??= reason),
      records: () => callbacks.find((c) => c.records)?.records?.() ?? history,
      callbackState: () => Object.fromEntries(callbacks.filter((c) => c.key && c.stateDict).map((c) => [c.key!, c.stateDict!()])),
    };
    const set = (k: keyof RunContext, v: unknown) => Object.defineProperty(ctx, k, { value: v, enumerable: true, configurable: true, writable: true });
    Object.defineProperty(ctx, 'stopReason', { get: () => stopReason, enumerable: true });

    if (o.resume) {
      const restorer = callbacks.find((c) => c.restore);
      if (!restorer) throw new Error('Trainer: resume needs a callback that restores checkpoints (a Checkpointer)');
      const info = restorer.restore!(ctx);
      if (info) {
        set('startStep', info.step);
        set('resumed', true);
        ctx.lastCheckpoint = info.step;
        const saved = (info.extra.callbacks ?? {}) as Record<string, unknown>;
        for (const c of callbacks) if (c.key && c.loadStateDict && saved[c.key] !== undefined) c.loadStateDict(saved[c.key]);
        const changed = Object.keys({ ...info.config, ...ctx.config }).filter((k) => JSON.stringify(info.config[k]) !== JSON.stringify(ctx.config[k]));
        ctx.log(`resumed at step ${info.step}${changed.length ? ` (config differs in: ${changed.join(', ')})` : ''}`);
      }
    }
    const start = ctx.startStep;
    set('endStep', o.stopAt && o.stopAt > start ? Math.min(o.stopAt, o.steps) : o.steps);
    const end = ctx.endStep;
    for (const c of callbacks) await c.onBegin?.(ctx);

    const record = (r: MetricsRecord, kind: 'train' | 'eval') => {
      history.push(r);
      for (const c of callbacks) c.onRecord?.(ctx, r, kind);
    };
    let lastEval: Record<string, number> = {};
    const runEval = (step: number) => {
      if (!o.evaluate) return;
      const model = o.model;
      lastEval = scoped(() => o.evaluate!(step), function* () {
        yield* model.parameters();
        yield* model.buffers();
      }, 'Trainer evaluate');
      record({ step, ...lastEval }, 'eval');
    };
    const check = nonFiniteGuard(o.allowNonfinite ?? false, (s) => ctx.log(s), o.nonFiniteHint);
    const runStep = (index: number): Record<string, number> => {
      const sctx: StepContext = { index, generator: (stream = 0) => stepGenerator(seed, index, stream) };
      if (o.step) return o.step(sctx);
      const lossFn = o.loss!;
      const loss = trainStep(o.model, o.optimizer, () => {
        const l = lossFn(sctx);
        o.optimizer.zeroGrad();
        l.backward();
        o.optimizer.step();
        return l.item();
      });
      o.scheduler?.step();
      return { loss };
    };

    let trainMs = 0;
    let last = start;
    try {
      if (start === 0 && o.evalAtStart !== false) runEval(0);
      for (let i = start; i < end && stopReason === null; i++) {
        const t0 = performance.now();
        const m = runStep(i);
        trainMs += performance.now() - t0;
        last = i + 1;
        record({ step: i + 1, ...m }, 'train');
        // before the checkpoint: a diverged step must not overwrite the last good weights
        check(i + 1, m, ctx.lastCheckpoint ? ` (the last checkpoint is from step ${ctx.lastCheckpoint})` : '');
        // evaluation follows the schedule only, so a stopped-and-resumed run logs what a full one does
        if ((i + 1) % evalEvery === 0 || i + 1 === o.steps) runEval(i + 1);
        for (const c of callbacks) c.onStepEnd?.(ctx, i + 1);
      }
    } catch (e) {
      for (const c of callbacks) await c.onEnd?.(ctx, e);
      throw e;
    }
    if (stopReason) ctx.log(`stopped early at step ${last}: ${stopReason}`);
    else if (end < o.steps) ctx.log(`stopped at step ${end} of ${o.steps}; continue with resume`);
    for (const c of callbacks) await c.onEnd?.(ctx);
    const stepsRun = last - start;
    return { startStep: start, endStep: last, stepsRun, msPerStep: stepsRun ? trainMs / stepsRun : 0, records: ctx.records(), lastEval, stoppedEarly: stopReason };
  }
}
