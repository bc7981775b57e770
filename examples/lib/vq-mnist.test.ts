/**
 * @file examples/vq-mnist.ts as a user runs it (a tsx subprocess, a few steps of a tiny model in a
 * temp dir): VQ and FSQ runs print a finite test MSE, code usage in (0, 1] and perplexity within
 * [1, codes], and write a PNG of 16 originals above their reconstructions; flag combinations the
 * quantizers cannot take are one-line errors.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'qgrad-vq-mnist-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', 'vq-mnist.ts'), ...args], { cwd: repo, timeout: 30_000, env: { ...process.env, FORCE_COLOR: '0', QGRAD_THREADS: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const tiny = ['--steps', '3', '--batch-size', '8', '--channels', '2', '--eval-every', '100'];

describe('vq-mnist', () => {
  it.concurrent.each([
    ['vq', ['--codes', '16', '--dim', '4'], 16],
    ['fsq', ['--levels', '4,3'], 12],
  ] as const)('%s: a 3-step run prints finite metrics and writes the reconstructions PNG', async (quantizer, extra, codes) => {
    const dir = join(root, quantizer);
    const r = await run(['--quantizer', quantizer, ...extra, ...tiny, '--run-dir', dir]);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const m = /test MSE (\S+) \| codes used (\S+) % \| perplexity (\S+) of (\d+)/.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    const [mse, used, perplexity, k] = m!.slice(1).map(Number) as [number, number, number, number];
    expect(Number.isFinite(mse) && mse > 0 && mse < 1).toBe(true); // pixels in [0, 1]
    expect(used).toBeGreaterThan(0);
    expect(used).toBeLessThanOrEqual(100);
    expect(k).toBe(codes);
    expect(perplexity).toBeGreaterThanOrEqual(1);
    expect(perplexity).toBeLessThanOrEqual(codes);
    expect(r.stdout).toContain(`wrote ${join(dir, 'reconstructions.png')}`);
    // 16 columns × 8 rows (4 rows of originals, each above its reconstructions), 28 px at scale 2, 1-px gaps
    const png = PNG.sync.read(readFileSync(join(dir, 'reconstructions.png')));
    expect([png.width, png.height]).toEqual([16 * 57 + 1, 8 * 57 + 1]);
  });

  it.concurrent.each([
    [['--quantizer', 'pq'], "--quantizer must be one of vq, fsq, simvq, rvq, got 'pq'"],
    [['--update', 'grad'], '--dead-code 1 needs --update ema (it reads the EMA code counts); with --update grad pass --dead-code 0'],
    [['--quantizer', 'fsq', '--levels', '8,1'], "--levels must be comma-separated integers ≥ 2, got '8,1'"],
  ])('%j is a one-line error with exit code 2', async (args, message) => {
    const r = await run([...args, '--run-dir', join(root, 'never')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`vq-mnist: ${message}`);
  });
});
