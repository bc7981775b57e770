/**
 * @file VQ-VAE vs FSQ-VAE vs SimVQ on MNIST at one codebook size (docs/experiments/vq.md): the
 * autoencoder of examples/vq-mnist.ts with plain VQ (codebook by gradient), VQ with EMA, VQ with
 * EMA + dead-code re-seeding, FSQ and SimVQ × seeds, in one process; test MSE, code usage and
 * perplexity over the test digits; runs.jsonl (resumable), results.{md,json,svg} for MSE and
 * usage/results.{md,json,svg} for usage, paired per-seed verdicts, one PNG of reconstructions per
 * config (first seed).
 * Run: npx tsx examples/experiments/vq.ts [--seeds 0,1,2] [--steps 600] [--only fsq,vq-grad]
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { encodeRecord, readMetrics } from '@qgrad/nn';
import { CliError, cli } from '../lib/args.js';
import { mean, pairedDiffs, pairedTable, writeResults, type ConfigResult, type Paired } from '../lib/experiments.js';
import { NONFINITE_HINT, SEED_MAX, commonOptions, useBackend } from '../lib/train.js';
import { saveReconstructions, trainVq, VqAutoencoder, vqMnistData, type QuantizerSpec } from '../lib/vq-mnist.js';

const args = cli('experiments/vq', 'VQ (gradient, EMA, EMA + re-seeding) vs FSQ vs SimVQ autoencoders on MNIST at one codebook size × seeds → test MSE and code usage tables, plots and paired verdicts.', {
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'comma-separated seeds' },
  only: { type: 'string', default: '', help: 'comma-separated config names to run (default all)' },
  steps: { type: 'int', default: 600, min: 1, help: 'training steps per run (125 = one epoch at batch 64)' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  lr: { type: 'number', default: 2e-3, exclusiveMin: 0, help: 'peak learning rate (AdamW, cosine)' },
  channels: { type: 'int', default: 16, min: 1, help: 'channels of the first conv (the second has twice as many)' },
  dim: { type: 'int', default: 16, min: 1, help: 'latent vector size of VQ and SimVQ (FSQ: 3, one per level)' },
  allowNonfinite: commonOptions.allowNonfinite,
  fresh: { type: 'boolean', help: 'ignore runs already in runs.jsonl (default: skip them, so an interrupted grid resumes)' },
  backend: commonOptions.backend,
  runDir: { type: 'string', default: 'runs/experiments/vq', help: 'output directory' },
});
useBackend(args.backend);

/** FSQ's levels fix the codebook size every other quantizer gets: 8·6·5 = 240 (the FSQ paper's levels for ~2^8 codes). */
const LEVELS = [8, 6, 5];
const CODES = LEVELS.reduce((a, b) => a * b, 1);
const base: QuantizerSpec = { quantizer: 'vq', codes: CODES, dim: args.dim, levels: LEVELS, update: 'ema', deadCode: 0, stages: 1, beta: 0.25 };
const CONFIGS: { name: string; spec: QuantizerSpec; note: string }[] = [
  { name: 'vq-grad', spec: { ...base, update: 'grad' }, note: 'VQ-VAE as in the paper: codebook loss, commitment β 0.25, no re-seeding' },
  { name: 'vq-ema', spec: base, note: 'codebook by EMA (decay 0.99), no re-seeding' },
  { name: 'vq-ema-reseed', spec: { ...base, deadCode: 1 }, note: 'EMA + codes under 1 hit per batch (EMA) re-seeded from the batch' },
  { name: 'fsq', spec: { ...base, quantizer: 'fsq' }, note: `FSQ levels ${LEVELS.join(',')}, no codebook, no auxiliary loss` },
  { name: 'simvq', spec: { ...base, quantizer: 'simvq' }, note: 'frozen codebook through one learned linear map' },
];

const only = args.only ? args.only.split(',').map((s) => s.trim()) : null;
const unknown = (only ?? []).filter((n) => !CONFIGS.some((c) => c.name === n));
if (unknown.length) throw new CliError(`unknown --only name(s) ${unknown.join(', ')}; configs: ${CONFIGS.map((c) => c.name).join(', ')}`);
const configs = CONFIGS.filter((c) => !only || only.includes(c.name));

interface Run { config: string; seed: number; steps: number; testMse: number; usage: number; perplexity: number; msPerStep: number }

const data = vqMnistData();
mkdirSync(args.runDir, { recursive: true });
const log = join(args.runDir, 'runs.jsonl');
const key = (config: string, seed: number) => `${config}/${seed}`;
const done = new Map<string, Run>();
// only runs of this budget count: a grid re-run with other --steps does not mix them in
if (!args.fresh && existsSync(log)) for (const r of readMetrics(log) as unknown as Run[]) if (r.steps === args.steps) done.set(key(r.config, r.seed), r);

const t0 = performance.now();
for (const c of configs) {
  for (const seed of args.seeds) {
    if (done.has(key(c.name, seed))) continue;
    const model = new VqAutoencoder(c.spec, args.channels, seed);
    // nn's fit without a run directory: the progress bar and the NaN stop, one evaluation at the end
    const r = await trainVq(model, data, {
      steps: args.steps, batchSize: args.batchSize, lr: args.lr, seed,
      fit: { name: key(c.name, seed), evalEvery: args.steps, allowNonfinite: args.allowNonfinite ?? false, nonFiniteHint: NONFINITE_HINT },
    });
    const e = r.lastEval;
    const run: Run = { config: c.name, seed, steps: args.steps, testMse: e.test_mse!, usage: e.usage!, perplexity: e.perplexity!, msPerStep: r.msPerStep };
    if (seed === args.seeds[0]) saveReconstructions(join(args.runDir, `recon-${c.name}.png`), model, data.testX, 16, 1);
    done.set(key(c.name, seed), run);
    appendFileSync(log, encodeRecord({ step: 0, ...run }));
    console.log(`${key(c.name, seed)}: test MSE ${run.testMse.toFixed(5)}, codes used ${(run.usage * 100).toFixed(1)} %, perplexity ${run.perplexity.toFixed(1)}, ${run.msPerStep.toFixed(0)} ms/step, ${((performance.now() - t0) / 1000).toFixed(0)} s elapsed`);
  }
}

const runsOf = (name: string) => args.seeds.map((s) => done.get(key(name, s))).filter((r): r is Run => r !== undefined);
const rows = (metric: (r: Run) => number, extra: (rs: Run[]) => Record<string, string | number>): ConfigResult[] =>
  configs.map((c) => {
    const rs = runsOf(c.name);
    return { config: c.name, seeds: rs.map((r) => r.seed), values: rs.map(metric), extra: { ...extra(rs), what: c.note } };
  });
const notes = `${args.steps} steps × batch ${args.batchSize} (${((args.steps * args.batchSize) / 8000).toFixed(1)} epochs of the 8,000 training digits), AdamW lr ${args.lr} (cosine), conv autoencoder with ${args.channels}/${2 * args.channels} channels and a 7×7 grid of latent vectors (VQ/SimVQ dim ${args.dim}, FSQ 3), ${CODES} codes each, seeds ${args.seeds.join(',')}. ` +
  'Test MSE in [0, 1] pixel units over the 2,000 test digits; usage = fraction of the codes that some test vector (98,000 of them) picks; perplexity = exp(entropy) of that histogram.';
const meta = { steps: args.steps, batchSize: args.batchSize, lr: args.lr, channels: args.channels, dim: args.dim, codes: CODES, levels: LEVELS, seeds: args.seeds };
const mseMd = await writeResults(args.runDir, {
  title: `MNIST autoencoders at ${CODES} codes: test MSE (×1000)`, metric: 'test MSE ×1000', notes, meta,
  rows: rows((r) => r.testMse * 1000, (rs) => ({ 'codes used %': mean(rs.map((r) => r.usage * 100)).toFixed(1), perplexity: mean(rs.map((r) => r.perplexity)).toFixed(1), 'ms/step': Math.round(mean(rs.map((r) => r.msPerStep))) })),
});
const usageMd = await writeResults(join(args.runDir, 'usage'), {
  title: `MNIST autoencoders at ${CODES} codes: codes used on the test digits (%)`, metric: 'codes used %', notes, meta, digits: 1,
  rows: rows((r) => r.usage * 100, (rs) => ({ perplexity: mean(rs.map((r) => r.perplexity)).toFixed(1) })),
});

/** first − second per seed on `metric`, over the seeds both configs ran. */
const pair = (a: string, b: string, metric: (r: Run) => number): Paired | null =>
  pairedDiffs(`${a} − ${b}`, args.seeds, (s) => { const r = done.get(key(a, s)); return r && metric(r); }, (s) => { const r = done.get(key(b, s)); return r && metric(r); });
const have = new Set(configs.map((c) => c.name));
const pairs = [['fsq', 'vq-grad'], ['fsq', 'vq-ema'], ['fsq', 'vq-ema-reseed'], ['vq-ema-reseed', 'vq-grad'], ['simvq', 'vq-grad'], ['fsq', 'simvq']].filter(([a, b]) => have.has(a!) && have.has(b!)) as [string, string][];
const usagePairs = pairs.map(([a, b]) => pair(a, b, (r) => r.usage * 100)).filter((p): p is Paired => p !== null);
const msePairs = pairs.map(([a, b]) => pair(a, b, (r) => r.testMse * 1000)).filter((p): p is Paired => p !== null);
const paired = `### Paired per seed: codes used (percentage points)\n\n${pairedTable(usagePairs, { digits: 1, higher: true })}\n\n### Paired per seed: test MSE ×1000\n\n${pairedTable(msePairs, { digits: 3 })}\n`;
console.log(`\n${mseMd}\n${usageMd}\n${paired}\nwrote ${args.runDir}/{runs.jsonl, results.{md,json,svg}, usage/results.{md,json,svg}, recon-*.png} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
