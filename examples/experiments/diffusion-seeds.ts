/**
 * @file The quantized-diffusion comparison over seeds (issue 20, docs/experiments/diffusion-quant.md):
 * trains the sample-quality judge once, runs examples/experiments/diffusion-quant.ts once per seed
 * (each its own process, `--jobs` at a time, one wasm thread each; a seed whose results.json exists
 * is reused; with --float-seed, one float model is trained first and shared by every seed, which then
 * varies calibration, quantization, distillation and sampling only), then tables every
 * configuration's class accuracy of class-conditional samples, the Fréchet distance of its samples
 * to real test digits in the judge's features, and its ε-MSE against the float model, as mean ± std
 * over seeds; writes results.{md,json} and two dot plots.
 * Run: npx tsx examples/experiments/diffusion-seeds.ts [--seeds 0,1,2] [--jobs 2] [--float-seed 0] [--quant-args="--train-steps 3000"]
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cli, CliError } from '../lib/args.js';
import { markdownTable, mean, pm, resultsSvg, std, type ConfigResult } from '../lib/experiments.js';
import { mnistJudge } from '../lib/sample-quality.js';
import { SEED_MAX } from '../lib/train.js';

const args = cli('experiments/diffusion-seeds', 'Runs experiments/diffusion-quant.ts for several seeds and tables class accuracy, Fréchet distance and ε-MSE per configuration (mean ± std).', {
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'seeds, one diffusion-quant run each' },
  jobs: { type: 'int', default: 2, min: 1, max: 8, help: 'runs at a time (each uses one wasm thread)' },
  floatSeed: { type: 'int', default: -1, min: -1, max: SEED_MAX, help: 'train one float model with this seed first (cached in --run-dir) and share it across the seeds; -1: each seed trains its own' },
  quantArgs: { type: 'string', default: '', help: 'extra flags for every diffusion-quant.ts run, space-separated (write --quant-args="--flag v")' },
  judgeSteps: { type: 'int', default: 600, min: 1, help: 'training steps of the judge (cached in <run-dir>/judge-<steps>.safetensors)' },
  runDir: { type: 'string', default: 'runs/experiments/diffusion-seeds', help: 'output directory (a seed<N>/ folder per run)' },
});
const passThrough = args.quantArgs.split(/\s+/).filter(Boolean);
for (const f of passThrough) if (/^--(seed|run-dir|judge|float-seed|float-dir|float-only)(=|$)/.test(f)) throw new CliError(`--quant-args must not set ${f.split('=')[0]}: diffusion-seeds sets it`);
mkdirSync(args.runDir, { recursive: true });

// the judge first, in this process, so the runs load it instead of each training its own
const judgePath = join(args.runDir, `judge-${args.judgeSteps}.safetensors`);
const judge = mnistJudge({ path: judgePath, steps: args.judgeSteps, log: (l) => console.log(l) });
console.log(`judge: ${(100 * judge.testAcc).toFixed(2)} % on the 2,000 test digits (${judgePath})`);

const repo = fileURLToPath(new URL('../..', import.meta.url));
const dirOf = (s: number) => join(args.runDir, `seed${s}`);
const shared = args.floatSeed >= 0 ? ['--float-seed', String(args.floatSeed), '--float-dir', args.runDir] : [];
function runQuant(seed: number, dir: string, extra: string[]): Promise<void> {
  const flags = ['--seed', String(seed), '--run-dir', dir, '--judge', judgePath, ...shared, ...extra, ...passThrough];
  console.log(`seed ${seed}: npx tsx examples/experiments/diffusion-quant.ts ${flags.join(' ')}`);
  mkdirSync(dir, { recursive: true });
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', 'experiments', 'diffusion-quant.ts'), ...flags], { cwd: repo, maxBuffer: 64 << 20, env: { ...process.env, QGRAD_THREADS: '1' } }, (err, stdout, stderr) => {
      writeFileSync(join(dir, 'log.txt'), `${stdout}${stderr}`);
      if (err) reject(new Error(`seed ${seed} failed (log in ${join(dir, 'log.txt')}): ${stderr.trim().split('\n').at(-1) ?? err.message}`));
      else resolve();
    });
  });
}
const runSeed = (seed: number) => runQuant(seed, dirOf(seed), []);
const todo = args.seeds.filter((s) => !existsSync(join(dirOf(s), 'results.json')));
for (const s of todo) mkdirSync(dirOf(s), { recursive: true });
const t0 = performance.now();
// the shared float model first, alone (its row is evaluated too), so the parallel runs load it
if (args.floatSeed >= 0 && todo.length && !existsSync(join(args.runDir, 'float', 'results.json'))) await runQuant(args.floatSeed, join(args.runDir, 'float'), ['--float-only']);
const queue = [...todo];
await Promise.all(Array.from({ length: Math.min(args.jobs, queue.length) }, async () => {
  for (let s = queue.shift(); s !== undefined; s = queue.shift()) {
    await runSeed(s);
    console.log(`seed ${s} done, ${((performance.now() - t0) / 60000).toFixed(1)} min elapsed`);
  }
}));

interface Row { name: string; calibration: string; mse: { all: number }; quality: { accuracy: number; frechet: number } }
const perSeed = args.seeds.map((s) => (JSON.parse(readFileSync(join(dirOf(s), 'results.json'), 'utf8')) as { rows: Row[] }).rows);
const names = perSeed[0]!.map((r) => r.name);
const pick = (name: string, f: (r: Row) => number) => perSeed.map((rows, i) => {
  const r = rows.find((x) => x.name === name);
  if (!r) throw new Error(`seed ${args.seeds[i]} has no row '${name}'`);
  return f(r);
});
const table = (metric: (r: Row) => number, extra: (name: string) => Record<string, string>): ConfigResult[] =>
  names.map((name) => ({ config: name, seeds: args.seeds, values: pick(name, metric), extra: extra(name) }));
const accuracy = table((r) => 100 * r.quality.accuracy, (name) => ({
  'Fréchet distance': pm(pick(name, (r) => r.quality.frechet), 2),
  'ε-MSE vs float': `${mean(pick(name, (r) => r.mse.all)).toExponential(2)} ± ${std(pick(name, (r) => r.mse.all)).toExponential(1)}`,
  calibration: perSeed[0]!.find((r) => r.name === name)!.calibration,
}));
const frechet = table((r) => r.quality.frechet, () => ({}));
const md = markdownTable(accuracy, 'class accuracy %', 1);
writeFileSync(join(args.runDir, 'results.md'), `${md}\n`);
writeFileSync(join(args.runDir, 'results.json'), JSON.stringify({ args, judgeTestAcc: judge.testAcc, accuracy, frechet }, null, 1));
writeFileSync(join(args.runDir, 'accuracy.svg'), await resultsSvg(accuracy, 'class accuracy %', 'MNIST DiT samples: judge accuracy on their class labels (higher is better)'));
writeFileSync(join(args.runDir, 'frechet.svg'), await resultsSvg(frechet, 'Fréchet distance', 'MNIST DiT samples: Fréchet distance to real test digits, judge features (lower is better)'));
console.log(`\n${md}\nwrote ${args.runDir}/{results.md, results.json, accuracy.svg, frechet.svg}`);
