/**
 * @file The README cannot drift from the code: every ```ts block is written out, type-checked
 * together (the repository's strict settings) and run with tsx, each in its own temp directory.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const blocks = [...readFileSync(join(repo, 'README.md'), 'utf8').matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
// inside the repository, so tsconfig.json's paths map @qgrad/* to the sources
const dir = join(repo, '.cache', 'readme');

function run(cmd: string, args: string[], cwd: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${args.join(' ')}:\n${err.stdout ?? ''}\n${err.stderr ?? err.message}`);
  }
}

describe('README', () => {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const files = blocks.map((code, i) => {
    const file = join(dir, `block-${i + 1}.ts`);
    writeFileSync(file, `${code}\nexport {};\n`);
    return file;
  });

  it('has a quickstart of at most 15 lines of code', () => {
    expect(blocks.length).toBeGreaterThan(0);
    expect(blocks[0]!.trim().split('\n').length).toBeLessThanOrEqual(15);
  });

  it('every ts block type-checks', () => {
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ extends: '../../tsconfig.json', include: ['*.ts'], exclude: [] }));
    run(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json')], repo);
  }, 120_000);

  files.forEach((file, i) => {
    it(`block ${i + 1} runs (${blocks[i]!.split('\n')[0]})`, () => {
      const cwd = mkdtempSync(join(tmpdir(), 'qgrad-readme-'));
      try {
        run(process.execPath, [join(repo, 'node_modules/tsx/dist/cli.mjs'), '--tsconfig', join(repo, 'tsconfig.json'), file], cwd);
      } finally {
        rmSync(cwd, { recursive: true, force: true });
      }
    }, 180_000);
  });
});
