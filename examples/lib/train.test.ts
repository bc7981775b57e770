/**
 * @file The examples' layer over nn's `fit`: the run-control flags map onto fit's options
 * (runs/<name> by default), and a diverged run stops with nn's NonFiniteLossError (exit code 3)
 * whose advice names the examples' flags. The loop itself is tested in packages/nn/test/train.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Linear, NonFiniteLossError, SGD, fit } from '@qgrad/nn';
import { runFlags } from './train.js';

const root = mkdtempSync(join(tmpdir(), 'qgrad-train-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const flags = { runDir: '', steps: 8, seed: 4, evalEvery: 100, ckptEvery: 2, stopAt: 0 };

describe('runFlags', () => {
  it('maps the common flags onto fit, with runs/<name> as the default directory', () => {
    expect(runFlags('mnist-mlp', flags)).toEqual({
      name: 'mnist-mlp', dir: 'runs/mnist-mlp', steps: 8, seed: 4, resume: false, evalEvery: 100, ckptEvery: 2, stopAt: 0, allowNonfinite: false,
      nonFiniteHint: 'try a lower --lr, or pass --allow-nonfinite to keep going',
    });
    expect(runFlags('x', { ...flags, runDir: 'elsewhere', resume: true }).dir).toBe('elsewhere');
  });

  it('a NaN loss stops fit with exit code 3 and advice naming --lr and --allow-nonfinite', async () => {
    const model = new Linear(3, 1);
    const err = await fit({ ...runFlags('nan', { ...flags, runDir: join(root, 'nan') }), model, optimizer: new SGD(model.parameters(), { lr: 0.1 }), progress: false, panels: false, log: () => {}, step: ({ index }) => ({ loss: index === 4 ? Number.NaN : 1 }) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteLossError);
    expect((err as NonFiniteLossError).exitCode).toBe(3);
    expect((err as Error).message).toBe('stopped at step 5: the training loss is NaN (the last checkpoint is from step 4). The run has diverged; try a lower --lr, or pass --allow-nonfinite to keep going.');
  });
});
