/**
 * @file The examples as a user runs them (subprocesses under tsx): bad flags and a diverged run
 * end with a one-line message and a non-zero exit code, never a stack trace; and every example's
 * `--help` works, which also checks that each flag's default satisfies its own spec.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const runs = mkdtempSync(join(tmpdir(), 'qgrad-cli-'));
afterAll(() => rmSync(runs, { recursive: true, force: true }));

/** Runs `examples/<script>` with `args`; resolves to its exit code and output. */
function example(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', script), ...args], { cwd: repo, timeout: 50_000, env: { ...process.env, FORCE_COLOR: '0' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const noStackTrace = (stderr: string) => {
  expect(stderr).not.toMatch(/^\s+at /m);
  expect(stderr).not.toContain('node:internal');
  expect(stderr).not.toMatch(/Error\b/);
};

describe('mnist-mlp from the command line', () => {
  it('refuses nonsensical numbers with exit code 2 and a message naming flag, value and range', async () => {
    const cases: [string[], string][] = [
      [['--batch-size', '0'], "--batch-size must be an integer ≥ 1, got '0'"],
      [['--batch-size=-3'], "--batch-size must be an integer ≥ 1, got '-3'"],
      [['--steps=-5'], "--steps must be an integer ≥ 1, got '-5'"],
      [['--steps', '2.5'], "--steps must be an integer ≥ 1, got '2.5'"],
      [['--hidden', '0'], "--hidden must be an integer ≥ 1, got '0'"],
      [['--lr', 'NaN'], "--lr must be a number > 0, got 'NaN'"],
      // only known once the data is loaded
      [['--batch-size', '100000'], '--batch-size must be an integer in [1, 8000] (there are 8000 training digits), got 100000'],
    ];
    const results = await Promise.all(cases.map(([args]) => example('mnist-mlp.ts', [...args, '--run-dir', join(runs, 'never')])));
    results.forEach((r, i) => {
      expect(r.code, cases[i]![0].join(' ')).toBe(2);
      expect(r.stderr).toContain(`mnist-mlp: ${cases[i]![1]}`);
      noStackTrace(r.stderr);
    });
    expect(readdirSync(runs)).toEqual([]); // nothing was trained
  });

  it('stops a diverging run with exit code 3, naming the step and the loss', async () => {
    const dir = join(runs, 'diverged');
    const r = await example('mnist-mlp.ts', ['--lr', '1e30', '--steps', '30', '--eval-every', '1000', '--run-dir', dir]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/mnist-mlp: stopped at step \d+: the training loss is (NaN|Infinity|-Infinity)/);
    noStackTrace(r.stderr);
    expect(readFileSync(join(dir, 'metrics.jsonl'), 'utf8')).not.toContain('null');
  });
});

describe('every example', () => {
  // the command-line examples: scripts that parse flags with cli()
  const scripts = ['', 'experiments/'].flatMap((sub) => readdirSync(join(repo, 'examples', sub)).filter((f) => f.endsWith('.ts')).map((f) => `${sub}${f}`));
  const commands = scripts.filter((s) => /\bcli\(/.test(readFileSync(join(repo, 'examples', s), 'utf8')));

  it.concurrent.each(commands)('%s prints its --help (defaults within their specs) and exits 0', async (script) => {
    const r = await example(script, ['--help']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: npx tsx examples/${script}`);
  });
});
