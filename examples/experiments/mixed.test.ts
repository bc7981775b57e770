/**
 * @file examples/experiments/mixed.ts as a user runs it (tsx subprocesses in a temp dir): a 3-step
 * float Llama from experiments/llama.ts and a 2-channel CNN trained for 3 steps; seed 0 runs every
 * allocation under RTN and GPTQ within the budget, with the same scale overhead in every arm, and
 * seed 1, whose float run is not recorded, is skipped and named; a second call quantizes nothing;
 * a malformed --allocations is a one-line error.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'qgrad-mixed-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function run(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', 'experiments', script), ...args], { cwd: repo, timeout: 300_000, env: { ...process.env, FORCE_COLOR: '0', QGRAD_THREADS: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const llamaDir = join(root, 'llama');
const tiny = [
  '--seeds', '0,1', '--llama-dir', llamaDir, '--llama-run', '3x2x16', '--calib-seqs', '4', '--val-blocks', '4', '--samples', '2',
  '--cnn-steps', '3', '--cnn-batch', '8', '--channels', '2', '--calib-images', '32',
];
const ALLOCS = ['uniform', 'loss{2,3,4}', 'loss{2,3,4} exact', 'loss{2,3,4,8} exact', 'hessian{2,3,4} exact'];
const CONFIGS = ['float', ...['rtn', 'gptq'].flatMap((m) => ALLOCS.map((a) => `${m} ${a}`))];

interface Row { config: string; values: number[]; extra: Record<string, string> }
interface Run { model: string; alloc: string; seed: number; codeBits: number; bitsWithScales: number; predictedDelta: number; calibDelta: number; bits: Record<string, number> }

describe('experiments/mixed', () => {
  it('compares every allocation with uniform bits at the budget on both models, skips an unfinished float run and resumes', async () => {
    const fp = await run('llama.ts', ['--only', 'fp', '--steps', '3', '--batch-size', '2', '--seq-len', '16', '--core-seeds', '0', '--seeds', '0', '--val-blocks', '4', '--run-dir', llamaDir]);
    expect(fp.code, fp.stderr).toBe(0);
    const dir = join(root, 'mixed');
    const first = await run('mixed.ts', [...tiny, '--run-dir', dir]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/llama seed 1: no finished float run \(fp\/1\/3x2x16 in .*runs\.jsonl\) — skipped/);
    const runs = readFileSync(join(dir, 'runs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Run);
    expect(runs).toHaveLength(CONFIGS.length * 3); // llama seed 0, cnn seeds 0 and 1
    for (const model of ['llama', 'cnn']) {
      for (const f of ['results.md', 'results.json', 'results.svg']) expect(existsSync(join(dir, model, f)), `${model}/${f}`).toBe(true);
      const json = JSON.parse(readFileSync(join(dir, model, 'results.json'), 'utf8')) as { rows: Row[]; meta: { paired: string } };
      expect(json.rows.map((r) => r.config)).toEqual(CONFIGS);
      expect(json.meta.paired).toContain('gptq: loss{2,3,4} exact − uniform');
      expect(readFileSync(join(dir, model, 'results.md'), 'utf8')).toMatch(/### Per-layer bit map, seed 0/);
      const quantized = runs.filter((r) => r.model === model && r.alloc !== 'float');
      const overhead = quantized[0]!.bitsWithScales - quantized[0]!.codeBits;
      for (const r of quantized) {
        expect(r.codeBits, `${model} ${r.alloc}`).toBeLessThanOrEqual(3 + 1e-9);
        if (r.alloc === 'uniform') expect(Object.values(r.bits).every((b) => b === 3)).toBe(true);
        expect(Number.isFinite(r.predictedDelta) && Number.isFinite(r.calibDelta), `${model} ${r.alloc}`).toBe(true);
        // the same quantizer layout in every arm, so the same scales: the budget compares like with like
        expect(r.bitsWithScales - r.codeBits).toBeCloseTo(overhead, 9);
      }
      if (model === 'llama') expect(overhead).toBeCloseTo(16 / 32, 9); // one fp16 scale per 32 weights
    }
    const llamaMd = readFileSync(join(dir, 'llama', 'results.md'), 'utf8');
    expect(llamaMd).toMatch(/seed 1 had no finished float run and is missing/);

    const again = await run('mixed.ts', [...tiny, '--run-dir', dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(readFileSync(join(dir, 'runs.jsonl'), 'utf8').trim().split('\n')).toHaveLength(CONFIGS.length * 3);
    expect(again.stdout).not.toMatch(/sensitivity of \d+ layers|\d bits\/weight \(/); // nothing measured or quantized again
  }, 600_000);

  it('a malformed --allocations is a one-line error with exit code 2', async () => {
    const r = await run('mixed.ts', ['--allocations', 'loss:2,3,4:fast', '--run-dir', join(root, 'never')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe("experiments/mixed: --allocations takes score:choices[:exact] such as 'loss:2,3,4' or 'hessian:2,3,4:exact', got 'loss:2,3,4:fast'");
  });
});
