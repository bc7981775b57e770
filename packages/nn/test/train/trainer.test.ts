/**
 * @file The Trainer on a tiny MLP (seconds): progress lines, metrics and checkpoint cadence;
 * exact resume (stop at step 7, resume into differently initialised objects, finish) equals an
 * uninterrupted run bit for bit, weights, AdamW moments, LR schedule and metrics file included;
 * early stopping (and its state surviving a resume); the stop on NaN/∞ losses, before a
 * checkpoint overwrites the last good weights.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import * as q from '@qgrad/core';
import {
  AdamW, Checkpointer, EarlyStopping, JsonlMetrics, LambdaLR, Linear, NonFiniteLossError, ProgressBar, ReLU, SGD, Sequential, Trainer,
  cosineSchedule, fit, loadCheckpoint, nonFiniteGuard, readMetrics, stepGenerator, epochBatch, type Callback, type FitOptions,
} from '@qgrad/nn';
import { scratchDirs } from '../helpers.js';

const freshDir = scratchDirs('trainer');

const X = q.randn([64, 4], { generator: new q.Generator(7) });
const Y = X.matmul(q.tensor([[1], [-2], [0.5], [3]])).add(0.1); // [64, 1]

/** A 4-8-1 MLP with AdamW and a cosine schedule over 12 steps; `init` seeds the weights. */
function setup(init: number) {
  const g = new q.Generator(init);
  const model = new Sequential(new Linear(4, 8, { generator: g }), new ReLU(), new Linear(8, 1, { generator: g }));
  const optimizer = new AdamW(model.parameters(), { lr: 0.05, weightDecay: 0.01 });
  const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: 2, totalSteps: 12 }));
  return { model, optimizer, scheduler };
}

/** fit() options for that MLP: random batches of 8 from the step generator, evaluation on all 64 rows. */
function options(s: ReturnType<typeof setup>, extra: Partial<FitOptions> = {}): FitOptions {
  return {
    ...s, steps: 12, seed: 3, evalEvery: 4, ckptEvery: 3, progress: false, panels: false, log: () => {},
    loss: ({ generator }) => {
      const g = generator(0);
      const idx = q.tensor(Int32Array.from({ length: 8 }, () => g.randint(0, 64)));
      return q.mseLoss(s.model.forward(X.indexSelect(0, idx)), Y.indexSelect(0, idx));
    },
    evaluate: () => q.noGrad(() => ({ val_loss: q.mseLoss(s.model.forward(X), Y).item() })),
    ...extra,
  };
}

const weights = (s: ReturnType<typeof setup>) => Object.fromEntries(Object.entries(s.model.stateDict()).map(([k, t]) => [k, Array.from(t.dataSync())]));

describe('Trainer cadence', () => {
  it('records every step, evaluates at 0, every evalEvery and at the end, checkpoints every ckptEvery and at the end', async () => {
    const dir = freshDir();
    const saves: number[] = [];
    const spy: Callback = { onStepEnd: (ctx) => void (ctx.lastCheckpoint && saves.at(-1) !== ctx.lastCheckpoint && saves.push(ctx.lastCheckpoint)) };
    const r = await fit(options(setup(1), { dir, steps: 10, callbacks: [spy] }));
    expect(saves).toEqual([3, 6, 9, 10]);
    expect(r.records.filter((x) => 'loss' in x).map((x) => x.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(r.records.filter((x) => 'val_loss' in x).map((x) => x.step)).toEqual([0, 4, 8, 10]);
    expect(readMetrics(join(dir, 'metrics.jsonl'))).toEqual(r.records);
    expect(loadCheckpoint(join(dir, 'checkpoint.safetensors'), setup(2)).step).toBe(10);
    expect(readdirSync(dir).sort()).toEqual(['checkpoint.safetensors', 'metrics.jsonl']); // no temporaries left
    expect(r.records.at(-1)!.val_loss).toBeLessThan(r.records[0]!.val_loss as number);
  });

  it('prints a progress line with rate and ETA per step when there is no terminal (every: 0)', async () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    await new Trainer({ ...options(setup(1)), steps: 5, callbacks: [new ProgressBar({ every: 0 })] }).fit();
    const lines = log.mock.calls.map((c) => String(c[0])).filter((l) => l.startsWith('train '));
    log.mockRestore();
    expect(lines).toHaveLength(5);
    expect(lines[2]).toMatch(/^train 3\/5 \| loss \S+ \| [\d.]+ step\/s \| ETA \S+$/);
  });

  it('writes curves.svg through the optional vega packages', async () => {
    const dir = freshDir();
    await fit(options(setup(1), { dir, steps: 4, panels: { loss: ['loss', 'val_loss'] } }));
    const svg = readFileSync(join(dir, 'curves.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('val_loss');
  });
});

describe('resume', () => {
  it('stop at step 7, resume into fresh objects: weights, moments, LR and metrics equal an uninterrupted run bit for bit', async () => {
    const full = setup(1);
    const a = await fit(options(full, { dir: freshDir() }));
    const dir = freshDir();
    const first = setup(1);
    const b1 = await fit(options(first, { dir, stopAt: 7 }));
    expect(b1.endStep).toBe(7);
    const resumed = setup(99); // different weights: everything has to come from the checkpoint
    const b2 = await fit(options(resumed, { dir, resume: true }));
    expect(b2.startStep).toBe(7);
    expect(b2.stepsRun).toBe(5);
    expect(weights(resumed)).toEqual(weights(full));
    expect(resumed.scheduler.getLastLr()).toEqual(full.scheduler.getLastLr());
    const moments = (s: ReturnType<typeof setup>) => Object.values(s.optimizer.stateDict().state).map((st) => Object.values(st).map((v) => (typeof v === 'number' ? v : Array.from(v.dataSync()))));
    expect(moments(resumed)).toEqual(moments(full));
    expect(b2.records).toEqual(a.records);
  });

  it('without a checkpoint, resume starts from step 0 and says so', async () => {
    const lines: string[] = [];
    const r = await fit(options(setup(1), { dir: freshDir(), steps: 2, resume: true, log: (l) => lines.push(l) }));
    expect(r.startStep).toBe(0);
    expect(lines.some((l) => l.startsWith('no checkpoint at '))).toBe(true);
  });

  it('step generators and epoch batches are pure functions of (seed, step)', () => {
    expect(stepGenerator(3, 10).random()).toBe(stepGenerator(3, 10).random());
    expect(stepGenerator(3, 10).random()).not.toBe(stepGenerator(3, 11).random());
    const all = Array.from({ length: 10 }, (_, i) => epochBatch(40, 4, i, 5)).flat();
    expect([...all].sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, i) => i)); // one epoch = a permutation
    expect(() => epochBatch(40, 41, 0, 5)).toThrow(/batch size 41 must be an integer in \[1, 40\]/);
  });
});

describe('EarlyStopping', () => {
  /** A run whose evaluation returns `vals[k]` at its k-th call. */
  const scripted = (vals: number[]) => {
    let k = 0;
    return () => ({ val_loss: vals[Math.min(k++, vals.length - 1)]! });
  };

  it('stops after `patience` evaluations without improvement, checkpointing the stop step', async () => {
    const dir = freshDir();
    const lines: string[] = [];
    const r = await fit(options(setup(1), { dir, steps: 40, evalEvery: 2, log: (l) => lines.push(l), evaluate: scripted([5, 4, 3, 3.5, 3.2, 3.1, 1]), callbacks: [new EarlyStopping({ monitor: 'val_loss', patience: 3 })] }));
    // evaluations at 0, 2, 4 (best 3), 6, 8, 10 → three without improvement
    expect(r.endStep).toBe(10);
    expect(r.stoppedEarly).toBe('val_loss has not improved for 3 evaluation(s) (best 3 at step 4)');
    expect(lines).toContain(`stopped early at step 10: ${r.stoppedEarly}`);
    expect(loadCheckpoint(join(dir, 'checkpoint.safetensors'), setup(2)).step).toBe(10);
  });

  it('keeps its best value and counter across a resume, stopping where an uninterrupted run does', async () => {
    const vals = [5, 4, 3, 3.5, 3.2, 3.1, 1];
    const dir = freshDir();
    const es = () => new EarlyStopping({ monitor: 'val_loss', patience: 3 });
    await fit(options(setup(1), { dir, steps: 40, evalEvery: 2, ckptEvery: 1, stopAt: 7, evaluate: scripted(vals), callbacks: [es()] }));
    const r = await fit(options(setup(1), { dir, steps: 40, evalEvery: 2, ckptEvery: 1, resume: true, evaluate: scripted(vals.slice(4)), callbacks: [es()] }));
    expect(r.endStep).toBe(10);
  });

  it('with mode max watches for increases; without evaluate it is an error', async () => {
    const r = await fit(options(setup(1), { steps: 40, evalEvery: 1, evaluate: scripted([0.1, 0.2, 0.2, 0.2]), callbacks: [new EarlyStopping({ monitor: 'acc', mode: 'max', patience: 2 })] })).catch((e: Error) => e);
    expect((r as Error).message).toMatch(/the evaluation at step 0 has no metric 'acc' \(it has val_loss\)/);
    const m = await fit(options(setup(1), { steps: 40, evalEvery: 1, evaluate: () => ({ acc: 0.5 }), callbacks: [new EarlyStopping({ monitor: 'acc', mode: 'max', patience: 2 })] }));
    expect(m.endStep).toBe(2);
    await expect(fit(options(setup(1), { evaluate: undefined, callbacks: [new EarlyStopping({ monitor: 'val_loss' })] }))).rejects.toThrow(/the Trainer has no evaluate/);
  });
});

describe('a non-finite loss', () => {
  function stub(dir: string, losses: number[], extra: Partial<FitOptions> = {}) {
    const s = setup(1);
    return fit({ ...s, dir, steps: 8, evalEvery: 100, ckptEvery: 2, progress: false, panels: false, log: () => {}, step: ({ index }) => ({ loss: losses[index] ?? 1 / (index + 1) }), ...extra });
  }

  it('stops training at its step, naming the step, the loss and the last checkpoint, which stays the good one', async () => {
    const dir = freshDir();
    const err = await stub(dir, [1, 0.9, 0.8, 0.7, Number.NaN]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteLossError);
    const e = err as NonFiniteLossError;
    expect([e.step, e.metric, e.value, e.exitCode]).toEqual([5, 'loss', Number.NaN, 3]);
    expect(e.message).toBe('stopped at step 5: the training loss is NaN (the last checkpoint is from step 4). The run has diverged; try a lower learning rate, or set allowNonfinite to keep going.');
    expect(loadCheckpoint(join(dir, 'checkpoint.safetensors'), setup(2)).step).toBe(4);
    expect(readFileSync(join(dir, 'metrics.jsonl'), 'utf8')).toContain('{"step":5,"loss":"NaN"}');
    expect(readMetrics(join(dir, 'metrics.jsonl')).map((r) => r.loss)).toEqual([1, 0.9, 0.8, 0.7, Number.NaN]);
  });

  it('stops on +∞ at the first step too, when there is no checkpoint yet', async () => {
    const dir = freshDir();
    await expect(stub(dir, [Infinity])).rejects.toThrow(/^stopped at step 1: the training loss is Infinity\. /);
    expect(existsSync(join(dir, 'checkpoint.safetensors'))).toBe(false);
  });

  it('stops a genuinely diverging run (SGD with a far too large learning rate)', async () => {
    const model = new Linear(4, 1, { generator: new q.Generator(0) });
    const optimizer = new SGD(model.parameters(), { lr: 50 });
    const err = await new Trainer({ model, optimizer, steps: 500, log: () => {}, loss: () => q.mseLoss(model.forward(X), Y) }).fit().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteLossError);
    const e = err as NonFiniteLossError;
    expect(e.step).toBeGreaterThan(1);
    expect(e.step).toBeLessThan(500);
  });

  it('with allowNonfinite, trains to the end, records the values and warns once', async () => {
    const dir = freshDir();
    const lines: string[] = [];
    const r = await stub(dir, [1, Number.NaN, Infinity, Number.NaN], { allowNonfinite: true, log: (l) => lines.push(l) });
    expect(r.stepsRun).toBe(8);
    expect(r.records.map((x) => x.loss).slice(0, 4)).toEqual([1, Number.NaN, Infinity, Number.NaN]);
    expect(lines.filter((l) => l.includes('allowNonfinite'))).toEqual(['step 2: the training loss is NaN; continuing (allowNonfinite; later ones are not reported)']);
    expect(loadCheckpoint(join(dir, 'checkpoint.safetensors'), setup(2)).step).toBe(8);
  });

  it('nonFiniteGuard passes finite metrics and names the first non-finite one, with the caller\'s hint', () => {
    const check = nonFiniteGuard(false, () => {}, 'pass --allow-nonfinite');
    expect(() => check(1, { loss: 2, bpb: 3 })).not.toThrow();
    expect(() => check(7, { loss: 2, bpb: -Infinity })).toThrow('stopped at step 7: the training bpb is -Infinity. The run has diverged; pass --allow-nonfinite.');
  });
});

describe('Trainer options', () => {
  it('refuses both or neither of loss/step, bad steps, and resume without a checkpointer', async () => {
    const s = setup(1);
    expect(() => new Trainer({ ...s, steps: 3 })).toThrow(/exactly one of `loss`/);
    expect(() => new Trainer({ ...s, steps: 0, step: () => ({ loss: 1 }) })).toThrow(/steps must be an integer ≥ 1, got 0/);
    await expect(new Trainer({ ...s, steps: 3, resume: true, step: () => ({ loss: 1 }) }).fit()).rejects.toThrow(/resume needs a callback that restores checkpoints/);
    expect(() => new Checkpointer('x', 0)).toThrow(/every must be an integer ≥ 1/);
    expect(new JsonlMetrics('x').records()).toEqual([]);
  });
});

describe('Trainer evaluate', () => {
  it('releases what evaluate makes (a synchronous eval loop never lets the garbage collector in) and keeps the model', async () => {
    const s = setup(1);
    const big = q.randn([2048, 4], { generator: new q.Generator(5) }); // activations of ≥ 4096 elements: backend-owned buffers
    const live: number[] = [];
    const spy: Callback = { onRecord: (_ctx, _r, kind) => void (kind === 'eval' && live.push(q.memory().buffers)) };
    const r = await fit(options(s, {
      steps: 12, callbacks: [spy],
      evaluate: () => q.noGrad(() => ({ val_loss: s.model.forward(big).square().mean().item() })),
    }));
    expect(live).toHaveLength(4); // steps 0, 4, 8, 12
    expect(new Set(live.slice(1)).size).toBe(1); // step 0 precedes the optimizer state
    expect(Number.isFinite(r.lastEval.val_loss)).toBe(true);
    expect(s.model.forward(X).shape).toEqual([64, 1]); // parameters survived every evaluation
  });
});
