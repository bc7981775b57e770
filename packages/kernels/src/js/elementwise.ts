/**
 * @file js reference kernels for elementwise ops: unary, binary (broadcast by strides), where,
 * copy (strided → contiguous with cast) and fill. Readable loops; the oracle for other backends.
 */
import type { Kernel, KernelArg } from '../backend.js';
import type { BinaryOp, TypedArray, UnaryOp } from '../names.js';
import { numel, offsetsOrNull } from '../layout.js';

/**
 * erf to ~1e-15 relative: a positive-term series below 3, a continued fraction for erfc above.
 * @example erf(1); // 0.8427007929497151
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  const s = x < 0 ? -1 : 1;
  if (a >= 6) return s;
  if (a < 3) {
    // erf(x) = 2/√π · e^{-x²} · Σ 2ⁿ x^{2n+1} / (1·3·…·(2n+1))
    let term = a;
    let sum = a;
    const x2 = a * a;
    for (let n = 1; n < 200; n++) {
      term *= (2 * x2) / (2 * n + 1);
      sum += term;
      if (term < sum * 1e-17) break;
    }
    return (s * 2 * Math.exp(-x2) * sum) / Math.sqrt(Math.PI);
  }
  // erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), evaluated bottom-up
  let f = a;
  for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return s * (1 - erfc);
}

/**
 * Rounds to the nearest integer, ties to even (PyTorch's `torch.round`, IEEE roundTiesToEven), keeping the sign of zero.
 * @example [roundHalfEven(0.5), roundHalfEven(1.5), roundHalfEven(-2.5)]; // [0, 2, -2]
 */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  const r = d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
  return r === 0 && (x < 0 || Object.is(x, -0)) ? -0 : r; // keep the sign of zero, as PyTorch
}

/**
 * Rounds to the nearest integer, ties away from zero (C's `round`, what several quantizer papers' code does).
 * @example [roundHalfAway(0.5), roundHalfAway(-2.5)]; // [1, -3]
 */
export function roundHalfAway(x: number): number {
  const a = Math.abs(x);
  const f = Math.floor(a);
  const r = a - f >= 0.5 ? f + 1 : f;
  return x < 0 ? -r : r;
}

/** 1/(1 + e^−x), evaluated as e^x/(1 + e^x) for x < 0 so that e^−x cannot overflow. */
const sigmoid = (x: number): number => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));

export const UNARY: Record<UnaryOp, (x: number, alpha: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  log1p: Math.log1p,
  expm1: Math.expm1,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  abs: Math.abs,
  sign: (x) => (x > 0 ? 1 : x < 0 ? -1 : x === 0 ? 0 : NaN),
  sin: Math.sin,
  cos: Math.cos,
  tanh: Math.tanh,
  sigmoid,
  relu: (x) => (x > 0 ? x : x === x ? 0 : NaN),
  // d relu/dx as a multiplier, 0 where x ≤ 0 and 1 elsewhere (NaN included, as threshold_backward
  // passes g there); for graphs of the backward, which need it differentiable in g
  reluGrad: (x) => (x <= 0 ? 0 : 1),
  silu: (x) => x * sigmoid(x),
  // d silu/dx = σ(x)·(1 + x·(1 − σ(x)))
  siluGrad: (x) => {
    const s = sigmoid(x);
    return s * (1 + x * (1 - s));
  },
  erf,
  floor: Math.floor,
  ceil: Math.ceil,
  trunc: Math.trunc,
  roundHalfEven,
  roundHalfAway,
  reciprocal: (x) => 1 / x,
  square: (x) => x * x,
  isfinite: (x) => (Number.isFinite(x) ? 1 : 0),
  isnan: (x) => (x !== x ? 1 : 0),
  // softplus(x) = log(1 + e^x), stable for large |x|; alpha is beta (PyTorch's threshold 20 applied)
  softplus: (x, beta) => (x * beta > 20 ? x : Math.log1p(Math.exp(x * beta)) / beta),
  logicalNot: (x) => (x ? 0 : 1),
};

export const BINARY: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: Math.pow,
  maximum: (a, b) => (a !== a || b !== b ? NaN : a > b ? a : b),
  minimum: (a, b) => (a !== a || b !== b ? NaN : a < b ? a : b),
  atan2: Math.atan2,
  fmod: (a, b) => a % b,
  eq: (a, b) => (a === b ? 1 : 0),
  ne: (a, b) => (a !== b ? 1 : 0),
  lt: (a, b) => (a < b ? 1 : 0),
  le: (a, b) => (a <= b ? 1 : 0),
  gt: (a, b) => (a > b ? 1 : 0),
  ge: (a, b) => (a >= b ? 1 : 0),
  logicalAnd: (a, b) => (a && b ? 1 : 0),
  logicalOr: (a, b) => (a || b ? 1 : 0),
  // a select, not g·mask: an inactive unit gives +0 even for g = ±∞ or NaN, as PyTorch
  reluBackward: (g, x) => (x <= 0 ? 0 : g),
  siluBackward: (g, x) => g * UNARY.siluGrad(x, 0),
  // float32 rounds silu(a) first (binary below), as the silu map's output did before the mul map
  siluMul: (a, b) => UNARY.silu(a, 0) * b,
};

/** Ops whose float32 form rounds an intermediate to float32, as the two kernels they fuse did. */
const BINARY_F32: Partial<Record<BinaryOp, (a: number, b: number) => number>> = {
  siluMul: (a, b) => Math.fround(UNARY.silu(a, 0)) * b,
};

type Arg = KernelArg<TypedArray>;

export const unary: Kernel<'unary', TypedArray> = ([x], out, { op, alpha }) => {
  const f = UNARY[op];
  const a = alpha ?? 1;
  const xd = x!.data;
  const od = out.data;
  const n = numel(out.shape);
  const ox = offsetsOrNull(x!);
  const o0 = out.offset;
  if (ox === null) {
    const x0 = x!.offset;
    for (let i = 0; i < n; i++) od[o0 + i] = f(xd[x0 + i]!, a);
  } else {
    for (let i = 0; i < n; i++) od[o0 + i] = f(xd[ox[i]!]!, a);
  }
};

export const binary: Kernel<'binary', TypedArray> = ([a, b], out, { op }) => {
  const f = (out.dtype === 'float32' && BINARY_F32[op]) || BINARY[op];
  const ad = a!.data;
  const bd = b!.data;
  const od = out.data;
  const n = numel(out.shape);
  const oa = offsetsOrNull(a!);
  const ob = offsetsOrNull(b!);
  const o0 = out.offset;
  if (oa === null && ob === null) {
    const a0 = a!.offset;
    const b0 = b!.offset;
    for (let i = 0; i < n; i++) od[o0 + i] = f(ad[a0 + i]!, bd[b0 + i]!);
    return;
  }
  const ia = oa ?? identity(n, a!.offset);
  const ib = ob ?? identity(n, b!.offset);
  for (let i = 0; i < n; i++) od[o0 + i] = f(ad[ia[i]!]!, bd[ib[i]!]!);
};

/**
 * SwiGLU's backward, out [2, ...]: d gate = (g·up)·siluGrad(gate), d up = g·silu(gate), with
 * g·up and silu(gate) rounded to out's dtype first, as the mul and silu maps stored them.
 */
export const swigluBackward: Kernel<'swigluBackward', TypedArray> = ([g, gate, up], out) => {
  const r = out.dtype === 'float32' ? Math.fround : (v: number) => v;
  const n = numel(g!.shape);
  const ig = offsetsOrNull(g!) ?? identity(n, g!.offset);
  const ix = offsetsOrNull(gate!) ?? identity(n, gate!.offset);
  const iu = offsetsOrNull(up!) ?? identity(n, up!.offset);
  const [gd, xd, ud, od] = [g!.data, gate!.data, up!.data, out.data];
  const o0 = out.offset;
  for (let i = 0; i < n; i++) {
    const gi = gd[ig[i]!]!;
    const x = xd[ix[i]!]!;
    od[o0 + i] = r(gi * ud[iu[i]!]!) * UNARY.siluGrad(x, 0);
    od[o0 + n + i] = gi * r(UNARY.silu(x, 0));
  }
};

export const where: Kernel<'where', TypedArray> = ([c, a, b], out) => {
  const n = numel(out.shape);
  const ic = offsetsOrNull(c!) ?? identity(n, c!.offset);
  const ia = offsetsOrNull(a!) ?? identity(n, a!.offset);
  const ib = offsetsOrNull(b!) ?? identity(n, b!.offset);
  const cd = c!.data;
  const ad = a!.data;
  const bd = b!.data;
  const od = out.data;
  for (let i = 0; i < n; i++) od[out.offset + i] = cd[ic[i]!] ? ad[ia[i]!]! : bd[ib[i]!]!;
};

export const copy: Kernel<'copy', TypedArray> = ([x], out) => {
  // out may be a strided view too (pad, slice assignment, copy_ into a view)
  const n = numel(out.shape);
  const ox = offsetsOrNull(x!);
  const oo = offsetsOrNull(out);
  const xd = x!.data;
  const od = out.data;
  const toInt = out.dtype !== 'float32' && out.dtype !== 'float64';
  if (ox === null && oo === null && !toInt && x!.dtype === out.dtype) {
    od.set(xd.subarray(x!.offset, x!.offset + n) as never, out.offset);
    return;
  }
  const ix = ox ?? identity(n, x!.offset);
  const io = oo ?? identity(n, out.offset);
  // float → int truncates toward zero, as PyTorch's .to(int) does
  if (toInt) for (let i = 0; i < n; i++) od[io[i]!] = Math.trunc(xd[ix[i]!]!);
  else for (let i = 0; i < n; i++) od[io[i]!] = xd[ix[i]!]!;
};

export const fill: Kernel<'fill', TypedArray> = (_inputs, out, { value }) => {
  out.data.fill(value, out.offset, out.offset + numel(out.shape));
};

function identity(n: number, offset: number): Int32Array {
  const r = new Int32Array(n);
  for (let i = 0; i < n; i++) r[i] = offset + i;
  return r;
}

export type { Arg };
