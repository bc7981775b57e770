/**
 * @file examples/experiments/ptq.ts as a user runs it (tsx subprocesses, a one-layer 32-wide Llama
 * and a 2-channel CNN trained for 3 steps, in a temp dir): one seed at 3 bits writes runs.jsonl and
 * both models' results.{md,json,svg} with every configuration; GPTQ's layers beat round-to-nearest
 * on their calibration inputs; a second call trains and quantizes nothing (cached float models,
 * resumed grid); --float-dir takes each seed's float model from a llama grid's fp runs and refuses a
 * seed whose run has not finished; a bad --models is a one-line error.
 */
import { execFile } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeRecord } from '@qgrad/nn';
import { runQatLlama } from '../lib/qat-llama.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'qgrad-ptq-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', 'experiments', 'ptq.ts'), ...args], { cwd: repo, timeout: 180_000, env: { ...process.env, FORCE_COLOR: '0', QGRAD_THREADS: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const tiny = [
  '--seeds', '0', '--bits', '3', '--pretrain-steps', '3', '--batch-size', '2', '--seq-len', '16', '--dim', '32', '--layers', '1', '--heads', '2', '--kv-heads', '1',
  '--val-blocks', '4', '--calib-seqs', '4', '--cnn-steps', '3', '--cnn-batch', '8', '--channels', '2', '--calib-images', '32',
];
const CONFIGS = ['float', 'W3 rtn', 'W3 rtn+H', 'W3 gptq', 'W3 gptq+H', 'W3 awq', 'W3 awq+H', 'W3 awq-clip', 'W3 awq-clip+H'];

interface Row { config: string; values: number[]; extra: Record<string, string> }

describe('experiments/ptq', () => {
  it('runs every method ± Hadamard on both models, writes the tables and resumes without retraining', async () => {
    const dir = join(root, 'grid');
    const first = await run([...tiny, '--run-dir', dir]);
    expect(first.code, first.stderr).toBe(0);
    const lines = readFileSync(join(dir, 'runs.jsonl'), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(2 * CONFIGS.length);
    for (const [model, ok] of [['llama', (v: number) => v > 0 && v < 10], ['cnn', (v: number) => v >= 0 && v <= 100]] as const) {
      for (const f of ['results.md', 'results.json', 'results.svg']) expect(existsSync(join(dir, model, f)), `${model}/${f}`).toBe(true);
      const json = JSON.parse(readFileSync(join(dir, model, 'results.json'), 'utf8')) as { rows: Row[]; meta: { paired: string } };
      expect(json.rows.map((r) => r.config)).toEqual(CONFIGS);
      for (const r of json.rows) expect(r.values.length === 1 && ok(r.values[0]!), `${model} ${r.config}: ${r.values}`).toBe(true);
      // GPTQ minimises each layer's output error on exactly these inputs, so it must beat RTN there
      const gptq = json.rows.find((r) => r.config === 'W3 gptq')!;
      expect(Number(gptq.extra['layer SQNR dB'])).toBeGreaterThan(Number(gptq.extra['RTN layer SQNR dB']));
      expect(json.meta.paired).toContain('W3: gptq − rtn');
      expect(readFileSync(join(dir, model, 'results.md'), 'utf8')).toMatch(/### Paired per seed/);
    }
    expect(first.stdout).toMatch(/llama seed 0: float reference .* val \d\.\d{4} bits\/byte/);

    const again = await run([...tiny, '--run-dir', dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(readFileSync(join(dir, 'runs.jsonl'), 'utf8').trim().split('\n')).toHaveLength(2 * CONFIGS.length);
    expect(again.stdout).not.toMatch(/W3 gptq: /); // nothing quantized again
    expect(again.stderr).not.toMatch(/pretrain|ptq gptq/); // no progress bar: nothing trained or calibrated
  }, 400_000);

  it("--float-dir quantizes each seed's fp run of a llama grid, and refuses a seed whose run is unfinished", async () => {
    const grid = join(root, 'llama-grid');
    const r = await runQatLlama({ config: 'fp', seed: 0, steps: 3, batchSize: 2, seqLen: 16, lr: 3e-3, dim: 32, layers: 1, heads: 2, kvHeads: 1, valBlocks: 2, progress: false, dir: join(grid, 'fp', 'seed0') });
    appendFileSync(join(grid, 'runs.jsonl'), encodeRecord({ step: 0, key: 'fp/0/3x2x16', ...r }));
    const dir = join(root, 'from-grid');
    const ok = await run(['--models', 'llama', '--seeds', '0', '--bits', '3', '--methods', 'rtn', '--seq-len', '16', '--val-blocks', '4', '--calib-seqs', '4', '--float-dir', grid, '--run-dir', dir]);
    expect(ok.code, ok.stderr).toBe(0);
    const json = JSON.parse(readFileSync(join(dir, 'llama', 'results.json'), 'utf8')) as { rows: Row[]; meta: { pretrained: { steps: number; config: { dim: number } }[] } };
    expect(json.rows.map((x) => x.config)).toEqual(['float', 'W3 rtn', 'W3 rtn+H']);
    expect(json.meta.pretrained[0]).toMatchObject({ steps: 3, config: { dim: 32 } });
    const missing = await run(['--models', 'llama', '--seeds', '1', '--float-dir', grid, '--run-dir', dir]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/no finished fp run of seed 1/);
  }, 200_000);

  it('a bad --models is a one-line error with exit code 2', async () => {
    const r = await run(['--models', 'vit', '--run-dir', join(root, 'never')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe("experiments/ptq: --models takes llama and/or cnn, got 'vit'");
  });
});
