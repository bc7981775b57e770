/**
 * @file examples/experiments/bitswitch.ts as a user runs it (a tsx subprocess, 3 steps of a
 * 784-8-10 MLP, one seed, temp dir): every model is trained once and recorded (the joint ones
 * evaluated at 8, 6 and 4 bits, each single-width one at its width), the table and paired rows
 * come out, a second invocation trains nothing, other --widths are kept apart, and an unknown
 * config is a one-line error.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'qgrad-bitswitch-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', 'experiments', 'bitswitch.ts'), ...args], { cwd: repo, timeout: 60_000, env: { ...process.env, FORCE_COLOR: '0', QGRAD_THREADS: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('experiments/bitswitch', () => {
  it('trains each model once, evaluates the joint ones at every width, and resumes', async () => {
    const dir = join(root, 'grid');
    const tiny = ['--seeds', '0', '--steps', '3', '--hidden', '8', '--batch-size', '16', '--run-dir', dir];
    const r = await run(tiny);
    expect(r.code, r.stderr).toBe(0);
    const runs = readFileSync(join(dir, 'runs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { trainedAt: string; steps: number; acc: Record<string, number> });
    expect(runs.map((x) => x.trainedAt)).toEqual(['joint-alrs', 'joint-noalrs', 'single-w8', 'single-w6', 'single-w4', 'fp32']);
    expect(runs.every((x) => x.steps === 3)).toBe(true);
    expect(Object.keys(runs[0]!.acc).sort()).toEqual(['4', '6', '8']);
    expect(Object.keys(runs[3]!.acc)).toEqual(['6']);
    for (const x of runs) for (const a of Object.values(x.acc)) expect(a >= 0 && a <= 100).toBe(true);
    expect(r.stdout).toMatch(/\| joint-alrs \| W4 \| \d+\.\d\d \| 1 \|/);
    expect(r.stdout).toMatch(/\| single \| W6 \| \d+\.\d\d \| 1 \|/);
    expect(r.stdout).toContain('joint-alrs − single at W4');
    for (const f of ['results.md', 'results.json', 'results.svg']) expect(existsSync(join(dir, f))).toBe(true);
    const again = await run(tiny);
    expect(again.code).toBe(0);
    expect(again.stdout).not.toContain('elapsed');
    expect(readFileSync(join(dir, 'runs.jsonl'), 'utf8').trim().split('\n')).toHaveLength(6);
  });

  it('--widths 8,2 trains that pair and keeps its runs apart from the default widths', async () => {
    const dir = join(root, 'grid');
    const r = await run(['--seeds', '0', '--steps', '3', '--hidden', '8', '--batch-size', '16', '--widths', '2,8', '--only', 'joint-alrs,single', '--run-dir', dir]);
    expect(r.code, r.stderr).toBe(0);
    const runs = readFileSync(join(dir, 'runs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { trainedAt: string; widths: number[]; acc: Record<string, number> });
    const w2 = runs.filter((x) => String(x.widths) === '8,2');
    expect(w2.map((x) => x.trainedAt)).toEqual(['joint-alrs', 'single-w8', 'single-w2']);
    expect(Object.keys(w2[0]!.acc).sort()).toEqual(['2', '8']);
    expect(r.stdout).toContain('joint-alrs − single at W2');
  });

  it('an unknown --only name is a one-line error with exit code 2', async () => {
    const r = await run(['--only', 'joint', '--run-dir', join(root, 'never')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe('experiments/bitswitch: unknown --only name(s) joint; configs: joint-alrs, joint-noalrs, single, fp32');
  });
});
