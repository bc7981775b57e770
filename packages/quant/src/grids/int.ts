/**
 * @file The integer grid at 1–16 bits: signed [−2^(b−1), 2^(b−1) − 1] (narrow: symmetric), unsigned
 * [0, 2^b − 1], or asymmetric (unsigned with a zero point). Codes are the integers themselves.
 */
import { cast, noGrad, type Tensor } from '@qgrad/core';
import type { ScaleRule } from '../scale/rules.js';
import type { FloatDType, Grid, GridOptions, Rounding } from './grid.js';

/** An integer grid's inclusive range of codes. */
export interface IntRange {
  qmin: number;
  qmax: number;
}

/**
 * The integer range of a b-bit grid: signed [−2^(b−1), 2^(b−1) − 1] (narrow: [−(2^(b−1) − 1),
 * 2^(b−1) − 1]) or unsigned [0, 2^b − 1]. A signed grid needs 2 bits ({−1, 0} is no use; the
 * signed 1-bit grid {−1, +1} is 'binary').
 * @example intRange(4); // { qmin: -8, qmax: 7 }
 */
export function intRange(bits: number, opts: { signed?: boolean; narrow?: boolean } = {}): IntRange {
  const signed = opts.signed ?? true;
  if (!Number.isInteger(bits) || bits < (signed ? 2 : 1) || bits > 16) {
    throw new Error(`intRange: bits must be an integer in ${signed ? 2 : 1}…16 for a${signed ? ' signed' : 'n unsigned'} int grid, got ${bits}${signed && bits === 1 ? " (the signed 1-bit grid {−1, +1} is grid 'binary')" : ''}`);
  }
  if (!signed) return { qmin: 0, qmax: 2 ** bits - 1 };
  const h = 2 ** (bits - 1);
  return { qmin: opts.narrow ? -(h - 1) : -h, qmax: h - 1 };
}

/**
 * Round on plain numbers, as the kernel does (never Math.round).
 * @example roundNumber(2.5); // 2 (half to even)
 * roundNumber(2.5, 'halfAway'); // 3
 */
export function roundNumber(v: number, rounding: Rounding = 'halfEven'): number {
  if (rounding === 'floor') return Math.floor(v);
  if (rounding === 'halfAway') return Math.sign(v) * Math.floor(Math.abs(v) + 0.5);
  const f = Math.floor(v);
  const d = v - f;
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
}

/**
 * Rounds a tensor (no gradient).
 * @example roundTensor(tensor([0.5, 1.5, 2.5])); // [0, 2, 2]
 */
export function roundTensor(u: Tensor, rounding: Rounding = 'halfEven'): Tensor {
  return noGrad(() => (rounding === 'floor' ? u.floor() : rounding === 'halfAway' ? u.sign().mul(u.abs().add(0.5).floor()) : u.round()));
}

/**
 * An integer grid {qmin … qmax}; `name` and `label` let ternary reuse it.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function integerGrid(name: 'int' | 'ternary', label: string, qmin: number, qmax: number, idealBits: number, scaleRule: ScaleRule, estimator: string): Grid {
  return {
    name, label, lo: qmin, hi: qmax, integer: { qmin, qmax }, positiveLevels: Math.max(qmax, 0), scale: { kind: 'real' }, idealBits,
    codeMin: qmin, codeMax: qmax, defaults: { scaleRule, estimator },
    levels: (_dtype: FloatDType) => Float64Array.from({ length: qmax - qmin + 1 }, (_, i) => qmin + i),
    snap: (u, rounding) => noGrad(() => roundTensor(u, rounding).clamp(qmin, qmax)),
    snapValue: (u) => Math.min(Math.max(roundNumber(u), qmin), qmax),
    encode: (v) => noGrad(() => roundTensor(v).clamp(qmin, qmax).to('int32')),
    decode: (c, dtype) => cast(c, dtype),
  };
}

/**
 * `{ grid: 'int', bits, signed?, narrow?, asymmetric? }` (default 8 bits signed).
 * @example intGrid({ bits: 4 }).integer; // { qmin: -8, qmax: 7 }
 */
export function intGrid(o: GridOptions): Grid {
  const bits = o.bits ?? 8;
  const signed = !o.asymmetric && (o.signed ?? true);
  if (o.asymmetric && o.signed === true) throw new Error("int grid: 'asymmetric' is an unsigned range with a zero point; it cannot also be signed");
  if (o.narrow && !signed) throw new Error("int grid: 'narrow' applies to signed grids only");
  const { qmin, qmax } = intRange(bits, { signed, narrow: o.narrow });
  const label = `${signed ? 'int' : 'uint'}${bits}${o.narrow ? 'n' : ''}${o.asymmetric ? 'a' : ''}`;
  return integerGrid('int', label, qmin, qmax, bits, o.asymmetric ? 'minmax' : 'lsq', 'ste');
}

