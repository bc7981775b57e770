/**
 * @file examples/experiments/zeroqat.ts as a user runs it (a tsx subprocess, a 784-8-10 MLP, one
 * second per arm in quarter-second slices, temp dir): both arms start from the same quantized model,
 * get the same training seconds, record an accuracy curve from t = 0, and report memory by the rules
 * the doc states (no gradients for ZeroQAT; AdamW's gradient and two moments); a bad --arms is a
 * one-line error.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'qgrad-zeroqat-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', 'experiments', 'zeroqat.ts'), ...args], { cwd: repo, timeout: 60_000, env: { ...process.env, FORCE_COLOR: '0', QGRAD_THREADS: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

interface Run { arm: string; steps: number; ptqAcc: number; curve: { t: number; steps: number; acc: number }[]; memory: { parameters: number; gradients: number; optimizerState: number; activations: number; total: number } }

describe('experiments/zeroqat', () => {
  it('gives both arms the same seconds from the same start and reports their memory', async () => {
    const dir = join(root, 'run');
    const r = await run(['--seeds', '0', '--budget', '1', '--eval-every', '0.5', '--slice', '0.25', '--hidden', '8', '--pretrain-steps', '2', '--run-dir', dir]);
    expect(r.code, r.stderr).toBe(0);
    const runs = readFileSync(join(dir, 'runs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Run);
    expect(runs.map((x) => x.arm)).toEqual(['zeroqat', 'backprop']);
    const [z, b] = runs as [Run, Run];
    expect(z.curve[0]).toEqual({ t: 0, steps: 0, acc: b.curve[0]!.acc }); // one quantized start
    for (const x of runs) {
      expect(x.steps).toBeGreaterThan(0);
      expect(x.curve.at(-1)!.t).toBeGreaterThanOrEqual(1);
      expect(x.curve.at(-1)!.t).toBeLessThan(3); // one step past the budget at most
    }
    const params = (784 * 8 + 8 + 8 * 10 + 10) * 4;
    expect(z.memory).toMatchObject({ parameters: params, gradients: 0, optimizerState: 784 * 8 * 4 }); // z of the largest weight
    expect(b.memory).toMatchObject({ parameters: params, gradients: params, optimizerState: 2 * params });
    // the int4 weight of the first layer (6,272 elements) is the only buffer large enough to count
    expect(b.memory.activations).toBeGreaterThanOrEqual(784 * 8 * 4);
    for (const m of [z.memory, b.memory]) expect(m.total).toBe(m.parameters + m.gradients + m.optimizerState + m.activations);
    expect(r.stdout).toContain('zeroqat − backprop');
    for (const f of ['results.md', 'results.json', 'results.svg', 'curve.svg']) expect(existsSync(join(dir, f))).toBe(true);
  });

  it('a bad --arms is a one-line error with exit code 2', async () => {
    const r = await run(['--arms', 'zeroqat,sgd', '--run-dir', join(root, 'never')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe("experiments/zeroqat: --arms must be a comma-separated subset of zeroqat, backprop, got 'zeroqat,sgd'");
  });
});
