/**
 * @file Post-training quantization compared (issue 19, docs/experiments/ptq.md): RTN, GPTQ and AWQ
 * (without and with its clip search), each with and without a Hadamard rotation, at 4 and 3 weight bits, on float models trained here
 * and cached under the run directory — the tiny byte Llama on Moby-Dick (validation bits/byte) and
 * the MNIST CNN of examples/mnist-cnn.ts (test accuracy). Each seed draws the calibration sample
 * and trains its own CNN; the Llama is one model (--pretrain-seed) unless --pretrain-seed -1. runs.jsonl (resumable), results.{md,json,svg} per model, paired tables.
 * Run: npx tsx examples/experiments/ptq.ts [--seeds 0,1,2] [--pretrain-steps 300] [--cnn-steps 500] [--models llama,cnn] [--group 32]
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { dispose, loadSafetensorsWithMetadata, type Tensor } from '@qgrad/core';
import { Llama, encodeRecord, readMetrics, type Module } from '@qgrad/nn';
import { ptq, type PtqMethod, type PtqReport, type QATRule } from '@qgrad/quant';
import { CliError, cli } from '../lib/args.js';
import { mean, pairedDiffs, pairedTable, writeResults, type ConfigResult, type Paired } from '../lib/experiments.js';
import { bitsPerByte, pretrainedReference, type PretrainInfo } from '../lib/lora-llama.js';
import { llamaFromCheckpoint } from '../lib/qat-llama.js';
import { mnistData, type MnistData } from '../lib/mnist.js';
import { calibrationImages, calibrationWindows, cnnAccuracy, trainedCnn } from '../lib/ptq-models.js';
import { mobyDickWindows } from '../lib/text.js';
import { SEED_MAX, useBackend } from '../lib/train.js';

const args = cli('experiments/ptq', 'RTN vs GPTQ vs AWQ (± Hadamard) at 4 and 3 weight bits on a pretrained tiny Llama (bits/byte) and the MNIST CNN (accuracy) × seeds → tables, plots, paired verdicts.', {
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'seeds: each trains its own float models and draws its own calibration sample' },
  models: { type: 'string', default: 'llama,cnn', help: "comma-separated: 'llama', 'cnn'" },
  methods: { type: 'string', default: 'rtn,gptq,awq,awq-clip', help: "comma-separated PTQ methods (each run with and without Hadamard): rtn, gptq, awq (scale search only), awq-clip (scale search, then clip search)" },
  group: { type: 'int', default: 0, min: 0, help: 'weights: one scale per group of this many inputs of a row (0: one per output channel); Llama only' },
  bits: { type: 'ints', default: [4, 3], min: 2, max: 8, help: 'weight bits' },
  pretrainSteps: { type: 'int', default: 300, min: 1, help: 'Llama float pretraining steps on Moby-Dick (cached in <run-dir>/llama-seed<s>)' },
  pretrainSeed: { type: 'int', default: 0, min: -1, max: SEED_MAX, help: 'Llama: one float model, from this seed, for every seed (the seeds then vary only the calibration sample); -1: one float model per seed' },
  floatDir: { type: 'string', default: '', help: "Llama: take seed s's float model from <dir>/fp/seed<s>/checkpoint.safetensors (the llama grid's runs, e.g. runs/experiments/llama-1k: 1,000 steps × 16 × 128, one model per seed) instead of pretraining here" },
  pretrainLr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'peak LR of the Llama pretraining (AdamW, cosine)' },
  batchSize: { type: 'int', default: 8, min: 1, help: 'Llama sequences per pretraining step' },
  seqLen: { type: 'int', default: 128, min: 2, help: 'bytes per Llama sequence' },
  dim: { type: 'int', default: 128, min: 8, help: 'Llama width (the reference tiny Llama: 128)' },
  layers: { type: 'int', default: 4, min: 1, help: 'Llama decoder layers' },
  heads: { type: 'int', default: 4, min: 1, help: 'Llama attention heads' },
  kvHeads: { type: 'int', default: 2, min: 1, help: 'Llama key/value heads' },
  valBlocks: { type: 'int', default: 128, min: 1, help: 'Llama validation sequences (evenly spread over the held-out 10 %)' },
  calibSeqs: { type: 'int', default: 8, min: 1, help: 'Llama calibration sequences (from the training text)' },
  cnnSteps: { type: 'int', default: 500, min: 1, help: 'CNN training steps (cached per seed in <run-dir>/cnn-seed<s>)' },
  cnnBatch: { type: 'int', default: 64, min: 1, help: 'CNN images per step' },
  channels: { type: 'int', default: 8, min: 1, help: 'CNN channels of the first conv (the second has twice as many)' },
  cnnLr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'CNN peak LR (AdamW, cosine)' },
  calibImages: { type: 'int', default: 512, min: 1, help: 'CNN calibration images (from the training digits)' },
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/experiments/ptq', help: 'output directory' },
});
useBackend(args.backend);

const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const models = list(args.models);
for (const m of models) if (m !== 'llama' && m !== 'cnn') throw new CliError(`--models takes llama and/or cnn, got '${m}'`);
const methods = list(args.methods);
for (const m of methods) if (!['rtn', 'gptq', 'awq', 'awq-clip'].includes(m)) throw new CliError(`--methods takes rtn, gptq, awq, awq-clip, got '${m}'`);
// the CNN's conv inputs (9, 72) and Linear input (784) split into no common group size
if (args.group && models.includes('cnn')) throw new CliError(`--group ${args.group} is for the Llama only (the CNN's layer inputs are 9, 72 and 784 wide); add --models llama`);

/** One quantized configuration: a method (AWQ with or without its clip search), with or without the rotation, at a bit width. */
interface Variant { method: PtqMethod; awqClip: boolean; hadamard: boolean; bits: number; name: string }
const variants: Variant[] = args.bits.flatMap((bits) => methods.flatMap((m) => [false, true].map((hadamard) => ({
  method: (m === 'awq-clip' ? 'awq' : m) as PtqMethod, awqClip: m === 'awq-clip', hadamard, bits, name: `${m}${hadamard ? '+H' : ''}`,
}))));

/**
 * Weights only, every method on the same grid: symmetric int, one absmax scale per output channel
 * (ptq's default for RTN and GPTQ; AWQ's default groups of 128 are whole rows on the Llama's 128-wide
 * inputs anyway) or per --group inputs of a row, so the methods differ only in how they round, never
 * in the grid they round onto.
 */
const weight = (bits: number) => ({ grid: 'int' as const, bits, ...(args.group > 0 && { granularity: { group: args.group } }) });

interface Run {
  model: 'llama' | 'cnn';
  settings: string;
  config: string;
  bits: number;
  seed: number;
  /** Llama: validation bits/byte; CNN: test accuracy in %. */
  value: number;
  /** Mean over quantized layers of the output SQNR (dB) on the calibration inputs: round-to-nearest, and the method. */
  rtnSqnrDb: number | null;
  sqnrDb: number | null;
  /** awq-clip: mean over the clipped layers of the % of rows (groups) whose range the clip search shrank; absent in runs logged before it was recorded. */
  clippedPct?: number | null;
  ptqSeconds: number;
}

mkdirSync(args.runDir, { recursive: true });
const log = join(args.runDir, 'runs.jsonl');
const t0 = performance.now();
const minutes = () => ((performance.now() - t0) / 60000).toFixed(1);
const key = (settings: string, config: string, bits: number, seed: number) => `${settings}/${config}/w${bits}/s${seed}`;
const done = new Map<string, Run>();
if (existsSync(log)) for (const r of readMetrics(log) as unknown as Run[]) done.set(key(r.settings, r.config, r.bits, r.seed), r);

const freeModel = (m: Module) => dispose([...m.parameters(), ...m.buffers()]);
const meanOf = (report: PtqReport, f: 'rtnSqnrDb' | 'sqnrDb') => {
  const v = report.rows.map((r) => r[f]).filter(Number.isFinite);
  return v.length ? mean(v) : null;
};

/** Runs every variant of one model and seed not already in runs.jsonl: fresh float copy, ptq, evaluation, freed. */
function grid(model: Run['model'], settings: string, seed: number, floatValue: number, calibration: Tensor[], fresh: () => Module, rules: QATRule[], evaluate: (m: Module) => number): void {
  const record = (r: Run) => {
    done.set(key(r.settings, r.config, r.bits, r.seed), r);
    appendFileSync(log, encodeRecord({ step: 0, ...r }));
  };
  if (!done.has(key(settings, 'float', 32, seed))) record({ model, settings, config: 'float', bits: 32, seed, value: floatValue, rtnSqnrDb: null, sqnrDb: null, ptqSeconds: 0 });
  for (const v of variants) {
    if (done.has(key(settings, v.name, v.bits, seed))) continue;
    const m = fresh();
    const t = performance.now();
    const { report } = ptq(m, calibration, { method: v.method, awqClip: v.awqClip, hadamard: v.hadamard, rules: rules.map((r) => ({ ...r, weight: weight(v.bits) })), progress: true });
    const ptqSeconds = (performance.now() - t) / 1000;
    const value = evaluate(m);
    freeModel(m);
    const clipped = report.rows.flatMap((row) => (row.clipped === undefined ? [] : [100 * row.clipped]));
    const r: Run = { model, settings, config: v.name, bits: v.bits, seed, value, rtnSqnrDb: meanOf(report, 'rtnSqnrDb'), sqnrDb: meanOf(report, 'sqnrDb'), clippedPct: clipped.length ? mean(clipped) : null, ptqSeconds };
    record(r);
    console.log(`${model} seed ${seed} W${v.bits} ${v.name}: ${model === 'llama' ? `${value.toFixed(4)} bits/byte` : `${value.toFixed(2)} % accuracy`} (float ${floatValue.toFixed(model === 'llama' ? 4 : 2)}), layer SQNR ${r.sqnrDb?.toFixed(1)} dB (RTN ${r.rtnSqnrDb?.toFixed(1)}), ptq ${ptqSeconds.toFixed(1)} s, ${minutes()} min elapsed`);
  }
}

// ---- the tiny Llama ----
// the group joins the key only when set, so the per-channel runs logged before --group existed still count
const groupKey = args.group ? `/g${args.group}` : '';
const llamaSettings = (args.floatDir ? `llama:from-${args.floatDir}/c${args.calibSeqs}/v${args.valBlocks}` : `llama:${args.pretrainSteps}x${args.batchSize}x${args.seqLen}/lr${args.pretrainLr}/d${args.dim}l${args.layers}h${args.heads}kv${args.kvHeads}/c${args.calibSeqs}/v${args.valBlocks}/pre${args.pretrainSeed}`) + groupKey;
const llamaInfos = new Map<number, PretrainInfo>();
/** Every Linear of the decoder layers; embedding and lm_head stay float, as in GPTQ's and AWQ's Llama scripts. */
const llamaRules: QATRule[] = [{ match: 'model.layers.**', types: ['Linear'] }];

/** Seed `seed`'s float model of the llama grid under --float-dir: its checkpoint, once its run is recorded as finished there. */
function gridFloat(seed: number, val: Parameters<typeof bitsPerByte>[1]): { info: PretrainInfo; fresh: () => Module } {
  const path = join(args.floatDir, 'fp', `seed${seed}`, 'checkpoint.safetensors');
  const runs = join(args.floatDir, 'runs.jsonl');
  const finished = existsSync(runs) && readMetrics(runs).some((r) => typeof r.key === 'string' && r.key.startsWith(`fp/${seed}/`));
  // a checkpoint without its record is a run still training (checkpoints are written along the way)
  if (!finished || !existsSync(path)) throw new CliError(`--float-dir ${args.floatDir}: no finished fp run of seed ${seed} (${path} and its record in ${runs}); run examples/experiments/llama.ts --only fp there first`);
  // the run's settings are in the metadata; its tensors (weights and optimizer moments) are released at once
  const loaded = loadSafetensorsWithMetadata(path);
  dispose(Object.values(loaded.tensors));
  const c = JSON.parse(loaded.metadata.config ?? '{}') as { steps?: number; batchSize?: number; lr?: number };
  const m = llamaFromCheckpoint(path);
  const info: PretrainInfo = { steps: c.steps ?? NaN, batchSize: c.batchSize ?? NaN, seqLen: m.config.maxSeqLen, lr: c.lr ?? NaN, seed, config: m.config, mobyBpb: bitsPerByte(m, val, args.valBlocks), sotuBpb: NaN, msPerStep: NaN };
  freeModel(m);
  return { info, fresh: () => llamaFromCheckpoint(path) };
}

async function llama(seed: number): Promise<void> {
  const preSeed = args.floatDir ? seed : args.pretrainSeed < 0 ? seed : args.pretrainSeed;
  const dir = args.floatDir ? join(args.floatDir, 'fp', `seed${seed}`) : join(args.runDir, `llama-seed${preSeed}`);
  const { train, val } = mobyDickWindows(args.seqLen, 1);
  const { info, fresh } = args.floatDir ? gridFloat(seed, val)
    : { info: await pretrainedReference({ dir, seed: preSeed, steps: args.pretrainSteps, batchSize: args.batchSize, seqLen: args.seqLen, lr: args.pretrainLr, valBlocks: args.valBlocks, dim: args.dim, layers: args.layers, heads: args.heads, kvHeads: args.kvHeads, log: console.log }), fresh: () => Llama.fromPretrained(dir) };
  llamaInfos.set(seed, info);
  console.log(`llama seed ${seed}: float reference (${dir}, seed ${preSeed}, ${info.steps} steps) Moby-Dick val ${info.mobyBpb.toFixed(4)} bits/byte`);
  const windows = calibrationWindows(train, args.calibSeqs, seed);
  dispose(windows.map((w) => w[1]));
  const calibration = windows.map((w) => w[0]);
  grid('llama', llamaSettings, seed, info.mobyBpb, calibration, fresh, llamaRules, (m) => bitsPerByte(m as Llama, val, args.valBlocks));
  dispose(calibration);
}

// ---- the MNIST CNN (examples/mnist-cnn.ts's network) ----
const cnnSettings = `cnn:${args.cnnSteps}x${args.cnnBatch}/lr${args.cnnLr}/ch${args.channels}/c${args.calibImages}`;
/** Both convs and the classifier: ptq rounds Conv2d layers to nearest whatever the method, so only the Linear 784→10 differs between methods. */
const cnnRules: QATRule[] = [{ types: ['Linear', 'Conv2d'] }];
const cnnFloat = new Map<number, number>();

async function cnn(seed: number, data: MnistData): Promise<void> {
  const dir = join(args.runDir, `cnn-seed${seed}`);
  const { floatAcc, fresh } = await trainedCnn(data, { dir, seed, steps: args.cnnSteps, batchSize: args.cnnBatch, channels: args.channels, lr: args.cnnLr });
  cnnFloat.set(seed, floatAcc);
  console.log(`cnn seed ${seed}: float test accuracy ${floatAcc.toFixed(2)} %`);
  const images = calibrationImages(data, args.calibImages, seed);
  dispose(images.map((b) => b[1]));
  const calibration = images.map((b) => b[0]);
  grid('cnn', cnnSettings, seed, floatAcc, calibration, fresh, cnnRules, (m) => cnnAccuracy(m, data));
  dispose(calibration);
}

// seed-major: a stopped run has every configuration of its first seeds
const data = models.includes('cnn') ? mnistData() : null;
for (const seed of args.seeds) {
  if (models.includes('llama')) await llama(seed);
  if (data) await cnn(seed, data);
}

// ---- tables ----
const runOf = (settings: string, config: string, bits: number, seed: number) => done.get(key(settings, config, bits, seed));
const ABOUT: Record<string, string> = {
  rtn: 'round to nearest', gptq: 'GPTQ, act-order, damping 1 %', awq: 'AWQ scale search (20 exponents), no clip search',
  'awq-clip': 'AWQ scale search, then clip search (absmax·1…0.55 per row or group; q/k projections unclipped)',
  'rtn+H': 'Hadamard rotation of each Linear input, then RTN', 'gptq+H': 'Hadamard, then GPTQ', 'awq+H': 'Hadamard, then AWQ', 'awq-clip+H': 'Hadamard, then AWQ with clip search',
};
const configsOf = () => [{ config: 'float', bits: 32 }, ...variants.map((v) => ({ config: v.name, bits: v.bits }))];
function rows(settings: string): ConfigResult[] {
  return configsOf().map(({ config, bits }) => {
    const rs = args.seeds.map((s) => runOf(settings, config, bits, s)).filter((r): r is Run => r !== undefined);
    const avg = (f: (r: Run) => number | null) => {
      const v = rs.map(f).filter((x): x is number => x !== null);
      return v.length ? mean(v).toFixed(1) : '';
    };
    return {
      config: config === 'float' ? 'float' : `W${bits} ${config}`, group: config === 'float' ? 'float32' : `W${bits}`, seeds: rs.map((r) => r.seed), values: rs.map((r) => r.value),
      extra: { 'layer SQNR dB': avg((r) => r.sqnrDb), 'RTN layer SQNR dB': avg((r) => r.rtnSqnrDb), 'clipped %': avg((r) => r.clippedPct ?? null), 'ptq s': avg((r) => (r.config === 'float' ? null : r.ptqSeconds)), what: config === 'float' ? 'the float model' : ABOUT[config] ?? config },
    };
  }).filter((r) => r.values.length > 0);
}

const PAIRS: [string, string][] = [['gptq', 'rtn'], ['awq', 'rtn'], ['gptq', 'awq'], ['awq-clip', 'awq'], ['awq-clip', 'rtn'], ['gptq', 'awq-clip'], ['rtn+H', 'rtn'], ['gptq+H', 'gptq'], ['awq+H', 'awq'], ['awq-clip+H', 'awq-clip'], ['gptq+H', 'rtn']];
function paired(settings: string, digits: number, higher: boolean): string {
  const have = new Set(variants.map((v) => v.name));
  const ps = args.bits.flatMap((bits) => PAIRS.filter(([a, b]) => have.has(a) && have.has(b)).map(([a, b]) =>
    pairedDiffs(`W${bits}: ${a} − ${b}`, args.seeds, (s) => runOf(settings, a, bits, s)?.value, (s) => runOf(settings, b, bits, s)?.value))).filter((p): p is Paired => p !== null);
  return pairedTable(ps, { digits, higher });
}

const out: string[] = [];
const quantNote = `Weights only: symmetric int grid, one absmax scale per ${args.group ? `group of ${args.group} inputs of a row` : 'output channel'} (the same grid for every method), activations float. Hadamard: normalised block Hadamard (largest power of two ≤ 128 dividing the input width) on each Linear input, undone in the weight.`;
if (models.includes('llama')) {
  const infos = args.seeds.map((s) => llamaInfos.get(s)!).filter(Boolean);
  const cfg = infos[0]?.config;
  const p = paired(llamaSettings, 4, false);
  const md = await writeResults(join(args.runDir, 'llama'), {
    title: 'PTQ of the tiny Llama: Moby-Dick validation bits per byte (lower is better)', metric: 'val bits/byte', digits: 4, rows: rows(llamaSettings),
    notes: `Float model: byte Llama (dim ${cfg?.dim}, ${cfg?.nLayers} layers, ${cfg?.nHeads} heads / ${cfg?.nKvHeads} KV heads, SwiGLU ${cfg?.hiddenDim}), pretrained on Moby-Dick for ${cfg ? infos[0]!.steps : args.pretrainSteps} steps × ${cfg ? infos[0]!.batchSize : args.batchSize} × ${args.seqLen} bytes, AdamW lr ${cfg ? infos[0]!.lr : args.pretrainLr} cosine, ` +
      `${args.floatDir ? `one per seed: the llama grid's fp run of that seed (${args.floatDir})` : args.pretrainSeed < 0 ? 'one per seed (init and batch order)' : `one (seed ${args.pretrainSeed}) shared by every seed, so the seeds vary only the calibration sample and RTN (± H), which reads none, is the same on every seed`}. ` +
      `Calibration: ${args.calibSeqs} training windows of ${args.seqLen} bytes drawn by the seed. Validation: ${args.valBlocks} fixed windows of the held-out last 10 %. Quantized: every Linear of the decoder layers (embedding and lm_head float). ${quantNote}`,
    meta: { settings: llamaSettings, seeds: args.seeds, pretrained: infos, paired: p },
  });
  appendFileSync(join(args.runDir, 'llama', 'results.md'), `\n### Paired per seed (bits/byte)\n\n${p}\n`);
  out.push(md, '### Paired per seed (bits/byte)', p);
}
if (models.includes('cnn')) {
  const p = paired(cnnSettings, 2, true);
  const md = await writeResults(join(args.runDir, 'cnn'), {
    title: 'PTQ of the MNIST CNN: test accuracy % (higher is better)', metric: 'test accuracy %', digits: 2, rows: rows(cnnSettings),
    notes: `Float models: examples/mnist-cnn.ts's CNN (conv 3×3 ${args.channels} → pool → conv ${2 * args.channels} → pool → Linear ${2 * args.channels * 49}→10), ${args.cnnSteps} steps × ${args.cnnBatch} images, AdamW lr ${args.cnnLr} cosine, one per seed. ` +
      `Calibration: ${args.calibImages} training digits drawn by the seed; test: the 2,000 test digits. Quantized: both convs and the Linear; ptq rounds Conv2d layers to nearest under every method (GPTQ, AWQ and the rotation act on the Linear only). ${quantNote}`,
    meta: { settings: cnnSettings, seeds: args.seeds, floatAccuracy: Object.fromEntries(cnnFloat), paired: p },
  });
  appendFileSync(join(args.runDir, 'cnn', 'results.md'), `\n### Paired per seed (accuracy points)\n\n${p}\n`);
  out.push(md, '### Paired per seed (accuracy points)', p);
}
console.log(`\n${out.join('\n\n')}\n\nwrote ${args.runDir}/{runs.jsonl, ${models.map((m) => `${m}/results.{md,json,svg}`).join(', ')}} (${minutes()} min)`);
