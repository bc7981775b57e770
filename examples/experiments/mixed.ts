/**
 * @file Mixed precision at an average bit budget (issue 14, docs/experiments/mixed.md): per layer
 * sensitivity measured on calibration data (quant's measureSensitivity), bits allocated by
 * allocateBits, quantized by ptq (RTN and GPTQ) against uniform bits at the same budget, on the
 * float tiny Llamas of runs/experiments/llama-1k (validation bits/byte) and on the MNIST CNN of
 * experiments/ptq.ts (test accuracy), per seed. runs.jsonl (resumable), results.{md,json,svg} per
 * model with paired tables and the per-layer bit map of the first seed.
 * Run: npx tsx examples/experiments/mixed.ts [--seeds 0,1,2] [--budget 3] [--models llama,cnn]
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Generator, add, crossEntropy, dispose, noGrad, tidy, type Tensor } from '@qgrad/core';
import { Conv2d, encodeRecord, readMetrics, type Llama, type Module } from '@qgrad/nn';
import { allocateBits, bitsPerParameter, measureSensitivity, ptq, type LayerSensitivity, type PtqMethod, type QATRule, type WeightQuantConfig } from '@qgrad/quant';
import { CliError, cli } from '../lib/args.js';
import { mean, pairedDiffs, pairedTable, writeResults, type ConfigResult, type Paired } from '../lib/experiments.js';
import { bitsPerByte } from '../lib/lora-llama.js';
import { mnistData } from '../lib/mnist.js';
import { calibrationImages, calibrationWindows, cnnAccuracy, trainedCnn } from '../lib/ptq-models.js';
import { llamaFromCheckpoint } from '../lib/qat-llama.js';
import { mobyDickWindows } from '../lib/text.js';
import { SEED_MAX, useBackend } from '../lib/train.js';

const args = cli('experiments/mixed', 'Sensitivity-allocated bits vs uniform bits at the same average (RTN and GPTQ) on the float tiny Llamas of a llama grid (bits/byte) and the MNIST CNN (accuracy) × seeds → tables, bit maps, paired verdicts.', {
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'seeds: the float Llama of that seed, the CNN trained with it, and the calibration sample' },
  models: { type: 'string', default: 'llama,cnn', help: "comma-separated: 'llama', 'cnn'" },
  methods: { type: 'string', default: 'rtn,gptq', help: 'comma-separated PTQ methods' },
  budget: { type: 'int', default: 3, min: 2, max: 8, help: 'average bits per quantized weight (the uniform arm uses exactly this)' },
  allocations: { type: 'string', default: 'loss:2,3,4;loss:2,3,4:exact;loss:2,3,4,8:exact;hessian:2,3,4:exact', help: "';'-separated score:choices[:exact] — score 'loss' (measured loss change), 'hessian' (HAWQ: tr(H)/n·‖W − Q(W)‖²) or 'sqnr'; allocateBits' greedy solver unless ':exact'" },
  group: { type: 'int', default: 32, min: 0, help: 'Llama: one absmax scale per this many inputs (0: per output channel); the CNN is always per output channel' },
  scaleBits: { type: 'int', default: 16, min: 1, help: 'bits of each stored scale in the bits-per-weight count (fp16)' },
  samples: { type: 'int', default: 8, min: 1, help: 'Hutchinson probes of the Hessian trace' },
  llamaDir: { type: 'string', default: 'runs/experiments/llama-1k', help: "the llama grid whose fp/seed<s>/checkpoint.safetensors are the float models (read only)" },
  llamaRun: { type: 'string', default: '1000x16x128', help: "its runs.jsonl key suffix: a seed's checkpoint is used only once fp/<seed>/<this> is recorded" },
  calibSeqs: { type: 'int', default: 16, min: 1, help: 'Llama calibration windows (training text): the sensitivity loss and GPTQ' },
  valBlocks: { type: 'int', default: 64, min: 1, help: 'Llama validation windows (evenly spread over the held-out 10 %, as the llama grid)' },
  cnnSteps: { type: 'int', default: 500, min: 1, help: 'CNN training steps (cached per seed in <run-dir>/cnn-seed<s>)' },
  cnnBatch: { type: 'int', default: 64, min: 1, help: 'CNN images per step' },
  channels: { type: 'int', default: 8, min: 1, help: 'CNN channels of the first conv (the second has twice as many)' },
  cnnLr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'CNN peak LR (AdamW, cosine)' },
  calibImages: { type: 'int', default: 512, min: 1, help: 'CNN calibration images (training digits): the sensitivity loss and GPTQ' },
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/experiments/mixed', help: 'output directory' },
});
useBackend(args.backend);

const list = (s: string, sep = ',') => s.split(sep).map((x) => x.trim()).filter(Boolean);
const models = list(args.models);
const methods = list(args.methods) as PtqMethod[];
for (const m of models) if (m !== 'llama' && m !== 'cnn') throw new CliError(`--models takes llama and/or cnn, got '${m}'`);
for (const m of methods) if (m !== 'rtn' && m !== 'gptq') throw new CliError(`--methods takes rtn and/or gptq, got '${m}'`);
type Score = 'loss' | 'hessian' | 'sqnr';
/** One way to spend the budget: 'uniform', or allocateBits with a score over a set of widths. */
interface Allocation { name: string; score?: Score; choices: number[]; solver?: 'greedy' | 'exact' }
const allocations: Allocation[] = [{ name: 'uniform', choices: [args.budget] }, ...list(args.allocations, ';').map((a): Allocation => {
  const [score, widths, solver = 'greedy', ...rest] = a.split(':');
  const choices = list(widths ?? '').map(Number);
  if (!['loss', 'hessian', 'sqnr'].includes(score!) || !choices.length || choices.some((b) => !Number.isInteger(b) || b < 1 || b > 8) || !['greedy', 'exact'].includes(solver) || rest.length) {
    throw new CliError(`--allocations takes score:choices[:exact] such as 'loss:2,3,4' or 'hessian:2,3,4:exact', got '${a}'`);
  }
  if (Math.min(...choices) > args.budget) throw new CliError(`--allocations '${a}': the smallest width ${Math.min(...choices)} is above --budget ${args.budget}`);
  return { name: `${score}{${choices.join(',')}}${solver === 'exact' ? ' exact' : ''}`, score: score as Score, choices, solver: solver as 'greedy' | 'exact' };
})];
const allWidths = [...new Set(allocations.flatMap((a) => a.choices))].sort((a, b) => a - b);

interface Run {
  model: 'llama' | 'cnn';
  settings: string;
  alloc: string;
  method: string;
  seed: number;
  /** Llama: validation bits/byte; CNN: test accuracy in %. */
  value: number;
  /** Code bits per quantized weight, and with the scales at --scale-bits each (bitsPerParameter). */
  codeBits: number;
  bitsWithScales: number;
  /** Σ over layers of the measured single-layer loss change at the allocated width (the allocator's additive estimate, nats). */
  predictedDelta: number;
  /** The calibration loss change of the whole quantized model (nats): what predictedDelta estimates, on the same data. */
  calibDelta: number;
  bits: Record<string, number>;
  ptqSeconds: number;
}

mkdirSync(args.runDir, { recursive: true });
const log = join(args.runDir, 'runs.jsonl');
const t0 = performance.now();
const minutes = () => ((performance.now() - t0) / 60000).toFixed(1);
const key = (settings: string, alloc: string, method: string, seed: number) => `${settings}/${alloc}/${method}/s${seed}`;
const done = new Map<string, Run>();
if (existsSync(log)) for (const r of readMetrics(log) as unknown as Run[]) done.set(key(r.settings, r.alloc, r.method, r.seed), r);
const record = (r: Run) => {
  done.set(key(r.settings, r.alloc, r.method, r.seed), r);
  appendFileSync(log, encodeRecord({ step: 0, ...r }));
};
const freeModel = (m: Module) => dispose([...m.parameters(), ...m.buffers()]);

/** The quantizer of one width: symmetric int, absmax scale per group (or output channel) — the measurement's is dynamic, ptq fixes the same absmax once. */
const quantOf = (granularity: WeightQuantConfig['granularity']) => ({
  ptq: (bits: number): WeightQuantConfig => ({ grid: 'int', bits, granularity }),
  measure: (bits: number): WeightQuantConfig => ({ grid: 'int', bits, granularity, scale: { mode: 'dynamic', rule: 'absmax' } }),
});

/** Sensitivity of one float model, cached as JSON (the Hutchinson probes are the slow part). */
function sensitivity(path: string, model: Module, losses: (() => Tensor)[], measure: (b: number) => WeightQuantConfig, targets: string, seed: number): LayerSensitivity[] {
  if (existsSync(path)) return JSON.parse(readFileSync(path, 'utf8')) as LayerSensitivity[];
  const t = performance.now();
  // the loss changes on the whole calibration sample; each Hutchinson probe on the next of its batches (one batch's double-backward graph at a time)
  const loss = () => losses.map((f) => f()).reduce((a, b) => add(a, b));
  let next = 0;
  const hessianLoss = () => losses[next++ % losses.length]!().mul(losses.length);
  const sens = measureSensitivity(model, { loss, hessianLoss, choices: allWidths, quant: measure, targets, samples: args.samples, generator: new Generator(seed) });
  console.log(`  sensitivity of ${sens.length} layers at ${allWidths.join('/')} bits in ${((performance.now() - t) / 1000).toFixed(0)} s`);
  writeFileSync(path, `${JSON.stringify(sens, null, 1)}\n`);
  return sens;
}

/** Every allocation × method of one model and seed not already in runs.jsonl: fresh float copy, ptq at the allocation's rules, evaluation. */
function grid(model: Run['model'], settings: string, seed: number, floatValue: number, sens: LayerSensitivity[], ptqQuant: (b: number) => WeightQuantConfig, calibration: Tensor[], fresh: () => Module, evaluate: (m: Module) => number, calibLoss: (m: Module) => number): void {
  if (!done.has(key(settings, 'float', 'float', seed))) record({ model, settings, alloc: 'float', method: 'float', seed, value: floatValue, codeBits: 32, bitsWithScales: 32, predictedDelta: 0, calibDelta: 0, bits: {}, ptqSeconds: 0 });
  const probe = fresh();
  const floatCalib = calibLoss(probe);
  for (const a of allocations) {
    const bits = a.score ? allocateBits(probe, sens, { budget: args.budget, choices: a.choices, score: a.score, solver: a.solver, quant: ptqQuant }).bits : Object.fromEntries(sens.map((s) => [s.name, args.budget]));
    const rules: QATRule[] = sens.map((s) => ({ match: s.name, types: [probe.getSubmodule(s.name) instanceof Conv2d ? 'Conv2d' : 'Linear'], weight: ptqQuant(bits[s.name]!) }));
    const predictedDelta = sens.reduce((n, s) => n + s.lossDelta[bits[s.name]!]!, 0);
    for (const method of methods) {
      if (done.has(key(settings, a.name, method, seed))) continue;
      const m = fresh();
      const t = performance.now();
      const { report } = ptq(m, calibration, { method, rules, progress: true });
      const ptqSeconds = (performance.now() - t) / 1000;
      // both arms counted by one function: codes at the grid's bits, one scale per group at --scale-bits
      const quantized = new Set(report.rows.map((r) => `${r.name}.weight`));
      const rows = bitsPerParameter(m, { scaleBits: args.scaleBits }).rows.filter((r) => quantized.has(r.name));
      const n = rows.reduce((k, r) => k + r.params, 0);
      const codeBits = sens.reduce((k, s) => k + s.params * bits[s.name]!, 0) / n;
      const value = evaluate(m);
      const calibDelta = calibLoss(m) - floatCalib;
      freeModel(m);
      const r: Run = { model, settings, alloc: a.name, method, seed, value, codeBits, bitsWithScales: rows.reduce((k, r) => k + r.idealBits, 0) / n, predictedDelta, calibDelta, bits, ptqSeconds };
      record(r);
      console.log(`${model} seed ${seed} ${a.name} ${method}: ${model === 'llama' ? `${value.toFixed(4)} bits/byte` : `${value.toFixed(2)} %`} (float ${floatValue.toFixed(model === 'llama' ? 4 : 2)}), ${codeBits.toFixed(3)} bits/weight (${r.bitsWithScales.toFixed(3)} with scales), ptq ${ptqSeconds.toFixed(1)} s, ${minutes()} min elapsed`);
    }
  }
  freeModel(probe);
}

const sensBySeed = new Map<string, LayerSensitivity[]>();
const floatBySeed = new Map<string, number>();
const missingSeeds: number[] = [];

// ---- the tiny Llamas of the llama grid ----
const group = args.group ? { group: args.group } : ('channel' as const);
const llamaSettings = `llama:${args.llamaRun}/b${args.budget}/${args.group ? `g${args.group}` : 'channel'}/c${args.calibSeqs}/h${args.samples}/v${args.valBlocks}`;
const llamaTargets = 'model.layers.**';
async function llama(seed: number): Promise<void> {
  const recorded = existsSync(join(args.llamaDir, 'runs.jsonl')) && (readMetrics(join(args.llamaDir, 'runs.jsonl')) as { key?: string }[]).some((r) => r.key === `fp/${seed}/${args.llamaRun}`);
  const ckpt = join(args.llamaDir, 'fp', `seed${seed}`, 'checkpoint.safetensors');
  if (!recorded || !existsSync(ckpt)) {
    console.log(`llama seed ${seed}: no finished float run (fp/${seed}/${args.llamaRun} in ${args.llamaDir}/runs.jsonl) — skipped`);
    missingSeeds.push(seed);
    return;
  }
  const base = llamaFromCheckpoint(ckpt);
  const { train, val } = mobyDickWindows(base.config.maxSeqLen, 1);
  const floatValue = bitsPerByte(base, val, args.valBlocks);
  console.log(`llama seed ${seed}: float ${ckpt}, val ${floatValue.toFixed(4)} bits/byte`);
  const windows = calibrationWindows(train, args.calibSeqs, seed);
  const q = quantOf(group);
  const losses = windows.map(([x, y]) => () => base.loss(x, y).mul(x.shape[0]! / args.calibSeqs));
  const sens = sensitivity(join(args.runDir, `llama-seed${seed}-sensitivity.json`), base, losses, q.measure, llamaTargets, seed);
  freeModel(base);
  sensBySeed.set(`llama/${seed}`, sens);
  floatBySeed.set(`llama/${seed}`, floatValue);
  const calibLoss = (m: Module) => tidy(() => noGrad(() => windows.reduce((k, [x, y]) => k + (m as Llama).loss(x, y).item() * x.shape[0]!, 0) / args.calibSeqs));
  grid('llama', llamaSettings, seed, floatValue, sens, q.ptq, windows.map((w) => w[0]), () => llamaFromCheckpoint(ckpt), (m) => bitsPerByte(m as Llama, val, args.valBlocks), calibLoss);
  dispose(windows.flat());
}

// ---- the MNIST CNN of experiments/ptq.ts ----
const cnnSettings = `cnn:${args.cnnSteps}x${args.cnnBatch}/lr${args.cnnLr}/ch${args.channels}/b${args.budget}/c${args.calibImages}/h${args.samples}`;
async function cnn(seed: number, data: ReturnType<typeof mnistData>): Promise<void> {
  const { floatAcc, fresh } = await trainedCnn(data, { dir: join(args.runDir, `cnn-seed${seed}`), seed, steps: args.cnnSteps, batchSize: args.cnnBatch, channels: args.channels, lr: args.cnnLr });
  console.log(`cnn seed ${seed}: float test accuracy ${floatAcc.toFixed(2)} %`);
  const images = calibrationImages(data, args.calibImages, seed);
  const q = quantOf('channel');
  const base = fresh();
  const n = images.reduce((k, [x]) => k + x.shape[0]!, 0);
  const losses = images.map(([x, y]) => () => crossEntropy((base as unknown as { forward(x: Tensor): Tensor }).forward(x), y).mul(x.shape[0]! / n));
  const sens = sensitivity(join(args.runDir, `cnn-seed${seed}-sensitivity.json`), base, losses, q.measure, '*', seed);
  freeModel(base);
  sensBySeed.set(`cnn/${seed}`, sens);
  floatBySeed.set(`cnn/${seed}`, floatAcc);
  const calibLoss = (m: Module) => tidy(() => noGrad(() => images.reduce((k, [x, y]) => k + crossEntropy((m as unknown as { forward(x: Tensor): Tensor }).forward(x), y).item() * x.shape[0]!, 0) / n));
  grid('cnn', cnnSettings, seed, floatAcc, sens, q.ptq, images.map((b) => b[0]), fresh, (m) => cnnAccuracy(m, data), calibLoss);
  dispose(images.flat());
}

// seed-major: a stopped run has every configuration of its first seeds
const data = models.includes('cnn') ? mnistData() : null;
for (const seed of args.seeds) {
  if (models.includes('llama')) await llama(seed);
  if (data) await cnn(seed, data);
}

// ---- tables ----
const fmt = (x: number, d: number) => (Number.isFinite(x) ? x.toFixed(d) : '');
function rows(model: Run['model'], settings: string): ConfigResult[] {
  const configs = [['float', 'float'], ...methods.flatMap((m) => allocations.map((a) => [a.name, m]))];
  return configs.map(([alloc, method]): ConfigResult => {
    const rs = args.seeds.map((s) => done.get(key(settings, alloc!, method!, s))).filter((r): r is Run => r !== undefined);
    const avg = (f: (r: Run) => number, d: number) => fmt(mean(rs.map(f)), d);
    return {
      config: alloc === 'float' ? 'float' : `${method} ${alloc}`, group: alloc === 'float' ? 'float32' : method!, seeds: rs.map((r) => r.seed), values: rs.map((r) => r.value),
      extra: alloc === 'float' ? {} : { 'bits/weight': avg((r) => r.codeBits, 3), 'with fp16 scales': avg((r) => r.bitsWithScales, 3), 'predicted calib ΔL (nats)': avg((r) => r.predictedDelta, 4), 'actual calib ΔL (nats)': avg((r) => r.calibDelta, 4), 'ptq s': avg((r) => r.ptqSeconds, 1) },
    };
  }).filter((r) => r.values.length > 0);
}
function paired(settings: string, digits: number, higher: boolean): string {
  const ps = methods.flatMap((m) => allocations.filter((a) => a.score).map((a) =>
    pairedDiffs(`${m}: ${a.name} − uniform`, args.seeds, (s) => done.get(key(settings, a.name, m, s))?.value, (s) => done.get(key(settings, 'uniform', m, s))?.value)));
  return pairedTable(ps.filter((p): p is Paired => p !== null), { digits, higher });
}
/** The first seed's layers: size, measured loss change per width, trace per weight, and the width each allocation gave. */
function bitMap(model: Run['model'], settings: string): string {
  const seed = args.seeds.find((s) => sensBySeed.has(`${model}/${s}`));
  if (seed === undefined) return '';
  const sens = sensBySeed.get(`${model}/${seed}`)!;
  const allocs = allocations.filter((a) => a.score);
  const bitsOf = (a: Allocation) => done.get(key(settings, a.name, methods[0]!, seed))?.bits ?? {};
  const head = ['layer', 'weights', ...allWidths.map((b) => `ΔL ${b}-bit`), 'tr(H)/n', ...allocs.map((a) => a.name)];
  const body = sens.map((s) => [s.name, String(s.params), ...allWidths.map((b) => s.lossDelta[b]!.toExponential(2)), (s.hessianTrace / s.params).toExponential(2), ...allocs.map((a) => String(bitsOf(a)[s.name] ?? ''))]);
  return `### Per-layer bit map, seed ${seed} (uniform: ${args.budget} bits everywhere)\n\nΔL: the calibration loss change (nats) with that layer alone quantized at that width, the others float.\n\n${[head, head.map(() => '---'), ...body].map((r) => `| ${r.join(' | ')} |`).join('\n')}\n`;
}

const out: string[] = [];
const qNote = (g: string) => `Weights only, symmetric int grid, one absmax scale per ${g} (the same quantizer in every arm; ptq fixes it from the float weight), activations float. bits/weight: code bits per quantized weight; "with fp16 scales" adds ${args.scaleBits} bits per scale (quant's bitsPerParameter, the same count in every arm). Allocations (allocateBits, average ≤ ${args.budget}): greedy = upgrades from the smallest width by estimated damage saved per bit while they fit; exact = the least total estimated damage within the budget; loss = the measured loss change with the layer alone quantized (RTN), hessian = Hutchinson tr(H)/n·‖W − Q(W)‖² (${args.samples} probes). The same allocation serves RTN and GPTQ. Predicted calib ΔL: the sum over layers of the single-layer loss changes at the allocated widths (what the 'loss' score adds up); actual: the calibration loss change of the whole quantized model, on the same calibration data.`;
for (const model of models as Run['model'][]) {
  const settings = model === 'llama' ? llamaSettings : cnnSettings;
  const digits = model === 'llama' ? 4 : 2;
  const p = paired(settings, digits, model === 'cnn');
  const map = bitMap(model, settings);
  const floats = args.seeds.map((s) => floatBySeed.get(`${model}/${s}`)).filter((v): v is number => v !== undefined);
  const notes = model === 'llama'
    ? `Float models: ${args.llamaDir}/fp/seed<s> (tiny byte Llama, ${args.llamaRun} steps × batch × bytes), one per seed${missingSeeds.length ? `; seed${missingSeeds.length > 1 ? 's' : ''} ${missingSeeds.join(', ')} had no finished float run and ${missingSeeds.length > 1 ? 'are' : 'is'} missing` : ''}. Quantized: the 28 Linears of the decoder layers (embedding and lm_head float). Calibration (sensitivity loss and GPTQ): ${args.calibSeqs} training windows drawn by the seed. Validation: ${args.valBlocks} fixed windows of the held-out 10 % (the llama grid's). ${qNote(args.group ? `${args.group} inputs` : 'output channel')}`
    : `Float models: experiments/ptq.ts's CNN (conv 3×3 ${args.channels} → pool → conv ${2 * args.channels} → pool → Linear ${2 * args.channels * 49}→10), ${args.cnnSteps} steps × ${args.cnnBatch}, one per seed (float ${floats.map((v) => v.toFixed(2)).join(', ')} %). Quantized: both convs and the Linear; ptq rounds convs to nearest under GPTQ too. Calibration: ${args.calibImages} training digits drawn by the seed. Test: 2,000 digits. ${qNote('output channel')}`;
  const md = await writeResults(join(args.runDir, model), {
    title: model === 'llama' ? `Mixed vs uniform ${args.budget}-bit PTQ of the tiny Llama: validation bits per byte (lower is better)` : `Mixed vs uniform ${args.budget}-bit PTQ of the MNIST CNN: test accuracy % (higher is better)`,
    metric: model === 'llama' ? 'val bits/byte' : 'test accuracy %', digits, rows: rows(model, settings), notes,
    meta: { settings, seeds: args.seeds, missingSeeds: model === 'llama' ? missingSeeds : [], paired: p, sensitivity: Object.fromEntries(args.seeds.filter((s) => sensBySeed.has(`${model}/${s}`)).map((s) => [s, sensBySeed.get(`${model}/${s}`)])) },
  });
  const tail = `\n### Paired per seed (${model === 'llama' ? 'bits/byte' : 'accuracy points'})\n\n${p}\n\n${map}`;
  appendFileSync(join(args.runDir, model, 'results.md'), tail);
  out.push(md + tail);
}
console.log(`\n${out.join('\n\n')}\n\nwrote ${args.runDir}/{runs.jsonl, ${models.map((m) => `${m}/results.{md,json,svg}`).join(', ')}} (${minutes()} min)`);
