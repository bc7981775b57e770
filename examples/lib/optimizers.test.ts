/**
 * @file examples/experiments/optimizers.ts as a user runs it (a tsx subprocess with --in-process,
 * since a child per training costs seconds; a 1-layer 16-wide Llama, 3 steps, one seed, temp dir):
 * the sweep picks an LR per optimizer, the report has the table, sweep, paired and timing sections
 * and the files; a second invocation trains nothing; a bad LR list is a one-line exit-2 error.
 * And: under Muon/AuON with the auxiliary AdamW at lr 0, runQatLlama moves the decoder matrices only.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Generator, loadSafetensorsWithMetadata, type Tensor } from '@qgrad/core';
import { Llama, readMetrics } from '@qgrad/nn';
import { qatLlamaModelConfig, runQatLlama } from './qat-llama.js';

const same = (a: Tensor, b: Tensor) => { const x = a.dataSync(); const y = b.dataSync(); return x.length === y.length && x.every((v, i) => v === y[i]); };

const repo = fileURLToPath(new URL('../..', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'qgrad-optimizers-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', 'experiments', 'optimizers.ts'), ...args], { cwd: repo, timeout: 200_000, env: { ...process.env, FORCE_COLOR: '0', QGRAD_THREADS: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const tiny = ['--in-process', '--steps', '3', '--batch-size', '2', '--seq-len', '16', '--dim', '16', '--layers', '1', '--val-blocks', '2', '--bench-sizes', '16'];

describe('experiments/optimizers', () => {
  it('sweeps, runs every seed at the chosen LRs, reports, and resumes without training again', async () => {
    const dir = join(root, 'grid');
    const argv = [...tiny, '--seeds', '0', '--adamw-lrs', '0.003,0.01', '--muon-lrs', '0.03', '--auon-lrs', '0.3', '--run-dir', dir];
    const r = await run(argv);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const runs = readMetrics(join(dir, 'runs.jsonl'));
    expect(runs).toHaveLength(2 + 1 + 1); // the sweeps on seed 0, which are also the seed-0 runs at the chosen LRs
    for (const x of runs) expect(Number.isFinite(x.valBpb) && (x.valBpb as number) > 0 && (x.optMsPerStep as number) > 0).toBe(true);
    const json = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as { rows: { config: string; values: number[] }[]; meta: { chosen: Record<string, number>; adamLr: number } };
    expect(json.rows.map((x) => [x.config, x.values.length])).toEqual([['adamw', 1], ['muon', 1], ['auon', 1]]);
    expect([0.003, 0.01]).toContain(json.meta.chosen.adamw);
    expect(json.meta.adamLr).toBe(json.meta.chosen.adamw); // Muon's and AuON's auxiliary AdamW takes AdamW's best LR
    const md = readFileSync(join(dir, 'results.md'), 'utf8');
    for (const s of ['### LR sweep (seed 0; ✓ = chosen)', '| muon − adamw |', '| auon − muon |', '| 16 × 16 |']) expect(md).toContain(s);
    for (const f of ['results.svg', 'curves.svg']) expect(readFileSync(join(dir, f), 'utf8')).toMatch(/^<svg/);
    const again = await run(argv);
    expect(again.code).toBe(0);
    expect(readMetrics(join(dir, 'runs.jsonl'))).toHaveLength(runs.length);
  }, 240_000); // mostly tsx start-up and SVG rendering, minutes on a loaded machine

  it('turns a bad LR list into a one-line error with exit code 2', async () => {
    const r = await run(['--muon-lrs', '0.02,-1', '--run-dir', join(root, 'never')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe("experiments/optimizers: --muon-lrs must be comma-separated positive numbers, got '0.02,-1'");
    expect(existsSync(join(root, 'never', 'runs.jsonl'))).toBe(false);
  });
});

describe('runQatLlama with Muon and AuON', () => {
  const tinyRun = { config: 'fp', seed: 0, steps: 2, batchSize: 2, seqLen: 8, lr: 0.02, dim: 16, layers: 1, heads: 2, kvHeads: 1, valBlocks: 1, progress: false };
  it.each(['muon', 'auon'] as const)('%s moves exactly the decoder matrices when the auxiliary AdamW has lr 0', async (optimizer) => {
    const dir = join(root, optimizer);
    const r = await runQatLlama({ ...tinyRun, optimizer, adamLr: 0, dir });
    expect(Number.isFinite(r.valBpb)).toBe(true);
    const { tensors, metadata } = loadSafetensorsWithMetadata(join(dir, 'checkpoint.safetensors'));
    expect(JSON.parse(metadata.config!)).toMatchObject({ optimizer, adamLr: 0 });
    const init = new Llama(qatLlamaModelConfig(tinyRun), { generator: new Generator(0) }).stateDict();
    const moved = Object.keys(init).filter((k) => !same(tensors[`model.${k}`]!, init[k]!));
    // 7 matrices per decoder layer (q, k, v, o, gate, up, down); embedding, head and norms untouched
    expect(moved.sort()).toEqual(Object.keys(init).filter((k) => k.startsWith('model.layers.') && init[k]!.ndim === 2).sort());
    expect(moved).toHaveLength(7);
  });
});
