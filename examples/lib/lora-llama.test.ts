/**
 * @file The LoRA experiment's functions on a one-layer 32-wide Llama: the reference is pretrained
 * once and reused, a reference asked for with other settings is a CliError naming them; a full and
 * a QLoRA fine-tune report their numbers, QLoRA's float merge gives the adapter model's bits/byte
 * and trains and stores less than the full fine-tune.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CliError } from './args.js';
import { pretrainedReference, runLoraLlama, type PretrainOptions } from './lora-llama.js';

const root = mkdtempSync(join(tmpdir(), 'qgrad-lora-llama-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const pre: PretrainOptions = { dir: join(root, 'pretrained'), steps: 3, batchSize: 2, seqLen: 16, lr: 3e-3, valBlocks: 4, dim: 32, layers: 1, heads: 2, kvHeads: 1, progress: false };

describe('the LoRA experiment', () => {
  it('pretrains once, reuses the reference, and fine-tunes full and QLoRA from it', async () => {
    const info = await pretrainedReference(pre);
    expect(existsSync(join(pre.dir, 'config.json'))).toBe(true);
    expect(info).toMatchObject({ steps: 3, seqLen: 16, config: { dim: 32, nLayers: 1 } });
    expect(await pretrainedReference(pre)).toEqual(info);
    await expect(pretrainedReference({ ...pre, steps: 4 })).rejects.toThrow(CliError);
    await expect(pretrainedReference({ ...pre, steps: 4 })).rejects.toThrow(/holds a reference pretrained with other settings \(steps 3, asked 4\)/);

    const common = { seed: 0, steps: 2, batchSize: 2, rank: 4, valBlocks: 4, pretrained: { dir: pre.dir, info }, progress: false };
    const full = await runLoraLlama({ ...common, config: 'full' });
    const qlora = await runLoraLlama({ ...common, config: 'qlora' });
    expect(full).toMatchObject({ steps: 2, mergedBpb: null, requantizedBpb: null });
    for (const r of [full, qlora]) for (const v of [r.valBpb, r.mobyBpb, r.msPerStep]) expect(Number.isFinite(v)).toBe(true);
    expect(qlora.mergedBpb).toBeCloseTo(qlora.valBpb, 4);
    expect(Number.isFinite(qlora.requantizedBpb!) && Number.isFinite(qlora.requantizeSqnrDb!)).toBe(true);
    expect(qlora.trainable).toBeLessThan(full.trainable);
    expect(qlora.weightBytes + qlora.optimizerBytes).toBeLessThan(full.weightBytes + full.optimizerBytes);
  });
});
