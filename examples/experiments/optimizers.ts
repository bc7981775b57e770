/**
 * @file AdamW vs Muon vs AuON on the float tiny Llama (docs/experiments/optimizers.md): an LR sweep
 * on one seed per optimizer (AdamW first; Muon and AuON then keep AdamW's best LR for their
 * auxiliary AdamW), then every seed at each optimizer's best LR; validation bits per byte, ms per
 * step and ms inside `optimizer.step()`, paired per-seed differences, loss curves, and the cost of
 * one update direction (Newton–Schulz vs AuON's cosh-RMS) on square matrices of growing size.
 * Each run is its own tsx process (a fresh 2 GiB wasm heap), appended to runs.jsonl; re-running
 * resumes.
 * Run: QGRAD_THREADS=1 npx tsx examples/experiments/optimizers.ts [--steps 200 --batch-size 4 --seq-len 128] [--seeds 0,1,2]
 */
import { execFile } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randn, type Tensor } from '@qgrad/core';
import { auonDirection, encodeRecord, readMetrics, renderSvg, zeropowerViaNewtonSchulz5, type VegaLiteSpec } from '@qgrad/nn';
import { CliError, cli } from '../lib/args.js';
import { mean, pairedDiffs, pairedTable, writeResults, type ConfigResult, type Paired } from '../lib/experiments.js';
import { LLAMA_OPTIMIZERS, runQatLlama, type LlamaOptimizer } from '../lib/qat-llama.js';
import { SEED_MAX, useBackend } from '../lib/train.js';

const args = cli('experiments/optimizers', 'AdamW vs Muon vs AuON on the float tiny Llama: LR sweep on one seed each, then seeds at the best LR → validation bits/byte, ms/step, paired verdicts, loss curves.', {
  steps: { type: 'int', default: 200, min: 1, help: 'optimizer steps per run' },
  batchSize: { type: 'int', default: 4, min: 1, help: 'sequences per step' },
  seqLen: { type: 'int', default: 128, min: 2, help: 'bytes per sequence' },
  valBlocks: { type: 'int', default: 64, min: 1, help: 'validation sequences' },
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'seeds at the chosen LRs; the first one also runs the sweep' },
  adamwLrs: { type: 'string', default: '0.001,0.003,0.01', help: 'AdamW LR sweep' },
  muonLrs: { type: 'string', default: '0.01,0.03,0.1', help: 'Muon LR sweep (hidden matrices)' },
  auonLrs: { type: 'string', default: '0.1,0.3,1', help: 'AuON LR sweep (hidden matrices; its update has Frobenius norm ≈ 1, Muon′s ≈ √min(m, n), so its LRs sit ≈ 10× higher)' },
  benchSizes: { type: 'string', default: '128,256,512,1024', help: 'square matrix sizes for the update-direction timing (empty: skip)' },
  dim: { type: 'int', default: 128, min: 2, help: 'model width (the tiny Llama: 128)' },
  layers: { type: 'int', default: 4, min: 1, help: 'decoder layers (the tiny Llama: 4)' },
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/experiments/optimizers', help: 'output directory' },
  inProcess: { type: 'boolean', help: 'train in this process instead of one child process per run (small models only: several tiny-Llama trainings in one process can exhaust the 2 GiB wasm heap)' },
  run: { type: 'string', default: '', help: 'internal: run one optimizer:lr:adamLr:seed in this process and append it to runs.jsonl' },
});
useBackend(args.backend);

const numbers = (flag: string, s: string): number[] => {
  const v = s.split(',').filter((t) => t.trim()).map(Number);
  if (v.some((x) => !Number.isFinite(x) || x <= 0)) throw new CliError(`--${flag} must be comma-separated positive numbers, got '${s}'`);
  return v;
};
const SWEEP: Record<LlamaOptimizer, number[]> = { adamw: numbers('adamw-lrs', args.adamwLrs), muon: numbers('muon-lrs', args.muonLrs), auon: numbers('auon-lrs', args.auonLrs) };
for (const o of LLAMA_OPTIMIZERS) if (!SWEEP[o].length) throw new CliError(`--${o}-lrs needs at least one LR`);

interface Run { key: string; optimizer: LlamaOptimizer; lr: number; adamLr: number; seed: number; valBpb: number; trainBpb: number; msPerStep: number; optMsPerStep: number; steps: number }

const budget = `${args.steps}x${args.batchSize}x${args.seqLen}/d${args.dim}l${args.layers}`;
const key = (o: LlamaOptimizer, lr: number, adamLr: number, seed: number) => `${o}/${lr}/${o === 'adamw' ? '-' : adamLr}/${seed}/${budget}`;
const runDir = (o: LlamaOptimizer, lr: number, seed: number) => join(args.runDir, o, `lr${lr}`, `seed${seed}`);
mkdirSync(args.runDir, { recursive: true });
const log = join(args.runDir, 'runs.jsonl');

/** One training run, appended to runs.jsonl (diverging runs keep going and record NaN: a sweep's high LR may diverge). */
async function runOne(o: LlamaOptimizer, lr: number, adamLr: number, seed: number): Promise<void> {
  const r = await runQatLlama({
    config: 'fp', optimizer: o, lr, adamLr, seed, steps: args.steps, batchSize: args.batchSize, seqLen: args.seqLen,
    dim: args.dim, layers: args.layers, valBlocks: args.valBlocks, dir: runDir(o, lr, seed), allowNonfinite: true, progress: false,
  });
  const run: Run = { key: key(o, lr, adamLr, seed), optimizer: o, lr, adamLr, seed, valBpb: r.valBpb, trainBpb: r.trainBpb, msPerStep: r.msPerStep, optMsPerStep: r.optMsPerStep, steps: r.steps };
  appendFileSync(log, encodeRecord({ step: 0, ...run }));
}

if (args.run) {
  const [o, lr, adamLr, seed] = args.run.split(':') as [LlamaOptimizer, string, string, string];
  if (!LLAMA_OPTIMIZERS.includes(o)) throw new CliError(`--run: unknown optimizer '${o}'`);
  await runOne(o, Number(lr), Number(adamLr), Number(seed));
  process.exit(0);
}

const done = new Map<string, Run>();
const reload = () => { if (existsSync(log)) for (const r of readMetrics(log) as unknown as Run[]) done.set(r.key, r); };
reload();
const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 60000).toFixed(1)} min`;
const self = fileURLToPath(import.meta.url);

/** A run from runs.jsonl, or trained now: in a child process, since several tiny-Llama trainings in one process can exhaust the 2 GiB wasm heap. */
async function ensure(o: LlamaOptimizer, lr: number, adamLr: number, seed: number): Promise<Run> {
  const k = key(o, lr, adamLr, seed);
  if (done.has(k)) return done.get(k)!;
  if (args.inProcess) await runOne(o, lr, adamLr, seed);
  else {
    const flags = ['--steps', args.steps, '--batch-size', args.batchSize, '--seq-len', args.seqLen, '--val-blocks', args.valBlocks, '--dim', args.dim, '--layers', args.layers,
      '--backend', args.backend, '--run-dir', args.runDir, '--run', `${o}:${lr}:${adamLr}:${seed}`].map(String);
    await new Promise<void>((resolve, reject) => {
      execFile(process.execPath, ['--import', 'tsx', self, ...flags], { maxBuffer: 1 << 26 }, (err, _stdout, stderr) => (err ? reject(new Error(`run ${k} failed: ${stderr.trim().split('\n').slice(-5).join('\n')}`)) : resolve()));
    });
  }
  reload();
  const r = done.get(k);
  if (!r) throw new Error(`run ${k} ended without a record in ${log}`);
  console.log(`${o} lr ${lr}${o === 'adamw' ? '' : ` (aux AdamW ${adamLr})`} seed ${seed}: val ${r.valBpb.toFixed(4)} bits/byte, ${r.msPerStep.toFixed(0)} ms/step (optimizer ${r.optMsPerStep.toFixed(1)} ms), ${elapsed()}`);
  return r;
}

/** The LR with the lowest validation bits/byte (a diverged run's NaN never wins). */
const best = (runs: Run[]) => runs.reduce((a, b) => (!(a.valBpb <= b.valBpb) ? b : a)).lr;
const sweepSeed = args.seeds[0]!;
const sweeps = new Map<LlamaOptimizer, Run[]>();
const sweepOf = async (o: LlamaOptimizer, adamLr: number) => {
  const runs: Run[] = [];
  for (const lr of SWEEP[o]) runs.push(await ensure(o, lr, adamLr, sweepSeed));
  sweeps.set(o, runs);
  return best(runs);
};
const chosen = {} as Record<LlamaOptimizer, number>;
chosen.adamw = await sweepOf('adamw', 0);
const adamLr = chosen.adamw;
chosen.muon = await sweepOf('muon', adamLr);
chosen.auon = await sweepOf('auon', adamLr);
for (const seed of args.seeds) for (const o of LLAMA_OPTIMIZERS) await ensure(o, chosen[o], adamLr, seed);

const runsOf = (o: LlamaOptimizer) => args.seeds.map((s) => done.get(key(o, chosen[o], adamLr, s))!);
const ABOUT: Record<LlamaOptimizer, string> = {
  adamw: 'AdamW β (0.9, 0.95), wd 0.1 on matrices, everything',
  muon: `Muon (Nesterov 0.95, 5 Newton–Schulz steps) on the ${7 * args.layers} hidden matrices; AdamW ${adamLr} for embedding, head (wd 0.1) and norms`,
  auon: `AuON paper variant (cosh-RMS of the normalised Nesterov momentum) on the hidden matrices; AdamW ${adamLr} for the rest`,
};
const rows: ConfigResult[] = LLAMA_OPTIMIZERS.map((o) => {
  const rs = runsOf(o);
  return {
    config: o, seeds: rs.map((r) => r.seed), values: rs.map((r) => r.valBpb),
    extra: { lr: String(chosen[o]), 'train bpb (last 10 %)': mean(rs.map((r) => r.trainBpb)).toFixed(4), 'ms/step': Math.round(mean(rs.map((r) => r.msPerStep))), 'optimizer ms/step': mean(rs.map((r) => r.optMsPerStep)).toFixed(1), what: ABOUT[o] },
  };
});
const notes = `Float tiny Llama (dim ${args.dim}, ${args.layers} layers, 4 heads / 2 KV heads, SwiGLU ${3 * args.dim}, vocab 256) on Moby-Dick; ${args.steps} steps × batch ${args.batchSize} × ${args.seqLen} bytes ` +
  `= ${((args.steps * args.batchSize * args.seqLen) / 1e6).toFixed(2)} M training bytes; cosine LR (warmup ${Math.max(1, Math.min(20, Math.floor(args.steps / 10)))} steps, floor 0.1×) on every rate; each optimizer at the best LR of its sweep on seed ${sweepSeed}; ` +
  `validation on ${args.valBlocks} fixed ${args.seqLen}-byte blocks of the held-out 10 %.`;
let md = await writeResults(args.runDir, {
  title: 'Tiny Llama, AdamW vs Muon vs AuON: validation bits per byte (lower is better)', metric: 'val bits/byte', rows, digits: 4, notes,
  meta: {
    steps: args.steps, batchSize: args.batchSize, seqLen: args.seqLen, valBlocks: args.valBlocks, dim: args.dim, layers: args.layers, seeds: args.seeds, sweep: SWEEP, chosen, adamLr,
    runs: [...done.values()].filter((r) => r.key.endsWith(`/${budget}`)), // the sweep's too, with their timings
  },
});

const sweepRows = LLAMA_OPTIMIZERS.flatMap((o) => sweeps.get(o)!.map((r) => `| ${o} | ${r.lr}${r.lr === chosen[o] ? ' ✓' : ''} | ${Number.isFinite(r.valBpb) ? r.valBpb.toFixed(4) : 'diverged'} | ${Number.isFinite(r.trainBpb) ? r.trainBpb.toFixed(4) : '–'} | ${r.msPerStep.toFixed(0)} | ${r.optMsPerStep.toFixed(1)} |`));
md += `\n### LR sweep (seed ${sweepSeed}; ✓ = chosen)\n\n| optimizer | lr | val bits/byte | train bpb (last 10 %) | ms/step | optimizer ms/step |\n|---|---|---|---|---|---|\n${sweepRows.join('\n')}\n`;

const pair = (a: LlamaOptimizer, b: LlamaOptimizer): Paired | null =>
  pairedDiffs(`${a} − ${b}`, args.seeds, (s) => done.get(key(a, chosen[a], adamLr, s))?.valBpb, (s) => done.get(key(b, chosen[b], adamLr, s))?.valBpb);
const pairs = ([['muon', 'adamw'], ['auon', 'adamw'], ['auon', 'muon']] as const).map(([a, b]) => pair(a, b)).filter((p): p is Paired => p !== null);
md += `\n### Paired per seed: val bits/byte (same seed ⇒ same initialisation and batches)\n\n${pairedTable(pairs, { digits: 4 })}\n`;

// training curves at the chosen LRs: per-step train bits/byte, a 20-step moving average, mean over seeds
const window = Math.max(1, Math.min(20, Math.floor(args.steps / 10)));
const curve: { step: number; optimizer: string; bpb: number }[] = [];
for (const o of LLAMA_OPTIMIZERS) {
  const perSeed = args.seeds.map((s) => readMetrics(join(runDir(o, chosen[o], s), 'metrics.jsonl')).filter((r) => typeof r.bpb === 'number').map((r) => r.bpb as number));
  const n = Math.min(...perSeed.map((v) => v.length));
  const avg = Array.from({ length: n }, (_, i) => mean(perSeed.map((v) => v[i]!)));
  for (let i = window - 1; i < n; i++) curve.push({ step: i + 1, optimizer: `${o} (lr ${chosen[o]})`, bpb: mean(avg.slice(i + 1 - window, i + 1)) });
}
const curveSpec: VegaLiteSpec = {
  $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
  title: { text: `Tiny Llama training bits/byte (${window}-step moving average, mean of ${args.seeds.length} seeds)`, limit: 0 },
  data: { values: curve }, width: 460, height: 260, mark: { type: 'line', strokeWidth: 2 },
  encoding: {
    x: { field: 'step', type: 'quantitative', title: 'step' },
    y: { field: 'bpb', type: 'quantitative', title: 'train bits/byte', scale: { zero: false } },
    color: { field: 'optimizer', type: 'nominal', title: null, legend: { orient: 'top-right', labelLimit: 0 } },
  },
};
writeFileSync(join(args.runDir, 'curves.svg'), await renderSvg(curveSpec));

// the cost of one update direction alone: Newton–Schulz is O(mn·min(m, n)), AuON O(mn)
const sizes = args.benchSizes ? numbers('bench-sizes', args.benchSizes) : [];
if (sizes.length) {
  // the fastest of a few repetitions: on a shared machine the others measure the neighbours' load
  const time = (f: () => Tensor, reps: number) => {
    f().dataSync(); // warm-up: kernel compilation and buffer pools
    let best = Infinity;
    for (let i = 0; i < reps; i++) {
      const t = performance.now();
      f().dataSync();
      best = Math.min(best, performance.now() - t);
    }
    return best;
  };
  const benchRows = sizes.map((n) => {
    const u = randn([n, n]);
    const reps = Math.max(3, Math.round(2e8 / n ** 3));
    const ns = time(() => zeropowerViaNewtonSchulz5(u), reps);
    const au = time(() => auonDirection(u, { variant: 'paper', gamma: 1.5, hybridSteps: 0 }), reps);
    return `| ${n} × ${n} | ${ns.toFixed(2)} | ${au.toFixed(2)} | ${(ns / au).toFixed(1)} |`;
  });
  md += `\n### One update direction on an n × n momentum (ms, fastest of ≥ 3 repetitions, ${args.backend}, QGRAD_THREADS=${process.env.QGRAD_THREADS ?? 'default'})\n\n| matrix | Newton–Schulz (5 steps) | AuON cosh-RMS | ratio |\n|---|---|---|---|\n${benchRows.join('\n')}\n`;
}
writeFileSync(join(args.runDir, 'results.md'), md);
console.log(`\n${md}\nwrote ${args.runDir}/{runs.jsonl, results.{md,json,svg}, curves.svg} (${elapsed()})`);
