/**
 * @file FP ExMy minifloat grids (E4M3 "fn", E5M2, E2M1, E3M2, E2M3 or any ExMy): the exact set of
 * representable values, and round-to-nearest (half-even by default) onto it with saturation.
 * MX block scaling is in mx.ts.
 */
import { abs, floor, log, maximum, noGrad, pow, ge, lt, sign, add, cast, type Tensor } from '@qgrad/core';

export interface FpFormat {
  name: string;
  /** Exponent and mantissa bits (plus one sign bit). */
  exp: number;
  man: number;
  bias: number;
  /**
   * Which codes are not finite: 'ieee' (top exponent = inf/NaN, like E5M2), 'fn' (only
   * S.1…1.1…1 is NaN, like OCP E4M3) or 'none' (every code is a number, like E2M1).
   */
  special: 'ieee' | 'fn' | 'none';
}

export const FP_FORMATS = {
  e4m3fn: { name: 'e4m3fn', exp: 4, man: 3, bias: 7, special: 'fn' },
  e5m2: { name: 'e5m2', exp: 5, man: 2, bias: 15, special: 'ieee' },
  e2m1: { name: 'e2m1', exp: 2, man: 1, bias: 1, special: 'none' },
  e3m2: { name: 'e3m2', exp: 3, man: 2, bias: 3, special: 'none' },
  e2m3: { name: 'e2m3', exp: 2, man: 3, bias: 1, special: 'none' },
} as const satisfies Record<string, FpFormat>;

export type FpFormatName = keyof typeof FP_FORMATS;

export function fpFormat(f: FpFormatName | FpFormat): FpFormat {
  if (typeof f !== 'string') return f;
  const r = FP_FORMATS[f];
  if (!r) throw new Error(`fpFormat: unknown format '${f}'; known: ${Object.keys(FP_FORMATS).join(', ')}`);
  return r;
}

/** The value of one code (sign s, exponent field e, mantissa field m), or NaN/±Infinity. */
export function decodeFp(f: FpFormat, s: number, e: number, m: number): number {
  const top = 2 ** f.exp - 1;
  const sg = s ? -1 : 1;
  if (f.special === 'ieee' && e === top) return m === 0 ? sg * Infinity : NaN;
  if (f.special === 'fn' && e === top && m === 2 ** f.man - 1) return NaN;
  if (e === 0) return sg * 2 ** (1 - f.bias) * (m / 2 ** f.man);
  return sg * 2 ** (e - f.bias) * (1 + m / 2 ** f.man);
}

/** Every finite representable value, sorted, with ±0 collapsed into one 0. */
export function fpValues(format: FpFormatName | FpFormat): number[] {
  const f = fpFormat(format);
  const set = new Set<number>();
  for (let s = 0; s < 2; s++) for (let e = 0; e < 2 ** f.exp; e++) for (let m = 0; m < 2 ** f.man; m++) {
    const v = decodeFp(f, s, e, m);
    if (Number.isFinite(v)) set.add(v === 0 ? 0 : v);
  }
  return [...set].sort((a, b) => a - b);
}

/** Largest finite value, smallest normal exponent and the top exponent of normals. */
export function fpLimits(format: FpFormatName | FpFormat): { max: number; emin: number; emax: number } {
  const f = fpFormat(format);
  const v = fpValues(f);
  const max = v[v.length - 1]!;
  return { max, emin: 1 - f.bias, emax: Math.floor(Math.log2(max)) };
}

/**
 * Rounds onto the format's values: e = max(⌊log2|x|⌋, emin), step 2^(e − M), x̂ = R(x/step)·step,
 * saturated to ±max. Half-even by default (OCP/IEEE), or half away from zero (microxcaling's
 * "nearest"). Forward only (no gradient): wrap it with an estimator (fp quantizers in spec.ts do).
 * @example roundToFp(tensor([0.3, 5, 100]), 'e2m1').toArray(); // [0.5, 4, 6] — 0.25 would go to 0
 */
export function roundToFp(x: Tensor, format: FpFormatName | FpFormat, rounding: 'halfEven' | 'halfAway' = 'halfEven'): Tensor {
  const f = fpFormat(format);
  const { max, emin } = fpLimits(f);
  return noGrad(() => {
    const a = abs(x);
    let e = floor(log(a).div(Math.LN2));
    // log2 through log()/ln2 can be off by one at exact powers of two: correct both ways
    const p = pow(2, e);
    e = add(e, cast(ge(a, p.mul(2)), x.dtype)).sub(cast(lt(a, p), x.dtype));
    e = maximum(e, emin);
    const step = pow(2, e.sub(f.man));
    const u = x.div(step);
    const r = rounding === 'halfEven' ? u.round() : sign(u).mul(floor(abs(u).add(0.5)));
    return r.mul(step).clamp(-max, max);
  });
}
