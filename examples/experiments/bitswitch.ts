/**
 * @file Double Rounding bit-switching on the MNIST MLP (docs/experiments/bitswitch.md): one model
 * trained jointly over 8/6/4-bit weights, or any --widths (Double Rounding + ALRS), and read at each width by one
 * `setBitWidth` call, vs one model per width trained alone with the same quantizer, × seeds; also
 * the joint model without ALRS and an FP32 reference. runs.jsonl (resumable), results.{md,json,svg},
 * paired per-seed tables.
 * Run: npx tsx examples/experiments/bitswitch.ts [--seeds 0,1,2] [--epochs 3] [--widths 8,6,4,2] [--only joint-alrs,single]
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { crossEntropy, Generator, type Tensor } from '@qgrad/core';
import { AdamW, LambdaLR, Linear, ReLU, Sequential, cosineSchedule, encodeRecord, fit, readMetrics } from '@qgrad/nn';
import { jointLoss, prepareBitSwitch, setBitWidth } from '@qgrad/quant';
import { CliError, cli } from '../lib/args.js';
import { mean, pairedDiffs, pairedTable, pm, writeResults, type ConfigResult, type Paired } from '../lib/experiments.js';
import { checkBatchSize, evaluateClassifier, mnistBatch, mnistData } from '../lib/mnist.js';
import { NONFINITE_HINT, SEED_MAX, commonOptions, useBackend } from '../lib/train.js';

const CONFIGS = ['joint-alrs', 'joint-noalrs', 'single', 'fp32'] as const;
type ConfigName = (typeof CONFIGS)[number];

const args = cli('experiments/bitswitch', 'Double Rounding: one MNIST MLP trained jointly at 8/6/4-bit weights and switched, vs one model trained per width, × seeds → accuracy per width, paired verdicts, plot.', {
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'comma-separated seeds' },
  widths: { type: 'ints', default: [8, 6, 4], min: 2, max: 16, help: 'comma-separated weight widths; the largest is the stored one' },
  only: { type: 'string', default: '', help: `comma-separated configs to run (default all): ${CONFIGS.join(', ')}` },
  epochs: { type: 'int', default: 3, min: 1, help: 'epochs over the 8,000 training digits; every model gets the same number of steps' },
  steps: { type: 'int', default: 0, min: 0, help: 'training steps per model, overriding --epochs (0: from --epochs)' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  hidden: { type: 'int', default: 256, min: 1, help: 'hidden units of the MLP (784-h-10)' },
  lr: { type: 'number', default: 2e-3, exclusiveMin: 0, help: 'peak learning rate of the weights (AdamW, cosine)' },
  scaleLrMult: { type: 'number', default: 0.1, min: 0, help: "the weight scales' LR as a multiple of --lr (no weight decay on them)" },
  allowNonfinite: commonOptions.allowNonfinite,
  fresh: { type: 'boolean', help: 'ignore runs already in runs.jsonl (default: skip them, so an interrupted grid resumes)' },
  backend: commonOptions.backend,
  runDir: { type: 'string', default: 'runs/experiments/bitswitch', help: 'output directory' },
});
useBackend(args.backend);
const WIDTHS = [...new Set(args.widths)].sort((a, b) => b - a);

const only = args.only ? args.only.split(',').map((s) => s.trim()) : null;
const unknown = (only ?? []).filter((n) => !(CONFIGS as readonly string[]).includes(n));
if (unknown.length) throw new CliError(`unknown --only name(s) ${unknown.join(', ')}; configs: ${CONFIGS.join(', ')}`);
const configs = CONFIGS.filter((c) => !only || only.includes(c));

/** One trained model: accuracy (%) at each width it was evaluated at (fp32: key 32). */
interface Run { config: ConfigName; trainedAt: string; seed: number; steps: number; widths?: number[]; acc: Record<string, number>; msPerStep: number }

const data = mnistData({ flatten: true });
checkBatchSize(data, args.batchSize);
const steps = args.steps || Math.round((args.epochs * data.trainX.shape[0]!) / args.batchSize);

function build(seed: number): Sequential {
  const g = new Generator(seed);
  return new Sequential(new Linear(784, args.hidden, { generator: g }), new ReLU(), new Linear(args.hidden, 10, { generator: g }));
}

/**
 * Trains one model for `steps` steps; `widths` null is FP32, one width a model trained alone at
 * it, several the joint Double Rounding model (a step sums the loss over every width).
 */
async function train(seed: number, widths: number[] | null, alrs: boolean, name: string): Promise<{ net: Sequential; msPerStep: number }> {
  const net = build(seed);
  if (widths) prepareBitSwitch(net, { bits: widths, alrs });
  // scales in their own group: Adam moves a parameter by ~lr per step whatever its size, and an
  // 8-bit step (max|W|/127 ≈ 1e−3) is smaller than lr, so the scales take a fraction of it
  const scales = new Set([...net.namedParameters()].filter(([n]) => n.endsWith('.scale')).map(([, p]) => p));
  const others = net.parameters().filter((p) => !scales.has(p));
  const optimizer = new AdamW(scales.size ? [{ params: others }, { params: [...scales], lr: args.lr * args.scaleLrMult, weightDecay: 0 }] : others, { lr: args.lr, weightDecay: 1e-4 });
  const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(50, steps / 10), totalSteps: steps, minLrRatio: 0.05 }));
  const { msPerStep } = await fit({
    model: net, optimizer, scheduler, steps, seed, name, allowNonfinite: args.allowNonfinite, nonFiniteHint: NONFINITE_HINT,
    loss: ({ index }) => {
      const [x, y] = mnistBatch(data, args.batchSize, index, seed); // [B, 784], [B]
      const loss = () => crossEntropy(net.forward(x), y);
      return widths && widths.length > 1 ? jointLoss(net, widths, loss) : loss();
    },
  });
  net.eval();
  return { net, msPerStep };
}

const accuracy = (net: Sequential) => evaluateClassifier((x: Tensor) => net.forward(x), data.testX, data.testY).test_acc * 100;

mkdirSync(args.runDir, { recursive: true });
const log = join(args.runDir, 'runs.jsonl');
const key = (trainedAt: string, seed: number) => `${trainedAt}/${seed}`;
const done = new Map<string, Run>();
// only runs of this budget and these widths count: a re-run with other --epochs or --widths does not mix them in
if (!args.fresh && existsSync(log)) for (const r of readMetrics(log) as unknown as Run[]) if (r.steps === steps && String(r.widths ?? [8, 6, 4]) === String(WIDTHS)) done.set(key(r.trainedAt, r.seed), r);

/** Every model of a config: the joint ones are one model, 'single' one per width. */
const jobs = (c: ConfigName): { trainedAt: string; widths: number[] | null; alrs: boolean }[] =>
  c === 'joint-alrs' ? [{ trainedAt: c, widths: WIDTHS, alrs: true }]
    : c === 'joint-noalrs' ? [{ trainedAt: c, widths: WIDTHS, alrs: false }]
      : c === 'fp32' ? [{ trainedAt: c, widths: null, alrs: false }]
        : WIDTHS.map((b) => ({ trainedAt: `single-w${b}`, widths: [b], alrs: false }));

const t0 = performance.now();
// seed-major, so an interrupted run leaves complete seeds behind for the paired tables
for (const seed of args.seeds) {
  for (const c of configs) {
    for (const j of jobs(c)) {
      if (done.has(key(j.trainedAt, seed))) continue;
      const { net, msPerStep } = await train(seed, j.widths, j.alrs, key(j.trainedAt, seed));
      const acc: Record<string, number> = {};
      if (!j.widths) acc['32'] = accuracy(net);
      // the switch under test: one call, then the same network evaluated at that width
      else for (const b of j.widths) { setBitWidth(net, b); acc[String(b)] = accuracy(net); }
      const run: Run = { config: c, trainedAt: j.trainedAt, seed, steps, widths: WIDTHS, acc, msPerStep };
      done.set(key(j.trainedAt, seed), run);
      appendFileSync(log, encodeRecord({ step: 0, ...run }));
      console.log(`${key(j.trainedAt, seed)}: ${Object.entries(acc).map(([b, a]) => `W${b} ${a.toFixed(2)} %`).join(', ')}, ${msPerStep.toFixed(0)} ms/step, ${((performance.now() - t0) / 1000).toFixed(0)} s elapsed`);
    }
  }
}

/** Accuracy of `config` at width `bits` for `seed` (the single-width models: the one trained at `bits`). */
function accOf(config: ConfigName, bits: number, seed: number): number | undefined {
  const r = done.get(key(config === 'single' ? `single-w${bits}` : config, seed));
  return r?.acc[String(bits)];
}
const NOTES: Record<ConfigName, string> = {
  'joint-alrs': `one model, loss summed over ${WIDTHS.join('/')} bits each step, ALRS (scale gradient × 2^−(${WIDTHS[0]}−l)), switched by setBitWidth`,
  'joint-noalrs': 'the same without ALRS (ablation)',
  single: 'one model per width, each trained alone at it (same layer, one width)',
  fp32: 'full precision reference',
};
const rows: ConfigResult[] = [];
for (const c of configs) {
  for (const b of c === 'fp32' ? [32] : WIDTHS) {
    const vals = args.seeds.map((s) => [s, accOf(c, b, s)] as const).filter((t): t is readonly [number, number] => t[1] !== undefined);
    if (!vals.length) continue;
    const runs = args.seeds.map((s) => done.get(key(c === 'single' ? `single-w${b}` : c, s))).filter((r): r is Run => r !== undefined);
    rows.push({ config: c, group: c === 'fp32' ? 'fp32' : `W${b}`, seeds: vals.map((t) => t[0]), values: vals.map((t) => t[1]), extra: { 'ms/step': Math.round(mean(runs.map((r) => r.msPerStep))), what: NOTES[c] } });
  }
}
const notes = `MLP 784-${args.hidden}-10, weights of both layers quantized per output channel (inputs float), ${steps} steps × batch ${args.batchSize} ` +
  `(${((steps * args.batchSize) / data.trainX.shape[0]!).toFixed(1)} epochs of the 8,000 training digits) for **every** model, AdamW lr ${args.lr} (cosine), scales at ${args.scaleLrMult}× lr, seeds ${args.seeds.join(',')}. ` +
  `Equal steps per model: a joint step runs one forward and backward per width (${WIDTHS.length} per step), so the joint model costs about what the ${WIDTHS.length} single-width models cost together, and sees every width on every batch. Test accuracy over the 2,000 test digits.`;
const meta = { steps, epochs: args.epochs, batchSize: args.batchSize, hidden: args.hidden, lr: args.lr, scaleLrMult: args.scaleLrMult, widths: WIDTHS, seeds: args.seeds };
const md = await writeResults(args.runDir, { title: `MNIST MLP, Double Rounding bit-switching over ${WIDTHS.join('/')} bits: test accuracy (%) at each weight width`, metric: 'test acc %', rows, notes, meta });

const pairs: Paired[] = [];
const have = new Set(configs);
const pair = (a: ConfigName, b: ConfigName, bits: number) => pairedDiffs(`${a} − ${b} at W${bits}`, args.seeds, (s) => accOf(a, bits, s), (s) => accOf(b, bits, s));
for (const [a, b] of [['joint-alrs', 'single'], ['joint-noalrs', 'single'], ['joint-alrs', 'joint-noalrs']] as const) {
  if (!have.has(a) || !have.has(b)) continue;
  for (const bits of WIDTHS) {
    const p = pair(a, b, bits);
    if (p) pairs.push(p);
  }
}
const gaps = WIDTHS.map((b) => pair('joint-alrs', 'single', b)).filter((p): p is Paired => p !== null);
const worst = gaps.length ? Math.max(...gaps.flatMap((p) => p.diffs.map((d) => -d))) : NaN;
const summaryLine = gaps.length ? `joint-alrs − single per width: ${gaps.map((p) => `${p.label.split(' at ')[1]} ${pm(p.diffs)}`).join(', ')}; largest per-seed shortfall ${worst.toFixed(2)} points` : '';
console.log(`\n${md}\n### Paired per seed (accuracy points)\n\n${pairedTable(pairs, { digits: 2, higher: true })}\n\n${summaryLine}\nwrote ${args.runDir}/{runs.jsonl, results.{md,json,svg}} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
