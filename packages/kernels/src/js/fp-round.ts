/**
 * @file js reference kernel `fpRound`: rounding onto a minifloat (FP ExMy) grid, one element at
 * a time in double arithmetic (exact for every grid a float32 or float64 can hold). The wasm
 * kernel (wasm/fp-round.ts) is tested bit for bit against this one.
 */
import type { Kernel, KernelArg } from '../backend.js';
import type { FpRoundParams, TypedArray } from '../names.js';
import { numel, offsets } from '../layout.js';
import { roundHalfAway, roundHalfEven } from './elementwise.js';

type Arg = KernelArg<TypedArray>;

const ROUND: Record<FpRoundParams['rounding'], (u: number) => number> = {
  halfEven: roundHalfEven,
  halfAway: roundHalfAway,
  floor: Math.floor,
};

/** ⌊log2 a⌋ for a > 0, exactly: Math.log2 may land on the wrong side of a power of two. */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  return e;
}

/**
 * One value onto the grid. Saturating first is the same as clamping the rounded value (rounding is
 * monotone and ±max are grid values), and it spares ±∞ a case of their own (they become ±max).
 * Below 2^minExponent the exponent stops falling: that is the subnormals' uniform step.
 */
function fpRoundValue(v: number, p: Pick<FpRoundParams, 'mantissaBits' | 'minExponent' | 'max' | 'rounding'>): number {
  if (Number.isNaN(v)) return NaN;
  const c = Math.min(Math.max(v, -p.max), p.max);
  const e = c === 0 ? p.minExponent : Math.max(exponentOf(Math.abs(c)), p.minExponent);
  const step = 2 ** (e - p.mantissaBits);
  // c / step and R(·)·step are exact: powers of two, and the results are grid values
  return ROUND[p.rounding](c / step) * step;
}

export const fpRound: Kernel<'fpRound', TypedArray> = (inputs, out, p) => {
  const [x, s] = inputs as Arg[];
  const n = numel(out.shape);
  const ix = offsets({ shape: out.shape, strides: x!.strides, offset: x!.offset });
  const is = p.scale ? offsets({ shape: out.shape, strides: s!.strides, offset: s!.offset }) : null;
  const f32 = out.dtype === 'float32';
  for (let i = 0; i < n; i++) {
    let v = x!.data[ix[i]!]!;
    // the scaled value rounded to the dtype, as div(x, s) would store it
    if (is) v = f32 ? Math.fround(v / s!.data[is[i]!]!) : v / s!.data[is[i]!]!;
    out.data[out.offset + i] = fpRoundValue(v, p);
  }
};
