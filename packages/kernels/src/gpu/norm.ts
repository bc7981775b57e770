/**
 * @file gpu row-wise primitives: softmax / log-softmax along any axis (with the optional bias)
 * and their backward. Each thread recomputes its line's max and sum (no shared memory in gpu.js):
 * O(n) per element, fine for the attention and class rows qgrad trains on.
 */
import { numel } from '../layout.js';
import type { KernelParams } from '../names.js';
import { type Call, type GpuArg, MAX_INDEX, coordinates, lit, offsetOf, store, writable } from './operands.js';

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
  const bias = inputs.length > 1;
  const args = bias ? 'x0, x1' : 'x0';
  const v = (j: string) => (bias ? `(x0[p0 + ${j} * s0] + x1[p1 + ${j} * s1])` : `x0[p0 + ${j} * s0]`);
  const source = `function (${args}) {
${lineSource(inputs, out, axis)}
let m = -1.0 / 0.0;
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
