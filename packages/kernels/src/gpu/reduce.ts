/**
 * @file gpu reductions: sum/max/min/prod/absmax over any axes (one output per thread, nested
 * loops over the reduced dims) and argmax/argmin along one axis. NaN propagates as in js.
 */
import { numel } from '../layout.js';
import type { KernelParams } from '../names.js';
import { type Call, type GpuArg, INF, MAX_INDEX, MAX_LOOP, NAN, NEG_INF, coordinates, lit, offsetOf, store, writable } from './operands.js';

/** The reduced loops' headers and the offset of the element they reach, for dims `red` of x. */
function loops(x: GpuArg, red: number[]): { open: string; close: string; at: string } {
  const open = red.map((d, k) => `for (let r${k} = 0; r${k} < ${x.shape[d]}; r${k}++) {`).join('\n');
  const at = red.map((d, k) => `r${k} * ${lit(x.strides[d]!)}`).join(' + ') || '0.0';
  return { open, close: red.map(() => '}').join(''), at };
}

function setup(x: GpuArg, out: GpuArg, axes: readonly number[]) {
  const keep: number[] = [];
  const red: number[] = [];
  x.shape.forEach((_, d) => (axes.includes(d) ? red : keep).push(d));
  const n = numel(out.shape);
  const head = `const i = this.thread.x;
${coordinates('i', keep.map((d) => x.shape[d]!), 'c')}
const base = ${offsetOf(keep.map((d) => x.strides[d]!), x.offset, 'c')};`;
  return { n, red, head };
}

/** Each op's starting value and its step over one element `v` (NaN noted in `nan` where comparisons would skip it). */
const INIT = { sum: '0.0', prod: '1.0', max: NEG_INF, min: INF, absmax: '0.0' };
const STEP = {
  sum: 'acc += v;',
  prod: 'acc *= v;',
  max: 'if (v > acc) { acc = v; } if (v != v) { nan = 1.0; }',
  min: 'if (v < acc) { acc = v; } if (v != v) { nan = 1.0; }',
  absmax: 'if (Math.abs(v) > acc) { acc = Math.abs(v); } if (v != v) { nan = 1.0; }',
};

/** Reduced elements one thread of the first pass sums when a reduction is split (well under MAX_LOOP). */
const CHUNK = 16384;

export function reduceGpu(call: Call, [x]: readonly GpuArg[], out: GpuArg, { op, axes }: KernelParams['reduce']): boolean {
  if (x!.dtype !== 'float32' || out.dtype !== 'float32' || !writable(out)) return false;
  const { n, red, head } = setup(x!, out, axes);
  if (n === 0 || n > MAX_INDEX || numel(x!.shape) === 0) return false;
  const init = INIT[op];
  const step = STEP[op];
  const body = (loop: string, read: string) => `let acc = ${init};
let nan = 0.0;
${loop.replace('READ', `const v = ${read};\n${step}`)}
if (nan > 0.0) { acc = ${NAN}; }
return acc;
}`;
  const R = red.reduce((a, d) => a * x!.shape[d]!, 1);
  if (R <= MAX_LOOP) {
    const { open, close, at } = loops(x!, red);
    store(call, out, call.run(`function (x) {\n${head}\n${body(`${open}\nREAD\n${close}`, `x[base + ${at}]`)}`, n, [x!]));
    return true;
  }
  // more than a thread may loop over: each of C threads per output reduces CHUNK of the reduced
  // elements (their flat index decoded into coordinates), then one pass reduces the C partials
  const C = Math.ceil(R / CHUNK);
  if (n * C > MAX_INDEX || C > MAX_LOOP) return false;
  const redShape = red.map((d) => x!.shape[d]!);
  const partial = `function (x) {
const t = this.thread.x;
const i = Math.floor((t + 0.5) / ${lit(C)});
const chunk = t - i * ${lit(C)};
${head.replace('const i = this.thread.x;\n', '')}
${body(`for (let k = 0; k < ${CHUNK}; k++) {
const j = chunk * ${lit(CHUNK)} + k;
if (j < ${lit(R)}) {
${coordinates('j', redShape, 'r')}
READ
}
}`, `x[base + ${offsetOf(red.map((d) => x!.strides[d]!), 0, 'r')}]`)}`;
  const parts = call.scratch(partial, n * C, [x!]);
  // absmax's partials are magnitudes already: their max
  const combine = op === 'absmax' ? 'max' : op;
  const final = `function (p) {
const i = this.thread.x;
let acc = ${INIT[combine]};
let nan = 0.0;
for (let k = 0; k < ${C}; k++) {
const v = p[i * ${lit(C)} + k];
${STEP[combine]}
}
if (nan > 0.0) { acc = ${NAN}; }
return acc;
}`;
  store(call, out, call.run(final, n, [parts]));
  return true;
}

export function argReduceGpu(call: Call, [x]: readonly GpuArg[], out: GpuArg, { op, axis }: KernelParams['argReduce']): boolean {
  if (x!.dtype !== 'float32' || out.dtype !== 'int32' || !writable(out)) return false;
  const { n, head } = setup(x!, out, [axis]);
  if (n === 0 || n > MAX_INDEX || numel(x!.shape) === 0 || x!.shape[axis]! > MAX_LOOP) return false;
  const cmp = op === 'argmax' ? '>' : '<';
  const source = `function (x) {
${head}
let best = 0.0;
let bv = x[base];
let done = 0.0;
for (let j = 1; j < ${x!.shape[axis]}; j++) {
  if (done == 0.0) {
    const v = x[base + j * ${lit(x!.strides[axis]!)}];
    if (bv != bv) { done = 1.0; } else if (v != v || v ${cmp} bv) { bv = v; best = j; }
  }
}
return best;
}`;
  store(call, out, call.run(source, n, [x!]));
  return true;
}
