/**
 * @file Exact resumption through checkpoint files (saveCheckpoint/loadCheckpoint): a tiny Llama trained 20 steps, saved,
 * restored into freshly built (differently initialised) objects and trained 20 more follows the
 * uninterrupted 40-step loss trajectory bit for bit.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { AdamW, ByteDataset, LambdaLR, Llama, cosineSchedule, epochBatch, loadCheckpoint, saveCheckpoint, type LlamaConfig } from '@qgrad/nn';

const cfg: LlamaConfig = { vocabSize: 64, dim: 16, nLayers: 2, nHeads: 2, nKvHeads: 1, hiddenDim: 32, maxSeqLen: 16, normEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false };
const bytes = Uint8Array.from({ length: 400 }, (_, i) => (i * 7 + (i % 13)) % 64);
const data = new ByteDataset(bytes, 12);
const dir = mkdtempSync(join(tmpdir(), 'qgrad-ckpt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh model/optimizer/scheduler; `init` seeds the weights. */
function setup(init: number) {
  const model = new Llama(cfg, { generator: new q.Generator(init) });
  const optimizer = new AdamW(model.parameters(), { lr: 3e-3, weightDecay: 0.1 });
  const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: 5, totalSteps: 40 }));
  return { model, optimizer, scheduler };
}

function run(s: ReturnType<typeof setup>, from: number, to: number): number[] {
  const losses: number[] = [];
  for (let i = from; i < to; i++) {
    const [x, y] = data.getBatch(epochBatch(data.length, 4, i, 0)); // [4, 12] each
    const loss = s.model.loss(x, y);
    loss.backward();
    s.optimizer.step();
    s.optimizer.zeroGrad();
    s.scheduler.step();
    losses.push(loss.item());
  }
  return losses;
}

describe('checkpoints', () => {
  it('train 20, save, resume for 20 more: the loss trajectory equals an uninterrupted 40-step run exactly', () => {
    const full = run(setup(1), 0, 40);
    const first = setup(1);
    const a = run(first, 0, 20);
    const path = join(dir, 'ckpt.safetensors');
    saveCheckpoint(path, first, 20, { note: 'test' });
    const resumed = setup(99); // different weights: everything must come from the file
    const info = loadCheckpoint(path, resumed);
    expect(info).toEqual({ step: 20, config: { note: 'test' }, extra: {} });
    expect(resumed.scheduler.lastStep).toBe(20);
    const b = run(resumed, 20, 40);
    expect([...a, ...b]).toEqual(full);
    expect(full[39]!).toBeLessThan(full[0]!);
  });

  it('restores AdamW moments and step counts bit for bit', () => {
    const s = setup(2);
    run(s, 0, 3);
    const path = join(dir, 'moments.safetensors');
    saveCheckpoint(path, s, 3);
    const t = setup(3);
    loadCheckpoint(path, t);
    const before = s.optimizer.stateDict();
    const after = t.optimizer.stateDict();
    expect(Object.keys(after.state)).toEqual(Object.keys(before.state));
    for (const [i, st] of Object.entries(before.state)) {
      for (const [k, v] of Object.entries(st)) {
        const w = after.state[Number(i)]![k]!;
        if (typeof v === 'number') expect(w).toBe(v);
        else expect(Array.from((w as q.Tensor).dataSync())).toEqual(Array.from(v.dataSync()));
      }
    }
    expect(after.paramGroups.map((g) => g.lr)).toEqual(before.paramGroups.map((g) => g.lr));
  });

  it('refuses a file without training metadata', () => {
    const path = join(dir, 'plain.safetensors');
    const s = setup(4);
    q.saveSafetensors(path, s.model.stateDict());
    expect(() => loadCheckpoint(path, s)).toThrow(/has no optimizer metadata/);
  });
});
