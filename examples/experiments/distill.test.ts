/**
 * @file examples/experiments/distill.ts as a user runs it (tsx subprocesses, a 2-channel CNN and a
 * one-layer 32-wide Llama, a few steps, in a temp dir): one seed writes runs.jsonl with the three
 * fine-tunes of each model and a table per model with the float start and paired rows; the KD runs
 * really distil (their logged metrics carry the KD part); a second call trains nothing; a bad
 * --models is a one-line error.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { readMetrics } from '@qgrad/nn';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'qgrad-distill-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', 'experiments', 'distill.ts'), ...args], { cwd: repo, timeout: 240_000, env: { ...process.env, FORCE_COLOR: '0', QGRAD_THREADS: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const dir = join(root, 'grid');
const tiny = [
  '--seeds', '0', '--run-dir', dir, '--pretrain-dir', join(dir, 'float'),
  '--cnn-steps', '4', '--cnn-qat-steps', '3', '--cnn-batch', '8', '--channels', '2',
  '--pretrain-steps', '3', '--steps', '2', '--batch-size', '2', '--seq-len', '16', '--val-blocks', '2', '--dim', '32', '--layers', '1', '--heads', '2', '--kv-heads', '1',
];

describe('experiments/distill', () => {
  it('fine-tunes both models with and without KD, writes paired tables, and resumes without training', async () => {
    const first = await run(tiny);
    expect(first.stderr).not.toMatch(/Error/);
    expect(first.code).toBe(0);
    const runs = readMetrics(join(dir, 'runs.jsonl'));
    expect(runs.map((r) => `${r.model}/${r.config}`).sort()).toEqual(['cnn/float-continued', 'cnn/w2a2', 'cnn/w2a2-kd', 'llama/float-continued', 'llama/w2', 'llama/w2-kd']);
    for (const r of runs) expect(Number.isFinite(r.value)).toBe(true);
    // the KD student's metrics hold the distillation parts, the plain one's do not
    const kdParts = (name: string) => readMetrics(join(dir, 'llama', name, 'seed0', 'metrics.jsonl')).filter((r) => typeof r.kd === 'number').length;
    expect(kdParts('w2-kd')).toBe(2);
    expect(kdParts('w2')).toBe(0);
    const md = readFileSync(join(dir, 'results.md'), 'utf8');
    for (const row of ['| float (start) | cnn |', '| w2a2-kd | cnn |', '| float (start) | llama |', '| w2-kd | llama |', '| w2a2-kd − w2a2 |', '| w2-kd − w2 |']) expect(md).toContain(row);
    for (const m of ['cnn', 'llama']) expect(JSON.parse(readFileSync(join(dir, m, 'results.json'), 'utf8')).rows).toHaveLength(4);

    const again = await run(tiny);
    expect(again.code).toBe(0);
    expect(again.stdout).not.toMatch(/training|min elapsed/);
    expect(readMetrics(join(dir, 'runs.jsonl'))).toHaveLength(6);
  }, 480_000);

  it('names a bad --models value', async () => {
    const r = await run(['--models', 'cnn,vit', '--run-dir', join(root, 'bad')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--models takes cnn and\/or llama, got vit/);
  });
});
