/**
 * @file The training driver's stop on NaN or infinite losses: an injected NaN, an injected ∞ and
 * a genuinely diverging SGD run all stop with NonFiniteLossError naming the step and the value,
 * before a checkpoint can overwrite the last good weights; --allow-nonfinite trains on, and the
 * metrics file records the values as "NaN"/"Infinity" rather than null.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { mseLoss, tensor } from '@qgrad/core';
import { Linear, SGD } from '@qgrad/nn';
import { CliError } from './args.js';
import { loadCheckpoint } from './checkpoint.js';
import { readMetrics } from './metrics.js';
import { NonFiniteLossError, nonFiniteGuard, train, type TrainOptions } from './train.js';

const root = mkdtempSync(join(tmpdir(), 'qgrad-train-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => {
  const d = join(root, `case${n++}`);
  mkdirSync(d);
  return d;
};

function setup() {
  const model = new Linear(3, 1);
  return { model, optimizer: new SGD(model.parameters(), { lr: 0.01 }) };
}

/** A run whose step i returns `losses[i]` (1 / (i + 1) past the end). */
function run(dir: string, losses: number[], extra: Partial<TrainOptions> = {}) {
  return train({ name: 'nonfinite', dir, steps: 8, resume: false, evalEvery: 100, ckptEvery: 2, state: setup(), config: {}, step: (i) => ({ loss: losses[i] ?? 1 / (i + 1) }), ...extra });
}

describe('a non-finite loss', () => {
  it('stops training at its step, naming the step, the loss and the last checkpoint', async () => {
    const dir = freshDir();
    const err = await run(dir, [1, 0.9, 0.8, 0.7, Number.NaN]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteLossError);
    expect(err).toBeInstanceOf(CliError);
    const e = err as NonFiniteLossError;
    expect([e.step, e.metric, e.value, e.exitCode]).toEqual([5, 'loss', Number.NaN, 3]);
    expect(e.message).toMatch(/^stopped at step 5: the training loss is NaN \(the checkpoint in .* is from step 4\)\./);
    expect(e.message).toContain('--allow-nonfinite');
    // the checkpoint is the last good one, and the metrics say NaN, not null
    expect(loadCheckpoint(join(dir, 'checkpoint.safetensors'), setup()).step).toBe(4);
    expect(readFileSync(join(dir, 'metrics.jsonl'), 'utf8')).toContain('{"step":5,"loss":"NaN"}');
    expect(readMetrics(join(dir, 'metrics.jsonl')).map((r) => r.loss)).toEqual([1, 0.9, 0.8, 0.7, Number.NaN]);
  });

  it('stops on +∞ at the first step too, when there is no checkpoint yet', async () => {
    const dir = freshDir();
    await expect(run(dir, [Infinity])).rejects.toThrow(/^stopped at step 1: the training loss is Infinity\. /);
    expect(existsSync(join(dir, 'checkpoint.safetensors'))).toBe(false);
  });

  it('stops a genuinely diverging run (SGD with a far too large learning rate)', async () => {
    const model = new Linear(3, 1);
    const optimizer = new SGD(model.parameters(), { lr: 50 });
    const x = tensor([[1, 2, 3], [-1, 0.5, 2], [3, -2, 1], [0.5, 0.5, -1]]); // [4, 3]
    const y = tensor([[1], [0], [2], [-1]]); // [4, 1]
    const err = await train({
      name: 'diverge', dir: freshDir(), steps: 500, resume: false, evalEvery: 1000, ckptEvery: 1000, state: { model, optimizer }, config: {},
      step: () => {
        const loss = mseLoss(model.forward(x), y);
        optimizer.zeroGrad();
        loss.backward();
        optimizer.step();
        return { loss: loss.item() };
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteLossError);
    const e = err as NonFiniteLossError;
    expect(e.step).toBeGreaterThan(1);
    expect(e.step).toBeLessThan(500);
    expect(e.message).toContain(`step ${e.step}: the training loss is ${e.value}`);
  });

  it('with allowNonfinite, trains to the end, records the values and warns once', async () => {
    const dir = freshDir();
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const r = await run(dir, [1, Number.NaN, Infinity, Number.NaN], { allowNonfinite: true });
    const printed = log.mock.calls.map((c) => String(c[0]));
    log.mockRestore();
    expect(r.stepsRun).toBe(8);
    expect(r.records.map((x) => x.loss).slice(0, 4)).toEqual([1, Number.NaN, Infinity, Number.NaN]);
    expect(printed.filter((l) => l.includes('--allow-nonfinite'))).toEqual(['step 2: the training loss is NaN; continuing (--allow-nonfinite; later ones are not reported)']);
    expect(loadCheckpoint(join(dir, 'checkpoint.safetensors'), setup()).step).toBe(8);
  });
});

describe('nonFiniteGuard', () => {
  it('passes finite metrics and names the first non-finite one', () => {
    const check = nonFiniteGuard(false);
    expect(() => check(1, { loss: 2, bpb: 3 })).not.toThrow();
    expect(() => check(7, { loss: 2, bpb: -Infinity })).toThrow(/^stopped at step 7: the training bpb is -Infinity\./);
  });
});
