/**
 * @file gpu elementwise kernels: unary, binary (broadcast by stride 0), where, copy and fill, each
 * one generated fragment/compute kernel over the output's flat index. Ops without a float32
 * kernel expression here decline (js runs them).
 */
import { collapse, numel } from '../layout.js';
import type { BinaryOp, KernelParams, UnaryOp } from '../names.js';
import { type Call, type GpuArg, MAX_INDEX, coordinates, lit, offsetOf, store, writable } from './operands.js';

/** Kernel-source expressions of `x`. */
const UNARY: Partial<Record<UnaryOp, string>> = {
  neg: '-x',
  exp: 'Math.exp(x)',
  log: 'Math.log(x)',
  sqrt: 'Math.sqrt(x)',
  rsqrt: '1.0 / Math.sqrt(x)',
  abs: 'Math.abs(x)',
  sign: '(x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : x))',
  sin: 'Math.sin(x)',
  cos: 'Math.cos(x)',
  sigmoid: '1.0 / (1.0 + Math.exp(-x))',
  relu: '(x > 0.0 ? x : 0.0)',
  reluGrad: '(x <= 0.0 ? 0.0 : 1.0)',
  silu: 'x / (1.0 + Math.exp(-x))',
  // silu's derivative σ(x)·(1 + x·(1 − σ(x))): the Llama's SwiGLU backward, 4 calls a step that went to js
  siluGrad: '(1.0 / (1.0 + Math.exp(-x))) * (1.0 + x * (1.0 - 1.0 / (1.0 + Math.exp(-x))))',
  floor: 'Math.floor(x)',
  ceil: 'Math.ceil(x)',
  trunc: '(x < 0.0 ? Math.ceil(x) : Math.floor(x))',
  roundHalfEven: '(x - Math.floor(x) < 0.5 ? Math.floor(x) : (x - Math.floor(x) > 0.5 ? Math.floor(x) + 1.0 : (Math.floor(x) - 2.0 * Math.floor(Math.floor(x) * 0.5) == 0.0 ? Math.floor(x) : Math.floor(x) + 1.0)))',
  reciprocal: '1.0 / x',
  square: 'x * x',
};

/** Kernel-source expressions of `a` and `b`. */
const BINARY: Partial<Record<BinaryOp, string>> = {
  add: 'a + b',
  sub: 'a - b',
  mul: 'a * b',
  div: 'a / b',
  maximum: 'Math.max(a, b)',
  minimum: 'Math.min(a, b)',
  eq: '(a == b ? 1.0 : 0.0)',
  ne: '(a != b ? 1.0 : 0.0)',
  lt: '(a < b ? 1.0 : 0.0)',
  le: '(a <= b ? 1.0 : 0.0)',
  gt: '(a > b ? 1.0 : 0.0)',
  ge: '(a >= b ? 1.0 : 0.0)',
  reluBackward: '(b <= 0.0 ? 0.0 : a)',
  siluBackward: 'a * (1.0 / (1.0 + Math.exp(-b))) * (1.0 + b * (1.0 - 1.0 / (1.0 + Math.exp(-b))))',
  siluMul: 'a / (1.0 + Math.exp(-a)) * b',
};

const isF32 = (...args: GpuArg[]) => args.every((a) => a.dtype === 'float32');

/**
 * One output element per thread: `body` computes the result from operand values `v0, v1, …`
 * (read at each input view's offset for the output coordinates).
 */
export function mapKernel(call: Call, inputs: readonly GpuArg[], out: GpuArg, body: (v: string[]) => string): boolean {
  const n = numel(out.shape);
  if (n === 0 || n > MAX_INDEX || !writable(out)) return false;
  const { shape, strides } = collapse(out.shape, inputs.map((a) => a.strides));
  const names = inputs.map((_, k) => `x${k}`);
  const source = `function (${names.join(', ')}) {
const i = this.thread.x;
${coordinates('i', shape, 'c')}
${names.map((x, k) => `const v${k} = ${x}[${offsetOf(strides[k]!, inputs[k]!.offset, 'c')}];`).join('\n')}
return ${body(names.map((_, k) => `v${k}`))};
}`;
  store(call, out, call.run(source, n, inputs));
  return true;
}

export function unaryGpu(call: Call, [x]: readonly GpuArg[], out: GpuArg, { op }: KernelParams['unary']): boolean {
  const expr = UNARY[op];
  if (!expr || !isF32(x!, out)) return false;
  return mapKernel(call, [x!], out, ([v]) => `${expr.replace(/\bx\b/g, v!)}`);
}

export function binaryGpu(call: Call, [a, b]: readonly GpuArg[], out: GpuArg, { op }: KernelParams['binary']): boolean {
  const expr = BINARY[op];
  if (!expr || !isF32(a!, b!) || (out.dtype !== 'float32' && out.dtype !== 'uint8')) return false;
  return mapKernel(call, [a!, b!], out, ([va, vb]) => expr.replace(/\ba\b/g, va!).replace(/\bb\b/g, vb!));
}

export function whereGpu(call: Call, [c, a, b]: readonly GpuArg[], out: GpuArg): boolean {
  if (!isF32(a!, b!, out) || (c!.dtype !== 'uint8' && c!.dtype !== 'float32')) return false;
  return mapKernel(call, [c!, a!, b!], out, ([vc, va, vb]) => `(${vc} != 0.0 ? ${va} : ${vb})`);
}

export function copyGpu(call: Call, [x]: readonly GpuArg[], out: GpuArg): boolean {
  if (!isF32(x!, out)) return false;
  return mapKernel(call, [x!], out, ([v]) => v!);
}

export function fillGpu(call: Call, _inputs: readonly GpuArg[], out: GpuArg, { value }: KernelParams['fill']): boolean {
  if (out.dtype !== 'float32' || !Number.isFinite(value)) return false;
  return mapKernel(call, [], out, () => lit(value));
}
