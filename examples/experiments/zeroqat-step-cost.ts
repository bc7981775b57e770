/**
 * @file Where a ZeroQAT step's time goes on the MNIST MLP of examples/experiments/zeroqat.ts: one
 * forward (int weights, batch 64), one perturbation (z regenerated for every parameter and added),
 * a whole ZeroQAT step (two forwards, four perturbations) and a backprop AdamW step, in ms, as the
 * median of --repeats timings; docs/experiments/zeroqat.md reads the ZeroQAT-vs-backprop step
 * ratio from it.
 * Run: QGRAD_THREADS=1 npx tsx examples/experiments/zeroqat-step-cost.ts [--hidden 256] [--repeats 5]
 */
import { crossEntropy, Generator, noGrad, tidy } from '@qgrad/core';
import { AdamW, Linear, ReLU, Sequential, ZeroQAT } from '@qgrad/nn';
import { prepareQAT } from '@qgrad/quant';
import { cli } from '../lib/args.js';
import { classifierStep, mnistBatch, mnistData } from '../lib/mnist.js';
import { commonOptions, useBackend } from '../lib/train.js';

const args = cli('experiments/zeroqat-step-cost', 'Milliseconds of a forward, a perturbation, a ZeroQAT step and a backprop step on the int-weight MNIST MLP.', {
  hidden: { type: 'int', default: 256, min: 1, help: 'hidden units of the MLP (784-h-10)' },
  bits: { type: 'int', default: 4, min: 2, max: 8, help: 'int weight bits' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step' },
  repeats: { type: 'int', default: 5, min: 1, help: 'timings per figure (each of 20 calls); the median is printed' },
  backend: commonOptions.backend,
});
useBackend(args.backend);

const data = mnistData({ flatten: true });
function net(): Sequential {
  const g = new Generator(0);
  const n = new Sequential(new Linear(784, args.hidden, { generator: g }), new ReLU(), new Linear(args.hidden, 10, { generator: g }));
  prepareQAT(n, { default: { weight: { grid: 'int', bits: args.bits, granularity: 'channel', scale: { mode: 'dynamic', rule: 'absmax' } }, input: null } });
  return n;
}
const [x, y] = mnistBatch(data, args.batchSize, 0, 0);
const z = net();
const b = net();
const zOpt = new ZeroQAT(z.parameters(), { lr: 1e-4 });
const bOpt = new AdamW(b.parameters(), { lr: 1e-3, weightDecay: 0 });
/** Median over repeats of the mean ms of 20 calls (the load on a shared machine moves single calls a lot). */
function time(fn: (i: number) => void): number {
  const runs: number[] = [];
  for (let r = 0; r < args.repeats; r++) {
    const t = performance.now();
    for (let i = 0; i < 20; i++) fn(i);
    runs.push((performance.now() - t) / 20);
  }
  return runs.sort((p, q) => p - q)[Math.floor(runs.length / 2)]!;
}
const forward = time(() => tidy(() => noGrad(() => crossEntropy(z.forward(x), y).item())));
const perturb = time((i) => zOpt.perturb(i, 0));
const zStep = time(() => tidy(() => zOpt.step(() => crossEntropy(z.forward(x), y))));
const bStep = time(() => tidy(() => classifierStep(b, bOpt, x, y)));
console.log(`MLP 784-${args.hidden}-10, int${args.bits} weights, batch ${args.batchSize} (median of ${args.repeats} × 20 calls):`);
console.log(`forward ${forward.toFixed(1)} ms | perturbation (z for every parameter) ${perturb.toFixed(1)} ms | ZeroQAT step ${zStep.toFixed(1)} ms (2 forwards + 4 perturbations ≈ ${(2 * forward + 4 * perturb).toFixed(1)}) | backprop AdamW step ${bStep.toFixed(1)} ms | ZeroQAT/backprop ${(zStep / bStep).toFixed(1)}×`);
