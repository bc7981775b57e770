/**
 * @file Single-kernel timings behind the thread-pool and kernel choices in packages/kernels/src/wasm
 * (the figures quoted in their comments): each pair of contenders alternates call by call in one
 * process, and each line is the median of the per-call times. Not part of `npm run bench`.
 * Run: npx tsx scripts/bench/kernels.ts [--reps 200]
 */
import { parseArgs } from 'node:util';
import { contiguousStrides, createWasmBackend, jsBackend, type Backend, type KernelArg, type KernelName, type TypedArray } from '@qgrad/kernels';
import { median } from './matmul.js';

const { values: args } = parseArgs({ options: { reps: { type: 'string', default: '200' } } });
const reps = Number(args.reps);

type Arg = KernelArg<TypedArray>;
function arg(shape: number[], fill: (i: number) => number = (i) => Math.sin(i), strides = contiguousStrides(shape)): Arg {
  const n = shape.reduce((a, b) => a * b, 1);
  return { data: Float32Array.from({ length: n }, (_, i) => fill(i)), dtype: 'float32', shape, strides, offset: 0 };
}

/** Busy JS for `ms` (what a training step does between kernels). */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

interface Contender {
  name: string;
  run: () => void;
}

/** µs per call of each contender, alternating; `gapMs` of JS before each untimed + timed pair. */
function compare(title: string, contenders: Contender[], gapMs = 0, n = reps): void {
  const times = contenders.map(() => [] as number[]);
  for (let r = 0; r < n; r++) {
    contenders.forEach((c, i) => {
      if (gapMs) busy(gapMs);
      c.run();
      const t = performance.now();
      c.run();
      times[i]!.push((performance.now() - t) * 1000);
    });
  }
  console.log(`${title.padEnd(58)} ${contenders.map((c, i) => `${c.name} ${median(times[i]!).toFixed(0).padStart(5)} µs`).join('   ')}`);
}

const run = (b: Backend<TypedArray>, kernel: KernelName, inputs: Arg[], out: Arg, params: object) => () => b.run(kernel, inputs as never, out as never, params as never);

const poll = createWasmBackend({ threads: 2, spinMicros: 250 });
const sleep = createWasmBackend({ threads: 2, spinMicros: 0 });
const one = createWasmBackend({ threads: 1 });
const two = createWasmBackend({ threads: 2 });

// threads.ts: idle workers poll 250 µs before sleeping (matmul 256², 2 ms of JS between calls)
{
  const [a, b, o] = [arg([256, 256]), arg([256, 256], Math.cos), arg([256, 256])];
  compare('matmul 256², 2 threads, 2 ms JS between: sleep / poll', [
    { name: 'spin 0', run: run(sleep, 'matmul', [a, b], o, {}) },
    { name: 'spin 250', run: run(poll, 'matmul', [a, b], o, {}) },
  ], 2);
}

// optim.ts: Adam splits over the pool from 2¹⁷ elements
for (const shape of [[256, 784], [256, 256], [128, 256]]) {
  const state = (j: number) => [arg(shape), arg(shape, (i) => Math.sin(i + j) * 1e-2), arg(shape, () => 1e-3), arg(shape, () => 1e-5)];
  const [s1, s2] = [state(1), state(2)];
  const o = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: false, maximize: false, step: 10 };
  compare(`adamStep ${shape.join('×')}: 1 / 2 threads`, [
    { name: '1t', run: run(one, 'adamStep', s1, s1[0]!, o) },
    { name: '2t', run: run(two, 'adamStep', s2, s2[0]!, o) },
  ]);
}

// reduce.ts: float32 absmax per token (the dynamic A8 scale of QAT)
for (const d of [128, 384]) {
  const x = arg([16, 128, d]);
  const o = arg([16, 128, 1]);
  compare(`absmax per token 16×128×${d}: js / wasm`, [
    { name: 'js', run: run(jsBackend, 'reduce', [x], o, { op: 'absmax', axes: [2] }) },
    { name: 'wasm', run: run(two, 'reduce', [x], o, { op: 'absmax', axes: [2] }) },
  ]);
}

// elementwise.ts: relu backward as one select (reluBackward) vs the mask-and-multiply it replaced
{
  const [g, x, mask, o] = [arg([64, 256]), arg([64, 256], Math.cos), arg([64, 256]), arg([64, 256])];
  const gtMask = { ...mask, data: new Uint8Array(mask.data.length), dtype: 'uint8' as const };
  compare('relu backward 64×256: gt + mul (old) / reluBackward', [
    {
      name: 'gt+mul',
      run: () => {
        two.run('binary', [x, { ...x, data: new Float32Array(1), shape: x.shape, strides: [0, 0] }] as never, gtMask as never, { op: 'gt' });
        two.run('binary', [g, gtMask] as never, o as never, { op: 'mul' });
      },
    },
    { name: 'select', run: run(two, 'binary', [g, x], o, { op: 'reluBackward' }) },
  ]);
}

// simd-math.ts / elementwise.ts / norm.ts: exp-based maps and softmax, pooled when large
{
  const x = arg([1024, 1024], (i) => Math.sin(i) * 8);
  const o = arg([1024, 1024]);
  compare('silu 1M: 1 / 2 threads', [
    { name: '1t', run: run(one, 'unary', [x], o, { op: 'silu' }) },
    { name: '2t', run: run(two, 'unary', [x], o, { op: 'silu' }) },
  ]);
  compare('softmax 1024 rows of 1024: 1 / 2 threads', [
    { name: '1t', run: run(one, 'softmax', [x], o, { axis: 1, log: false }) },
    { name: '2t', run: run(two, 'softmax', [x], o, { axis: 1, log: false }) },
  ]);
}

for (const b of [poll, sleep, one, two]) b.dispose();
