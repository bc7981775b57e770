/**
 * @file The QAT Llama run through nn's fit: a diverging run (lr 10⁴) stops at the step whose loss
 * is NaN, with the metrics written up to it; --allow-nonfinite runs on and records NaN, not null;
 * stopped at step 6 and resumed, a W4A4 LSQ run ends with the metrics and weights of an
 * uninterrupted one; model-size options shape the model; flags only the text can check
 * (--seq-len, --batch-size) are CliErrors; `init` starts a QAT fine-tune from a float run's weights;
 * the HALO, 2:4 (CAST / magnitude, ± W4) and W2 configs build and train.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadSafetensors } from '@qgrad/core';
import { NonFiniteLossError, readMetrics } from '@qgrad/nn';
import { CliError } from './args.js';
import { qatLlamaModelConfig, runQatLlama, type QatLlamaOptions } from './qat-llama.js';

const root = mkdtempSync(join(tmpdir(), 'qgrad-qat-llama-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const tiny: QatLlamaOptions = { config: 'fp', seed: 0, steps: 20, batchSize: 2, seqLen: 8, lr: 1e4, dim: 16, layers: 1, heads: 2, kvHeads: 1, valBlocks: 1, progress: false };

describe('runQatLlama', () => {
  it('stops a diverging run at the NaN step and keeps the metrics up to it', async () => {
    const dir = join(root, 'stop');
    const err = await runQatLlama({ ...tiny, dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteLossError);
    const e = err as NonFiniteLossError;
    expect(e.message).toMatch(new RegExp(`^stopped at step ${e.step}: the training loss is ${e.value}\\. The run has diverged; try a lower --lr, or pass --allow-nonfinite to keep going \\(fp, seed 0\\)\\.$`));
    const records = readMetrics(join(dir, 'metrics.jsonl'));
    expect(records.map((r) => r.step)).toEqual(Array.from({ length: e.step }, (_, i) => i + 1));
    expect(Number.isFinite(records.at(-1)!.bpb)).toBe(false);
  });

  it('with allowNonfinite, runs every step and records NaN rather than null', async () => {
    const dir = join(root, 'allow');
    const r = await runQatLlama({ ...tiny, dir, allowNonfinite: true });
    expect(r.steps).toBe(20);
    const text = readFileSync(join(dir, 'metrics.jsonl'), 'utf8');
    expect(text).not.toContain('null');
    expect(readMetrics(join(dir, 'metrics.jsonl')).map((x) => x.step)).toEqual([...Array.from({ length: 20 }, (_, i) => i + 1), 20]);
  });

  it('turns a window longer than the text or a batch larger than it into flag errors', async () => {
    await expect(runQatLlama({ ...tiny, seqLen: 10_000_000 })).rejects.toThrow(CliError);
    await expect(runQatLlama({ ...tiny, seqLen: 10_000_000 })).rejects.toThrow(/^--seq-len 10000000 is too long for the text/);
    await expect(runQatLlama({ ...tiny, batchSize: 1e9 })).rejects.toThrow(/^--batch-size must be an integer in \[1, \d+\] \(there are \d+ training windows\), got 1000000000/);
  });

  it('resumes a W4A4 LSQ run stopped at step 6 into the metrics and weights of an uninterrupted one', async () => {
    const opts: QatLlamaOptions = { ...tiny, config: 'w4a4-lsq', dim: 32, steps: 10, lr: 3e-3, ckptEvery: 3 }; // W4 groups of 32 need dim ≥ 32
    const full = await runQatLlama({ ...opts, dir: join(root, 'full') });
    const dir = join(root, 'resumed');
    const part = await runQatLlama({ ...opts, dir, stopAt: 6 });
    expect(part.steps).toBe(6);
    const rest = await runQatLlama({ ...opts, dir, resume: true });
    expect(rest.valBpb).toBe(full.valBpb);
    expect(readMetrics(join(dir, 'metrics.jsonl'))).toEqual(readMetrics(join(root, 'full', 'metrics.jsonl')));
    const weights = (d: string) => readFileSync(join(root, d, 'checkpoint.safetensors'));
    expect(Buffer.compare(weights('resumed'), weights('full'))).toBe(0);
  });

  it('starts a ternary fine-tune from a float checkpoint (init), and names the mismatch of a wrong-size one', async () => {
    const base: QatLlamaOptions = { ...tiny, steps: 3, lr: 3e-3 };
    await runQatLlama({ ...base, dir: join(root, 'float') });
    const init = join(root, 'float', 'checkpoint.safetensors');
    // a step too small to move float32 weights: the fine-tune's latent weights are the float run's
    await runQatLlama({ ...base, config: 'ternary-ste', seed: 7, steps: 1, lr: 1e-20, init, dir: join(root, 'tuned') });
    const before = loadSafetensors(init);
    const after = loadSafetensors(join(root, 'tuned', 'checkpoint.safetensors'));
    const w = 'model.model.layers.0.mlp.gate_proj.weight';
    expect(after[w]!.dataSync()).toEqual(before[w]!.dataSync());
    expect(after['model.model.embed_tokens.weight']!.dataSync()).toEqual(before['model.model.embed_tokens.weight']!.dataSync());
    await expect(runQatLlama({ ...base, dim: 32, init })).rejects.toThrow(/loadStateDict: size mismatch for model\.embed_tokens\.weight/);
  });

  it('distils from the float model it starts from: the parts are recorded, TI adds its score loss, fp cannot be a student', async () => {
    const base: QatLlamaOptions = { ...tiny, steps: 2, lr: 3e-3 };
    await runQatLlama({ ...base, dir: join(root, 'kd-float') });
    const init = join(root, 'kd-float', 'checkpoint.safetensors');
    const dir = join(root, 'kd');
    await runQatLlama({ ...base, config: 'ternary-ste', init, dir, distill: { temperature: 2, alpha: 0.5, hidden: 1, tiSteps: 1 } });
    const records = readMetrics(join(dir, 'metrics.jsonl')).filter((r) => typeof r.kd === 'number');
    expect(records.length).toBe(2);
    for (const r of records) {
      expect(r.kd).toBeGreaterThan(0);
      expect(r.bpb).toBeCloseTo((r.task as number) / Math.LN2, 10);
    }
    expect(records[0]!.scores).toBeGreaterThan(0);
    expect(records[0]!.loss).toBeCloseTo(0.5 * (records[0]!.task as number) + 0.5 * (records[0]!.kd as number) + (records[0]!.features as number) + (records[0]!.scores as number), 5);
    await expect(runQatLlama({ ...base, init, distill: {} })).rejects.toThrow(/distillation needs a quantized student/);
  });

  it('refuses --distill without --init (the teacher would be the random initialisation)', async () => {
    await expect(runQatLlama({ ...tiny, config: 'ternary-ste', lr: 1e-3, distill: {} })).rejects.toThrow(CliError);
    await expect(runQatLlama({ ...tiny, config: 'ternary-ste', lr: 1e-3, distill: {} })).rejects.toThrow(/^--distill needs --init/);
  });

  it('trains the HALO and W2 configs: a few steps change the weights differently from float, CPU time is counted', async () => {
    const base: QatLlamaOptions = { ...tiny, dim: 32, steps: 3, lr: 3e-3 };
    const w = 'model.model.layers.0.mlp.down_proj.weight';
    const weight = (d: string) => loadSafetensors(join(root, d, 'checkpoint.safetensors'))[w]!.dataSync();
    const fp = await runQatLlama({ ...base, dir: join(root, 'ref-fp') });
    for (const config of ['halo-int8', 'halo-fp8', 'w2-lsq']) {
      const r = await runQatLlama({ ...base, config, dir: join(root, config) });
      expect(Number.isFinite(r.valBpb)).toBe(true);
      expect(r.cpuMsPerStep).toBeGreaterThan(0);
      // same seed and batches: only the low-precision products (or the W2 grid) can move the weights elsewhere
      const [a, b] = [weight(config), weight('ref-fp')];
      expect(Array.from(a)).not.toEqual(Array.from(b));
      expect(Math.max(...a.map((v, i) => Math.abs(v - b[i]!)))).toBeLessThan(0.05);
    }
    expect(fp.sparsity).toBeUndefined();
  });

  it('trains the 2:4 configs and ends with at most two non-zeros in every group of four decoder inputs', async () => {
    const base: QatLlamaOptions = { ...tiny, dim: 32, steps: 4, lr: 3e-3 };
    for (const config of ['cast24', 'cast24-w4', 'cast24-w4-d20', 'mag24', 'mag24-w4']) {
      const r = await runQatLlama({ ...base, config, dir: join(root, config) });
      expect(Number.isFinite(r.valBpb)).toBe(true);
      expect(r.sparsity!.zeroFraction).toBeGreaterThanOrEqual(0.5);
      if (config.startsWith('cast')) {
        expect(Number.isFinite(r.sparsity!.denseValBpb)).toBe(true);
        expect(r.sparsity!.prunedNormPct).toBeGreaterThan(0);
        expect(r.sparsity!.prunedNormPct).toBeLessThan(100);
      } else expect(r.sparsity!.denseValBpb).toBeUndefined();
      const sd = loadSafetensors(join(root, config, 'checkpoint.safetensors'));
      const decoder = Object.keys(sd).filter((k) => /^model\.model\.layers\.\d+\..*_proj\.weight$/.test(k));
      expect(decoder.length).toBe(7);
      for (const k of decoder) {
        const v = sd[k]!.dataSync();
        for (let g = 0; g < v.length; g += 4) expect([0, 1, 2, 3].filter((j) => v[g + j] !== 0).length).toBeLessThanOrEqual(2);
      }
      // the embedding is not a target
      expect(Array.from(sd['model.model.embed_tokens.weight']!.dataSync()).every((x) => x !== 0)).toBe(true);
    }
  });

  it('resumes a CAST + W4 run stopped mid-ramp into the metrics and weights of an uninterrupted one (its decay clock is checkpointed)', async () => {
    const opts: QatLlamaOptions = { ...tiny, config: 'cast24-w4', dim: 32, steps: 6, lr: 3e-3, ckptEvery: 2 };
    const full = await runQatLlama({ ...opts, dir: join(root, 'cast-full') });
    const dir = join(root, 'cast-resumed');
    await runQatLlama({ ...opts, dir, stopAt: 2 });
    const rest = await runQatLlama({ ...opts, dir, resume: true });
    expect(rest.valBpb).toBe(full.valBpb);
    expect(rest.sparsity).toEqual(full.sparsity);
    const weights = (d: string) => readFileSync(join(root, d, 'checkpoint.safetensors'));
    expect(Buffer.compare(weights('cast-resumed'), weights('cast-full'))).toBe(0);
  });

  it('sizes the model from --dim/--layers/--heads/--kv-heads/--seq-len', () => {
    expect(qatLlamaModelConfig({ seqLen: 32, dim: 64, layers: 2, heads: 4, kvHeads: 1 })).toMatchObject({ dim: 64, hiddenDim: 192, nLayers: 2, nHeads: 4, nKvHeads: 1, maxSeqLen: 32 });
    expect(qatLlamaModelConfig({ seqLen: 64 })).toMatchObject({ dim: 128, hiddenDim: 384, nLayers: 4, nHeads: 4, nKvHeads: 2, maxSeqLen: 64 });
  });
});
