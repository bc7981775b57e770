/**
 * @file QAT with and without knowledge distillation from the float model it starts from (issue 20):
 * the MNIST CNN at W2A2 and the tiny Llama at W2, 3 seeds each. Per seed: the float model (trained
 * here unless cached), then fine-tunes from its weights on the same batches — QAT on the task loss
 * alone, and QAT on (1 − α)·CE + α·τ²·KL(teacher ‖ student) with the frozen float model as the
 * teacher (quant's `distill`); the float model trained on for as long is the reference. Writes
 * results.{md,json,svg} with paired per-seed verdicts; finished runs are kept in runs.jsonl, so
 * re-running resumes.
 * Run: QGRAD_THREADS=1 npx tsx examples/experiments/distill.ts [--models cnn,llama --seeds 0,1,2 --pretrain-dir runs/experiments/halo]
 */
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crossEntropy, dispose } from '@qgrad/core';
import { AdamW, LambdaLR, cosineSchedule, encodeRecord, fit, readMetrics, trainStep, type Sequential } from '@qgrad/nn';
import { distill, prepareQAT, type QATConfig } from '@qgrad/quant';
import { CliError, cli } from '../lib/args.js';
import { mean, pairedDiffs, pairedTable, writeResults, type ConfigResult, type Paired } from '../lib/experiments.js';
import { mnistBatch, mnistData, type MnistData } from '../lib/mnist.js';
import { cnnAccuracy, trainedCnn } from '../lib/ptq-models.js';
import { runQatLlama, type QatLlamaResult } from '../lib/qat-llama.js';
import { NONFINITE_HINT, SEED_MAX, useBackend } from '../lib/train.js';

const args = cli('experiments/distill', 'QAT with vs without distillation from the float model: MNIST CNN W2A2 (test accuracy) and tiny Llama W2 (val bits/byte), paired per seed.', {
  models: { type: 'string', default: 'cnn,llama', help: 'comma-separated: cnn, llama' },
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'seeds: each its own float model and its fine-tunes' },
  temperature: { type: 'number', default: 2, exclusiveMin: 0, help: 'KD softmax temperature τ (both models)' },
  alpha: { type: 'number', default: 0.5, min: 0, max: 1, help: 'KD weight α in (1 − α)·CE + α·τ²·KL (both models)' },
  cnnSteps: { type: 'int', default: 500, min: 1, help: 'float CNN training steps (cached per seed in <run-dir>/cnn-seed<s>)' },
  cnnQatSteps: { type: 'int', default: 250, min: 1, help: 'CNN W2A2 fine-tuning steps' },
  cnnBatch: { type: 'int', default: 64, min: 1, help: 'CNN images per step' },
  channels: { type: 'int', default: 8, min: 1, help: 'CNN channels of the first conv (the second has twice as many)' },
  cnnLr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'float CNN peak LR (AdamW, cosine)' },
  cnnQatLr: { type: 'number', default: 1e-3, exclusiveMin: 0, help: 'CNN fine-tuning peak LR (AdamW, cosine)' },
  steps: { type: 'int', default: 200, min: 1, help: 'Llama W2 fine-tuning steps' },
  lr: { type: 'number', default: 1e-3, exclusiveMin: 0, help: 'Llama fine-tuning peak LR (cosine, floor 0.1×)' },
  pretrainSteps: { type: 'int', default: 200, min: 1, help: 'steps of the float Llama each seed starts from' },
  pretrainLr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: "peak LR of the float Llama (the llama grid's runs use 3e-3; its log does not record it)" },
  batchSize: { type: 'int', default: 8, min: 1, help: 'Llama sequences per step (pretraining and fine-tuning)' },
  seqLen: { type: 'int', default: 64, min: 2, help: 'Llama bytes per sequence' },
  valBlocks: { type: 'int', default: 64, min: 1, help: 'Llama validation sequences' },
  dim: { type: 'int', default: 128, min: 8, help: 'Llama width (tinyLlamaConfig: 128; W2 groups of 32 need a multiple of 32)' },
  layers: { type: 'int', default: 4, min: 1, help: 'Llama decoder layers' },
  heads: { type: 'int', default: 4, min: 1, help: 'Llama attention heads' },
  kvHeads: { type: 'int', default: 2, min: 1, help: 'Llama key/value heads' },
  pretrainDir: { type: 'string', default: 'runs/experiments/distill/llama-float', help: "where the float Llamas are (<dir>/fp/seed<s>/checkpoint.safetensors and <dir>/runs.jsonl, the llama grid's layout, e.g. runs/experiments/halo); trained there when absent" },
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/experiments/distill', help: 'output directory' },
});
useBackend(args.backend);

const models = args.models.split(',').map((s) => s.trim());
const badModel = models.filter((m) => m !== 'cnn' && m !== 'llama');
if (badModel.length) throw new CliError(`--models takes cnn and/or llama, got ${badModel.join(', ')}`);
mkdirSync(args.runDir, { recursive: true });
const log = join(args.runDir, 'runs.jsonl');
const kdTag = `t${args.temperature}a${args.alpha}`;

/** One finished run as runs.jsonl holds it; `value` is test accuracy in % (cnn) or val bits/byte (llama). */
interface Run { key: string; model: 'cnn' | 'llama'; config: string; seed: number; value: number; msPerStep: number; cpuMsPerStep?: number }
const done = new Map<string, Run>();
if (existsSync(log)) for (const r of readMetrics(log) as unknown as Run[]) done.set(r.key, r);
const record = (r: Run) => {
  done.set(r.key, r);
  appendFileSync(log, encodeRecord({ step: 0, ...r }));
  console.log(`${r.key}: ${r.value.toFixed(4)} (${r.msPerStep.toFixed(0)} ms/step), ${((performance.now() - t0) / 60000).toFixed(1)} min elapsed`);
};
const t0 = performance.now();

// ---------------------------------------------------------------- MNIST CNN, W2A2

const CNN_RUNS = [
  { name: 'float-continued', kd: false, quant: false, about: 'the float CNN trained on for the same steps and LR (the reference)' },
  { name: 'w2a2', kd: false, quant: true, about: 'W2A2 LSQ (int2 per-channel weights, 2-bit LSQ inputs), cross entropy only' },
  { name: 'w2a2-kd', kd: true, quant: true, about: 'W2A2 LSQ, (1 − α)·CE + α·τ²·KL from the float CNN' },
] as const;
/** experiments/mnist.ts's W2A2 rules: every layer; the first layer's input (normalised pixels) signed, the later ones (after ReLU) unsigned. */
const W2A2: QATConfig = {
  rules: [{ match: '0', weight: { grid: 'int', bits: 2, granularity: 'channel' }, input: { bits: 2, signed: true } }],
  default: { weight: { grid: 'int', bits: 2, granularity: 'channel' }, input: { bits: 2, signed: false } },
};
const cnnKey = (name: string, seed: number) => `cnn/${name}/${seed}/${args.cnnQatSteps}x${args.cnnBatch}/lr${args.cnnQatLr}/${name.endsWith('kd') ? kdTag : 'ce'}/from-${args.cnnSteps}`;

/** One CNN fine-tune from the float weights (a fresh AdamW, cosine; scales in their own group without weight decay). */
async function cnnFinetune(data: MnistData, fresh: () => Sequential, run: (typeof CNN_RUNS)[number], seed: number): Promise<Run> {
  const net = fresh();
  const teacher = run.kd ? fresh() : null;
  if (run.quant) prepareQAT(net, W2A2); // scales initialise from the float weights
  const kd = teacher ? distill(net, teacher, { temperature: args.temperature, alpha: args.alpha }) : null;
  const scales = new Set([...net.namedParameters()].filter(([n]) => /Quantizer\.(scale|zeroPoint)$/.test(n)).map(([, p]) => p));
  const others = net.parameters().filter((p) => !scales.has(p));
  const optimizer = new AdamW(scales.size ? [{ params: others }, { params: [...scales], weightDecay: 0 }] : others, { lr: args.cnnQatLr, weightDecay: 1e-4 });
  const steps = args.cnnQatSteps;
  const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(20, Math.floor(steps / 10)), totalSteps: steps, minLrRatio: 0.05 }));
  let cpuMs = 0;
  const { msPerStep } = await fit({
    name: `cnn ${run.name} seed ${seed}`, model: net, optimizer, scheduler, steps, seed, nonFiniteHint: NONFINITE_HINT,
    step: ({ index }) => {
      const cpu = process.cpuUsage();
      // the batch stream of the float CNN's seed, continued where its training stopped
      const [x, y] = mnistBatch(data, args.cnnBatch, index + args.cnnSteps, seed); // [B, 1, 28, 28], [B]
      const loss = trainStep(net, optimizer, () => {
        const l = kd ? kd.compute(x, y, crossEntropy).loss : crossEntropy(net.forward(x), y);
        optimizer.zeroGrad();
        l.backward();
        optimizer.step();
        return l.item();
      });
      scheduler.step();
      const used = process.cpuUsage(cpu);
      cpuMs += (used.user + used.system) / 1000;
      return { loss };
    },
  });
  kd?.remove();
  const acc = cnnAccuracy(net, data);
  if (teacher) dispose([...teacher.parameters(), ...teacher.buffers()]);
  dispose([...net.parameters(), ...net.buffers()]);
  return { key: cnnKey(run.name, seed), model: 'cnn', config: run.name, seed, value: acc, msPerStep, cpuMsPerStep: cpuMs / steps };
}

const floatCnn = new Map<number, number>();
if (models.includes('cnn')) {
  const data = mnistData();
  for (const seed of args.seeds) {
    const { floatAcc, fresh } = await trainedCnn(data, { dir: join(args.runDir, `cnn-seed${seed}`), seed, steps: args.cnnSteps, batchSize: args.cnnBatch, channels: args.channels, lr: args.cnnLr });
    floatCnn.set(seed, floatAcc);
    for (const run of CNN_RUNS) if (!done.has(cnnKey(run.name, seed))) record(await cnnFinetune(data, fresh, run, seed));
  }
}

// ---------------------------------------------------------------- tiny Llama, W2

const LLAMA_RUNS = [
  { name: 'float-continued', config: 'fp', kd: false, about: 'the float model trained on for the same steps and LR (the reference)' },
  { name: 'w2', config: 'w2-lsq', kd: false, about: 'W2 g32 LSQ on every decoder Linear (A float), cross entropy only' },
  { name: 'w2-kd', config: 'w2-lsq', kd: true, about: 'W2 g32 LSQ, (1 − α)·CE + α·τ²·KL on the logits from the float model' },
] as const;
const llamaScale = { batchSize: args.batchSize, seqLen: args.seqLen, valBlocks: args.valBlocks, dim: args.dim, layers: args.layers, heads: args.heads, kvHeads: args.kvHeads };
// a non-default model size is part of every Llama key (the default's keys stay those of the llama grid)
const size = args.dim === 128 && args.layers === 4 && args.heads === 4 && args.kvHeads === 2 ? '' : `/d${args.dim}l${args.layers}h${args.heads}k${args.kvHeads}`;
const pre = `${args.pretrainSteps}x${args.batchSize}x${args.seqLen}${size}`;
const llamaKey = (name: string, seed: number) => `llama/${name}/${seed}/${args.steps}/lr${args.lr}/${name.endsWith('kd') ? kdTag : 'ce'}/from-${pre}/lr${args.pretrainLr}`;

/** The float Llama of `seed` and its val bits/byte: the llama grid's `fp` run at the pretraining budget, trained (or resumed) here when the grid has none. */
async function floatLlama(seed: number): Promise<{ path: string; valBpb: number }> {
  const dir = join(args.pretrainDir, 'fp', `seed${seed}`);
  const path = join(dir, 'checkpoint.safetensors');
  const gridLog = join(args.pretrainDir, 'runs.jsonl');
  const gridKey = `fp/${seed}/${pre}`;
  const known = existsSync(gridLog) ? (readMetrics(gridLog) as unknown as (QatLlamaResult & { key: string })[]).find((r) => r.key === gridKey) : undefined;
  if (known && existsSync(path)) return { path, valBpb: known.valBpb };
  console.log(`float Llama, seed ${seed}: ${existsSync(path) ? 'resuming' : 'training'} ${gridKey} in ${dir}`);
  const r = await runQatLlama({ ...llamaScale, config: 'fp', seed, steps: args.pretrainSteps, lr: args.pretrainLr, dir, resume: existsSync(path) });
  mkdirSync(args.pretrainDir, { recursive: true });
  appendFileSync(gridLog, encodeRecord({ step: 0, key: gridKey, ...r }));
  return { path, valBpb: r.valBpb };
}

const floatLlamas = new Map<number, number>();
if (models.includes('llama')) {
  // the QAT pair of every seed before the float references, so a short budget still gets the comparison
  const order = [...args.seeds.flatMap((seed) => LLAMA_RUNS.filter((r) => r.config !== 'fp').map((run) => ({ run, seed }))), ...args.seeds.flatMap((seed) => LLAMA_RUNS.filter((r) => r.config === 'fp').map((run) => ({ run, seed })))];
  for (const { run, seed } of order) {
    const f = await floatLlama(seed);
    floatLlamas.set(seed, f.valBpb);
    const key = llamaKey(run.name, seed);
    if (done.has(key)) continue;
    const r = await runQatLlama({
      ...llamaScale, config: run.config, seed, steps: args.steps, lr: args.lr, init: f.path, dir: join(args.runDir, 'llama', run.name, `seed${seed}`),
      ...(run.kd && { distill: { temperature: args.temperature, alpha: args.alpha } }), log: (s) => console.log(`${run.name} seed ${seed}: ${s}`),
    });
    record({ key, model: 'llama', config: run.name, seed, value: r.valBpb, msPerStep: r.msPerStep, cpuMsPerStep: r.cpuMsPerStep });
  }
}

// ---------------------------------------------------------------- tables

// another process (e.g. --models cnn beside --models llama) may have logged runs meanwhile: tabulate every model with any
if (existsSync(log)) for (const r of readMetrics(log) as unknown as Run[]) done.set(r.key, r);
const shown = (m: 'cnn' | 'llama') => models.includes(m) || [...done.values()].some((r) => r.model === m);
let md = '';
const sections: { model: 'cnn' | 'llama'; metric: string; higher: boolean; runs: readonly { name: string; about: string }[]; key: (n: string, s: number) => string; floats: Map<number, number>; start: string }[] = [
  { model: 'cnn', metric: 'test acc %', higher: true, runs: CNN_RUNS, key: cnnKey, floats: floatCnn, start: `the float CNN (${args.cnnSteps} steps × ${args.cnnBatch}, lr ${args.cnnLr}), before fine-tuning` },
  { model: 'llama', metric: 'val bits/byte', higher: false, runs: LLAMA_RUNS, key: llamaKey, floats: floatLlamas, start: `the float Llama (${pre}, lr ${args.pretrainLr}), before fine-tuning` },
];
const allRows: ConfigResult[] = [];
for (const s of sections.filter((x) => shown(x.model))) {
  const fl = args.seeds.filter((seed) => s.floats.has(seed));
  const rows: ConfigResult[] = [
    ...(fl.length ? [{ config: 'float (start)', group: s.model, seeds: fl, values: fl.map((seed) => s.floats.get(seed)!), extra: { 'ms/step': '', 'CPU ms/step': '', what: s.start } }] : []),
    ...s.runs.map((run) => {
      const rs = args.seeds.map((seed) => done.get(s.key(run.name, seed))).filter((r): r is Run => !!r);
      return { config: run.name, group: s.model, seeds: rs.map((r) => r.seed), values: rs.map((r) => r.value), extra: { 'ms/step': Math.round(mean(rs.map((r) => r.msPerStep))), ...(rs.every((r) => r.cpuMsPerStep !== undefined) && { 'CPU ms/step': Math.round(mean(rs.map((r) => r.cpuMsPerStep!))) }), what: run.about } };
    }).filter((r) => r.values.length), // a run not reached yet (another process, a short budget) is left out, not shown as NaN
  ];
  allRows.push(...rows);
  const val = (name: string) => (seed: number) => done.get(s.key(name, seed))?.value;
  const q = s.model === 'cnn' ? 'w2a2' : 'w2';
  const pairs = [pairedDiffs(`${q}-kd − ${q}`, args.seeds, val(`${q}-kd`), val(q)), pairedDiffs(`${q}-kd − float-continued`, args.seeds, val(`${q}-kd`), val('float-continued')), pairedDiffs(`${q} − float-continued`, args.seeds, val(q), val('float-continued'))].filter((p): p is Paired => p !== null);
  const title = s.model === 'cnn' ? 'MNIST CNN, W2A2: test accuracy (%, higher is better)' : 'Tiny Llama, W2: validation bits per byte (lower is better)';
  const digits = s.model === 'cnn' ? 2 : 4;
  md += `${await writeResults(join(args.runDir, s.model), { title, metric: s.metric, rows, digits, meta: { seeds: args.seeds, temperature: args.temperature, alpha: args.alpha } })}\n`;
  md += `### Paired per seed (same seed ⇒ same float start and batches)\n\n${pairedTable(pairs, { digits, higher: s.higher })}\n\n`;
}
writeFileSync(join(args.runDir, 'results.md'), md);
writeFileSync(join(args.runDir, 'results.json'), `${JSON.stringify({ args, rows: allRows.map((r) => ({ ...r, mean: mean(r.values) })) }, null, 1)}\n`);
console.log(`\n${md}wrote ${args.runDir}/{runs.jsonl, results.md, results.json, cnn/results.*, llama/results.*} (${((performance.now() - t0) / 60000).toFixed(1)} min)`);
