/**
 * @file gpu row-wise primitives: softmax / log-softmax along any axis (with the optional bias)
 * and their backward; RMS / layer norm over the last axis and their backward; rotary embedding.
 * Softmax threads recompute their line's max and sum (no shared memory in gpu.js): O(n) per
 * element, fine for the attention and class rows qgrad trains on. Norms first write the row
 * statistics to a scratch texture (one kernel), which the elementwise kernel then reads.
 */
import { numel } from '../layout.js';
import type { KernelParams } from '../names.js';
import { type Call, type GpuArg, MAX_INDEX, MAX_LOOP, NEG_INF, coordinates, lit, offsetOf, store, writable } from './operands.js';

const isF32 = (...args: GpuArg[]) => args.every((a) => a.dtype === 'float32');

/** Thread setup: coordinates of the output element, each input's line start and step along `axis`. */
function lineSource(inputs: readonly GpuArg[], out: GpuArg, axis: number): string {
  const shape = out.shape;
  const lines = [`const i = this.thread.x;`, coordinates('i', shape, 'c')];
  inputs.forEach((a, k) => {
    const strides = a.strides.map((s, d) => (d === axis ? 0 : s));
    lines.push(`const p${k} = ${offsetOf(strides, a.offset, 'c')};`, `const s${k} = ${lit(a.strides[axis] ?? 0)};`);
  });
  lines.push(`const me = c${axis};`);
  return lines.join('\n');
}

export function softmaxGpu(call: Call, inputs: readonly GpuArg[], out: GpuArg, { axis, log }: KernelParams['softmax']): boolean {
  const n = numel(out.shape);
  if (inputs.some((a) => a.dtype !== 'float32') || out.dtype !== 'float32' || !writable(out) || n === 0 || n > MAX_INDEX) return false;
  const L = out.shape[axis]!;
  if (2 * L > MAX_LOOP) return false; // two passes over the row
  const bias = inputs.length > 1;
  const args = bias ? 'x0, x1' : 'x0';
  const v = (j: string) => (bias ? `(x0[p0 + ${j} * s0] + x1[p1 + ${j} * s1])` : `x0[p0 + ${j} * s0]`);
  const source = `function (${args}) {
${lineSource(inputs, out, axis)}
let m = ${NEG_INF};
for (let j = 0; j < ${L}; j++) { m = Math.max(m, ${v('j')}); }
let s = 0.0;
for (let j = 0; j < ${L}; j++) { s += Math.exp(${v('j')} - m); }
const mine = ${v('me')};
return ${log ? 'mine - m - Math.log(s)' : 'Math.exp(mine - m) / s'};
}`;
  store(call, out, call.run(source, n, inputs));
  return true;
}

export function softmaxBackwardGpu(call: Call, [y, g]: readonly GpuArg[], out: GpuArg, { axis, log }: KernelParams['softmaxBackward']): boolean {
  const n = numel(out.shape);
  if (y!.dtype !== 'float32' || g!.dtype !== 'float32' || out.dtype !== 'float32' || !writable(out) || n === 0 || n > MAX_INDEX) return false;
  const L = out.shape[axis]!;
  if (L > MAX_LOOP) return false;
  const source = `function (x0, x1) {
${lineSource([y!, g!], out, axis)}
let s = 0.0;
for (let j = 0; j < ${L}; j++) { s += ${log ? 'x1[p1 + j * s1]' : 'x1[p1 + j * s1] * x0[p0 + j * s0]'}; }
const yi = x0[p0 + me * s0];
const gi = x1[p1 + me * s1];
return ${log ? 'gi - Math.exp(yi) * s' : 'yi * (gi - s)'};
}`;
  store(call, out, call.run(source, n, [y!, g!]));
  return true;
}

/**
 * The row-statistics kernel of norm (`g` absent: per row mean, rstd) and normBackward (per row
 * mean, rstd, mean(g) for layer norm else 0, mean(g·y)), as js's rowStats: mean first, then the
 * centred squares. Thread t computes row ⌊t / S⌋'s statistics and returns statistic t mod S.
 */
function statsSource(x: GpuArg, g: GpuArg | undefined, layer: boolean, eps: number): { source: string; per: number } {
  const r = x.shape.length - 1;
  const D = x.shape[r]!;
  const per = g ? 4 : 2;
  const at = (a: GpuArg) => offsetOf(a.strides.slice(0, r), a.offset, 'r');
  const xv = (j: string) => `x[px + ${j} * ${lit(x.strides[r]!)}]`;
  const backward = g
    ? `if (which > 1.5) {
  let sgm = 0.0;
  let sgy = 0.0;
  for (let j = 0; j < ${D}; j++) {
    const gj = g[pg + j * ${lit(g.strides[r]!)}];
    sgm += gj;
    sgy += gj * (${xv('j')} - mu) * rstd;
  }
  res = ${layer ? `sgm / ${lit(D)}` : '0.0'};
  if (which > 2.5) { res = sgy / ${lit(D)}; }
}`
    : '';
  const source = `function (x${g ? ', g' : ''}) {
const t = this.thread.x;
const row = Math.floor((t + 0.5) / ${lit(per)});
const which = t - row * ${lit(per)};
${coordinates('row', x.shape.slice(0, r), 'r')}
const px = ${at(x)};
${g ? `const pg = ${at(g)};` : ''}
let mu = 0.0;
${layer ? `for (let j = 0; j < ${D}; j++) { mu += ${xv('j')}; }
mu = mu / ${lit(D)};` : ''}
let v = 0.0;
for (let j = 0; j < ${D}; j++) {
  const cj = ${xv('j')} - mu;
  v += cj * cj;
}
const rstd = 1.0 / Math.sqrt(v / ${lit(D)} + ${lit(eps)});
let res = mu;
if (which > 0.5) { res = rstd; }
${backward}
return res;
}`;
  return { source, per };
}

/** The row setup of the elementwise norm kernels: `c…` coordinates, this row's statistics at `st + k`. */
function rowSource(out: GpuArg, per: number): string {
  const D = out.shape[out.shape.length - 1]!;
  return `const i = this.thread.x;
${coordinates('i', out.shape, 'c')}
const st = Math.floor((i + 0.5) / ${lit(D)}) * ${lit(per)};`;
}

function normOk(inputs: readonly GpuArg[], out: GpuArg): boolean {
  const n = numel(out.shape);
  // the statistics texture has up to 4 entries per row of at least one element
  // at most three passes over a row's D elements in one thread
  return isF32(...inputs, out) && out.shape.length > 0 && writable(out) && n > 0 && 4 * n <= MAX_INDEX && 3 * out.shape[out.shape.length - 1]! <= MAX_LOOP;
}

export function normGpu(call: Call, [x, w]: readonly GpuArg[], out: GpuArg, { kind, eps }: KernelParams['norm']): boolean {
  // the affine form (a weight input) runs on js
  if (w || !normOk([x!], out)) return false;
  const n = numel(out.shape);
  const { source, per } = statsSource(x!, undefined, kind === 'layer', eps);
  const stats = call.scratch(source, (n / out.shape[out.shape.length - 1]!) * per, [x!]);
  const apply = `function (x, s) {
${rowSource(out, per)}
return (x[${offsetOf(x!.strides, x!.offset, 'c')}] - s[st]) * s[st + 1];
}`;
  store(call, out, call.run(apply, n, [x!, stats]));
  return true;
}

export function normBackwardGpu(call: Call, [x, g, w]: readonly GpuArg[], out: GpuArg, { kind, eps }: KernelParams['normBackward']): boolean {
  if (w || !normOk([x!, g!], out)) return false;
  const n = numel(out.shape);
  const { source, per } = statsSource(x!, g!, kind === 'layer', eps);
  const stats = call.scratch(source, (n / out.shape[out.shape.length - 1]!) * per, [x!, g!]);
  // y = (x − μ)·rstd; dx = rstd·(g − mean(g) − y·mean(g·y)), mean(g) = 0 for rms
  const apply = `function (x, g, s) {
${rowSource(out, per)}
const rstd = s[st + 1];
const y = (x[${offsetOf(x!.strides, x!.offset, 'c')}] - s[st]) * rstd;
return rstd * (g[${offsetOf(g!.strides, g!.offset, 'c')}] - s[st + 2] - y * s[st + 3]);
}`;
  store(call, out, call.run(apply, n, [x!, g!, stats]));
  return true;
}

export function ropeGpu(call: Call, inputs: readonly GpuArg[], out: GpuArg, { transpose, scale = 1 }: KernelParams['rope']): boolean {
  // a scaled rotation (attention's q) runs on js
  if (scale !== 1) return false;
  const n = numel(out.shape);
  const r = out.shape.length - 1;
  const D = out.shape[r] ?? 0;
  // an odd last dim is js's error to throw
  if (!isF32(...inputs, out) || r < 0 || D % 2 !== 0 || !writable(out) || n === 0 || n > MAX_INDEX) return false;
  const h = D / 2;
  const [x, c, s] = inputs as [GpuArg, GpuArg, GpuArg];
  // element k of the rotated pair in the first half reads its partner h further on, and vice versa
  const at = (a: GpuArg, name: string) => `const ${name}me = ${offsetOf(a.strides, a.offset, 'c')};
const ${name}pa = ${name}me + sh * ${lit(a.strides[r]!)};`;
  const source = `function (x, c, s) {
const i = this.thread.x;
${coordinates('i', out.shape, 'c')}
let sh = ${lit(h)};
if (c${r} >= ${lit(h)}) { sh = -${lit(h)}; }
${at(x, 'x')}
${at(c, 'c')}
${at(s, 's')}
let res = 0.0;
if (sh > 0.0) {
  res = ${transpose ? 'x[xme] * c[cme] + x[xpa] * s[spa]' : 'x[xme] * c[cme] - x[xpa] * s[sme]'};
} else {
  res = ${transpose ? 'x[xme] * c[cme] - x[xpa] * s[spa]' : 'x[xme] * c[cme] + x[xpa] * s[sme]'};
}
return res;
}`;
  store(call, out, call.run(source, n, [x, c, s]));
  return true;
}
