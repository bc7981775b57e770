/**
 * @file ZeroQAT vs backprop QAT on the MNIST MLP at equal wall-clock time (docs/experiments/zeroqat.md):
 * per seed, an FP32 MLP is pretrained, its weights quantized to int4 (per channel, absmax, STE), and
 * two copies are fine-tuned for the same seconds of training time, one by ZeroQAT (two forwards per
 * step, no backward) and one by backprop with AdamW, their time slices interleaved so both see the
 * same load; test accuracy against training seconds, and the memory each needs (measured with core's
 * `memory()` and the optimizers' own reports). runs.jsonl (resumable), results.{md,json,svg}, curve.svg.
 * Run: QGRAD_THREADS=1 npx tsx examples/experiments/zeroqat.ts [--seeds 0,1,2] [--budget 150]
 */
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { crossEntropy, dispose, Generator, memory, noGrad, tidy, type Tensor } from '@qgrad/core';
import {
  AdamW, LambdaLR, Linear, ReLU, Sequential, ZeroQAT, cosineSchedule, encodeRecord, fit, optimizerStateBytes, readMetrics, renderSvg, tensorBytes, type Module,
} from '@qgrad/nn';
import { prepareQAT } from '@qgrad/quant';
import { CliError, cli } from '../lib/args.js';
import { mean, pairedDiffs, pairedTable, pm, std, writeResults, type ConfigResult } from '../lib/experiments.js';
import { checkBatchSize, classifierStep, evaluateClassifier, mnistBatch, mnistData } from '../lib/mnist.js';
import { SEED_MAX, commonOptions, useBackend } from '../lib/train.js';

const ARMS = ['zeroqat', 'backprop'] as const;
type Arm = (typeof ARMS)[number];

const args = cli('experiments/zeroqat', 'ZeroQAT vs backprop QAT (int4 weights) on the MNIST MLP at equal training seconds, interleaved, × seeds → accuracy over time, memory each needs, paired verdicts.', {
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'comma-separated seeds' },
  budget: { type: 'number', default: 150, exclusiveMin: 0, help: 'seconds of training time per arm and seed (evaluations excluded)' },
  evalEvery: { type: 'number', default: 15, exclusiveMin: 0, help: 'seconds of training time between test evaluations' },
  slice: { type: 'number', default: 1, exclusiveMin: 0, help: 'seconds an arm runs before the other takes over (interleaving)' },
  bits: { type: 'int', default: 4, min: 2, max: 8, help: 'int weight bits (per output channel, absmax scale recomputed each forward, STE)' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, both arms' },
  hidden: { type: 'int', default: 256, min: 1, help: 'hidden units of the MLP (784-h-10)' },
  pretrainSteps: { type: 'int', default: 125, min: 0, help: 'FP32 AdamW steps before quantizing (125 = one epoch; 0: QAT from scratch)' },
  bpLr: { type: 'number', default: 1e-3, exclusiveMin: 0, help: 'backprop arm: AdamW learning rate (constant)' },
  zoLr: { type: 'number', default: 1e-4, exclusiveMin: 0, help: 'ZeroQAT arm: learning rate (constant; 3e−4 diverged within 180 s, docs/experiments/zeroqat.md)' },
  zoEps: { type: 'number', default: 1e-3, exclusiveMin: 0, help: 'ZeroQAT arm: perturbation size ε' },
  arms: { type: 'string', default: 'zeroqat,backprop', help: 'comma-separated arms to run (one alone: for tuning its learning rate)' },
  fresh: { type: 'boolean', help: 'ignore runs already in runs.jsonl (default: skip them, so an interrupted grid resumes)' },
  backend: commonOptions.backend,
  runDir: { type: 'string', default: 'runs/experiments/zeroqat', help: 'output directory' },
});
useBackend(args.backend);
const armNames = args.arms.split(',').map((s) => s.trim());
const badArm = armNames.filter((a) => !(ARMS as readonly string[]).includes(a));
if (badArm.length || !armNames.length) throw new CliError(`--arms must be a comma-separated subset of ${ARMS.join(', ')}, got '${args.arms}'`);
if (args.evalEvery < args.slice) throw new CliError(`--eval-every (${args.evalEvery}) must be at least --slice (${args.slice})`);

// the memory measurement needs unreferenced buffers finalized now, not whenever V8 decides
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
async function settledBytes(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(5); // FinalizationRegistry callbacks run in a later task
  }
  return memory().bytes;
}

const data = mnistData({ flatten: true });
checkBatchSize(data, args.batchSize);

function build(seed: number): Sequential {
  const g = new Generator(seed);
  return new Sequential(new Linear(784, args.hidden, { generator: g }), new ReLU(), new Linear(args.hidden, 10, { generator: g }));
}

/** The FP32 starting point of both arms: `pretrainSteps` AdamW steps (mnist.ts's FP32 recipe). */
async function pretrained(seed: number): Promise<Record<string, Tensor>> {
  const net = build(seed);
  if (args.pretrainSteps) {
    const steps = args.pretrainSteps;
    const optimizer = new AdamW(net.parameters(), { lr: 2e-3, weightDecay: 1e-4 });
    const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(50, steps / 10), totalSteps: steps, minLrRatio: 0.05 }));
    await fit({ model: net, optimizer, scheduler, steps, seed, name: `pretrain/${seed}`, loss: ({ index }) => {
      const [x, y] = mnistBatch(data, args.batchSize, index, seed); // [B, 784], [B]
      return crossEntropy(net.forward(x), y);
    } });
  }
  return net.stateDict();
}

/** A copy of the pretrained MLP with int weights (dynamic absmax per channel: no scale parameter, so both arms train the same tensors). */
function quantized(seed: number, state: Record<string, Tensor>): Sequential {
  const net = build(seed);
  net.loadStateDict(state);
  prepareQAT(net, { default: { weight: { grid: 'int', bits: args.bits, granularity: 'channel', scale: { mode: 'dynamic', rule: 'absmax' } }, input: null } });
  return net;
}

const accuracy = (net: Module & { forward(x: Tensor): Tensor }) => {
  net.eval();
  const a = evaluateClassifier((x) => net.forward(x), data.testX, data.testY).test_acc * 100;
  net.train();
  return a;
};

/** What an arm keeps besides its parameters, in bytes. */
interface Memory { parameters: number; gradients: number; optimizerState: number; activations: number; total: number }

/**
 * Backprop: bytes alive after the forward with the graph held (what backward reads: saved inputs,
 * quantized weights, masks), after a full collection, over those before it; then one step's
 * gradients and AdamW's moments.
 */
async function backpropMemory(net: Sequential, opt: AdamW, seed: number): Promise<Memory> {
  const [x, y] = mnistBatch(data, args.batchSize, 0, seed);
  const before = await settledBytes();
  let loss: Tensor | null = crossEntropy(net.forward(x), y);
  const activations = (await settledBytes()) - before;
  opt.zeroGrad();
  loss.backward();
  loss = null;
  const gradients = tensorBytes(net.parameters().flatMap((p) => (p.grad ? [p.grad] : [])));
  opt.step();
  opt.zeroGrad();
  const parameters = tensorBytes(net.parameters());
  const optimizerState = optimizerStateBytes(opt);
  return { parameters, gradients, optimizerState, activations, total: parameters + gradients + optimizerState + activations };
}

/**
 * ZeroQAT: a forward that saves nothing needs at most one layer's input and everything that layer
 * allocates (its quantized weight, temporaries, output), measured layer by layer over the bytes
 * alive before the forward, the largest over the layers: an upper bound, as temporaries that die
 * inside the layer are counted as if alive together. The optimizer's report gives its z.
 */
async function zeroqatMemory(net: Sequential, opt: ZeroQAT, seed: number): Promise<Memory> {
  const [x] = mnistBatch(data, args.batchSize, 0, seed);
  const before = await settledBytes();
  let peak = 0;
  let h: Tensor = x;
  for (const layer of net.children()) {
    const out: Tensor = noGrad(() => tidy(() => {
      const o = (layer as Module & { forward(t: Tensor): Tensor }).forward(h);
      // nothing made inside this layer is released yet: every temporary it allocated counts
      peak = Math.max(peak, memory().bytes - before);
      return o;
    }));
    if (h !== x) dispose(h);
    h = out;
    await settledBytes();
  }
  dispose(h);
  const m = opt.memory();
  return { parameters: m.parameterBytes, gradients: 0, optimizerState: m.zeroQatExtraBytes, activations: peak, total: m.parameterBytes + m.zeroQatExtraBytes + peak };
}

/** One arm's state while the seed runs. */
interface ArmState { arm: Arm; net: Sequential; step: () => void; steps: number; seconds: number; curve: { t: number; steps: number; acc: number }[] }

interface Run { arm: Arm; seed: number; budget: number; steps: number; acc: number; ptqAcc: number; fpAcc: number; curve: { t: number; steps: number; acc: number }[]; memory: Memory; msPerStep: number }

mkdirSync(args.runDir, { recursive: true });
const log = join(args.runDir, 'runs.jsonl');
const key = (arm: string, seed: number) => `${arm}/${seed}`;
const done = new Map<string, Run>();
// only runs of this budget and these settings count
const sameSettings = (r: Run & { bits?: number; zoLr?: number; zoEps?: number; bpLr?: number }) => r.budget === args.budget && r.bits === args.bits && r.zoLr === args.zoLr && r.zoEps === args.zoEps && r.bpLr === args.bpLr;
if (!args.fresh && existsSync(log)) for (const r of readMetrics(log) as unknown as Run[]) if (sameSettings(r)) done.set(key(r.arm, r.seed), r);

const t0 = performance.now();
for (const seed of args.seeds) {
  if (armNames.every((a) => done.has(key(a, seed)))) continue;
  const state = await pretrained(seed);
  const fpNet = build(seed);
  fpNet.loadStateDict(state);
  const fpAcc = accuracy(fpNet);

  const zNet = quantized(seed, state);
  const bNet = quantized(seed, state);
  const ptqAcc = accuracy(zNet);
  const zOpt = new ZeroQAT(zNet.parameters(), { lr: args.zoLr, eps: args.zoEps, seed });
  const bOpt = new AdamW(bNet.parameters(), { lr: args.bpLr, weightDecay: 0 });
  // measured before training, on copies, so the timed loops start from identical models and optimizer states
  const zCopy = quantized(seed, state);
  const bCopy = quantized(seed, state);
  const memZ = await zeroqatMemory(zCopy, new ZeroQAT(zCopy.parameters()), seed);
  const memB = await backpropMemory(bCopy, new AdamW(bCopy.parameters(), { lr: 0 }), seed);

  // both arms read the same batch sequence, each at its own pace
  const zArm: ArmState = { arm: 'zeroqat', net: zNet, steps: 0, seconds: 0, curve: [], step: () => tidy(() => {
    const [x, y] = mnistBatch(data, args.batchSize, zArm.steps, seed); // [B, 784], [B]
    zOpt.step(() => crossEntropy(zNet.forward(x), y));
  }) };
  const bArm: ArmState = { arm: 'backprop', net: bNet, steps: 0, seconds: 0, curve: [], step: () => tidy(() => {
    const [x, y] = mnistBatch(data, args.batchSize, bArm.steps, seed);
    classifierStep(bNet, bOpt, x, y);
  }) };
  const arms = [zArm, bArm].filter((a) => armNames.includes(a.arm));
  for (const a of arms) a.curve.push({ t: 0, steps: 0, acc: ptqAcc });
  let round = 0;
  let nextEval = args.evalEvery;
  while (arms.some((a) => a.seconds < args.budget)) {
    // alternate which arm goes first, so neither always follows the other into a busier moment
    for (const a of round % 2 ? [...arms].reverse() : arms) {
      const end = Math.min(args.budget, a.seconds + args.slice);
      const start = performance.now();
      while (a.seconds + (performance.now() - start) / 1000 < end) {
        a.step();
        a.steps++;
      }
      a.seconds += (performance.now() - start) / 1000;
    }
    round++;
    if (arms.every((a) => a.seconds >= Math.min(nextEval, args.budget) - 1e-9)) {
      for (const a of arms) a.curve.push({ t: a.seconds, steps: a.steps, acc: accuracy(a.net) });
      console.log(`seed ${seed}, ${Math.min(nextEval, args.budget).toFixed(0)} s: ${arms.map((a) => `${a.arm} ${a.curve.at(-1)!.acc.toFixed(2)} % (${a.steps} steps)`).join(', ')}`);
      nextEval += args.evalEvery;
    }
  }
  for (const a of arms) {
    if (a.curve.at(-1)!.steps !== a.steps) a.curve.push({ t: a.seconds, steps: a.steps, acc: accuracy(a.net) });
    const run: Run = { arm: a.arm, seed, budget: args.budget, steps: a.steps, acc: a.curve.at(-1)!.acc, ptqAcc, fpAcc, curve: a.curve, memory: a.arm === 'zeroqat' ? memZ : memB, msPerStep: (a.seconds * 1000) / a.steps };
    done.set(key(a.arm, seed), run);
    appendFileSync(log, encodeRecord({ step: 0, ...run, bits: args.bits, zoLr: args.zoLr, zoEps: args.zoEps, bpLr: args.bpLr }));
    console.log(`${key(a.arm, seed)}: ${run.acc.toFixed(2)} % after ${a.seconds.toFixed(1)} s (${a.steps} steps, ${run.msPerStep.toFixed(1)} ms/step; PTQ start ${ptqAcc.toFixed(2)} %, FP32 ${fpAcc.toFixed(2)} %), ${((performance.now() - t0) / 1000).toFixed(0)} s elapsed`);
  }
}

const runsOf = (arm: Arm) => args.seeds.map((s) => done.get(key(arm, s))).filter((r): r is Run => r !== undefined);
const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;
const rows: ConfigResult[] = ARMS.map((arm) => {
  const rs = runsOf(arm);
  const m = rs[0]?.memory;
  return {
    config: arm, seeds: rs.map((r) => r.seed), values: rs.map((r) => r.acc),
    extra: {
      'start (PTQ) acc': mean(rs.map((r) => r.ptqAcc)), steps: Math.round(mean(rs.map((r) => r.steps))), 'ms/step': mean(rs.map((r) => r.msPerStep)).toFixed(1),
      ...(m && { 'optimizer extra': kib(m.optimizerState), gradients: kib(m.gradients), activations: kib(m.activations), 'total incl. params': kib(m.total) }),
    },
  };
});
const steps0 = runsOf('zeroqat')[0];
const notes = `MLP 784-${args.hidden}-10 pretrained in FP32 for ${args.pretrainSteps} AdamW steps (FP32 test acc ${steps0 ? pm(runsOf('zeroqat').map((r) => r.fpAcc)) : '?'} %), then int${args.bits} weights per output channel (absmax scale recomputed each forward, STE; inputs float) ` +
  `and ${args.budget} s of training per arm and seed, batch ${args.batchSize}, time slices of ${args.slice} s alternating between the arms; evaluations are outside the clock. ` +
  `ZeroQAT: lr ${args.zoLr}, ε ${args.zoEps} (two forwards per step). Backprop: AdamW lr ${args.bpLr}, no weight decay. Seeds ${args.seeds.join(',')}. ` +
  'Memory (per arm, batch ' + args.batchSize + '): parameters + gradients + optimizer state + activations; activations measured with core memory() (buffers of 4096+ elements only).';
const meta = { budget: args.budget, evalEvery: args.evalEvery, slice: args.slice, bits: args.bits, batchSize: args.batchSize, hidden: args.hidden, pretrainSteps: args.pretrainSteps, zoLr: args.zoLr, zoEps: args.zoEps, bpLr: args.bpLr, seeds: args.seeds, runs: ARMS.flatMap(runsOf) };
const md = await writeResults(args.runDir, { title: `MNIST MLP, int${args.bits} weights: test accuracy (%) after ${args.budget} s of ZeroQAT vs backprop QAT`, metric: 'test acc %', rows, notes, meta });

/** Mean ± std over seeds of each arm's accuracy at each evaluation (evaluation i of every seed is at about the same training second). */
const curvePoints = ARMS.flatMap((arm) => {
  const rs = runsOf(arm);
  const n = Math.min(...rs.map((r) => r.curve.length));
  return Array.from({ length: Number.isFinite(n) ? n : 0 }, (_, i) => {
    const accs = rs.map((r) => r.curve[i]!.acc);
    return { arm, t: mean(rs.map((r) => r.curve[i]!.t)), m: mean(accs), lo: mean(accs) - std(accs), hi: mean(accs) + std(accs) };
  });
});
writeFileSync(join(args.runDir, 'curve.svg'), await renderSvg({
  $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
  title: { text: `MNIST MLP int${args.bits} weights: test accuracy vs training seconds (mean ± std over ${args.seeds.length} seeds)`, limit: 0 },
  data: { values: curvePoints },
  width: 460,
  height: 260,
  encoding: { x: { field: 't', type: 'quantitative', title: 'training seconds (interleaved, evaluations excluded)' }, color: { field: 'arm', type: 'nominal', title: null, legend: { orient: 'bottom' } } },
  layer: [
    { mark: { type: 'area', opacity: 0.2 }, encoding: { y: { field: 'lo', type: 'quantitative', title: 'test accuracy %', scale: { zero: false } }, y2: { field: 'hi' } } },
    { mark: { type: 'line', point: true }, encoding: { y: { field: 'm', type: 'quantitative' } } },
  ],
}));

const pair = (f: (r: Run) => number) => pairedDiffs('zeroqat − backprop', args.seeds, (s) => { const r = done.get(key('zeroqat', s)); return r && f(r); }, (s) => { const r = done.get(key('backprop', s)); return r && f(r); });
const gainPair = pairedDiffs('zeroqat gain − backprop gain (over the PTQ start)', args.seeds, (s) => { const r = done.get(key('zeroqat', s)); return r && r.acc - r.ptqAcc; }, (s) => { const r = done.get(key('backprop', s)); return r && r.acc - r.ptqAcc; });
const pairs = [pair((r) => r.acc), gainPair].filter((p) => p !== null);
const mz = runsOf('zeroqat')[0]?.memory;
const mb = runsOf('backprop')[0]?.memory;
const memLine = mz && mb ? `memory beside the ${kib(mz.parameters)} of parameters: ZeroQAT ${kib(mz.total - mz.parameters)}, backprop ${kib(mb.total - mb.parameters)} (${((mb.total - mb.parameters) / (mz.total - mz.parameters)).toFixed(1)}×); totals ${kib(mz.total)} vs ${kib(mb.total)}` : '';
console.log(`\n${md}\n### Paired per seed (accuracy points)\n\n${pairedTable(pairs, { digits: 2, higher: true })}\n\n${memLine}\nwrote ${args.runDir}/{runs.jsonl, results.{md,json,svg}, curve.svg} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
