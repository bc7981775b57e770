/**
 * @file FP ExMy minifloat grids (grids 'e4m3' (OCP "fn"), 'e5m2', 'e3m2', 'e2m3', 'e2m1', or any
 * ExMy): the exact set of representable values, round-to-nearest (half-even by default) onto it
 * with saturation, and codes that are the format's bit patterns. MX block scaling is in mx.ts.
 */
import { fpRound, fromTypedArray, noGrad, type FpRoundGrid, type Tensor } from '@qgrad/core';
import { LevelSet, type FloatDType, type Grid, type Rounding } from './grid.js';

/** A minifloat ExMy format: exponent and mantissa bits, bias, and how it spends its top codes on specials. */
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

/** The minifloat formats the FP grids use (FP8, FP6, FP4), by name. */
export const FP_FORMATS = {
  e4m3fn: { name: 'e4m3fn', exp: 4, man: 3, bias: 7, special: 'fn' },
  e5m2: { name: 'e5m2', exp: 5, man: 2, bias: 15, special: 'ieee' },
  e2m1: { name: 'e2m1', exp: 2, man: 1, bias: 1, special: 'none' },
  e3m2: { name: 'e3m2', exp: 3, man: 2, bias: 3, special: 'none' },
  e2m3: { name: 'e2m3', exp: 2, man: 3, bias: 1, special: 'none' },
} as const satisfies Record<string, FpFormat>;

/** The name of a format in FP_FORMATS. */
export type FpFormatName = keyof typeof FP_FORMATS;

/**
 * The FpFormat a name stands for (a format object is returned as is); throws naming the known formats.
 * @example fpFormat('e4m3fn').man; // 3
 */
export function fpFormat(f: FpFormatName | FpFormat): FpFormat {
  if (typeof f !== 'string') return f;
  const r = FP_FORMATS[f];
  if (!r) throw new Error(`fpFormat: unknown format '${f}'; known: ${Object.keys(FP_FORMATS).join(', ')}`);
  return r;
}

/**
 * The value of one code (sign s, exponent field e, mantissa field m), or NaN/±Infinity.
 * @example decodeFp(fpFormat('e2m1'), 0, 2, 1); // 3
 */
export function decodeFp(f: FpFormat, s: number, e: number, m: number): number {
  const top = 2 ** f.exp - 1;
  const sg = s ? -1 : 1;
  if (f.special === 'ieee' && e === top) return m === 0 ? sg * Infinity : NaN;
  if (f.special === 'fn' && e === top && m === 2 ** f.man - 1) return NaN;
  if (e === 0) return sg * 2 ** (1 - f.bias) * (m / 2 ** f.man);
  return sg * 2 ** (e - f.bias) * (1 + m / 2 ** f.man);
}

/**
 * Every finite representable value, sorted, with ±0 collapsed into one 0.
 * @example fpValues('e2m1'); // [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]
 */
export function fpValues(format: FpFormatName | FpFormat): number[] {
  const f = fpFormat(format);
  const set = new Set<number>();
  for (let s = 0; s < 2; s++) for (let e = 0; e < 2 ** f.exp; e++) for (let m = 0; m < 2 ** f.man; m++) {
    const v = decodeFp(f, s, e, m);
    if (Number.isFinite(v)) set.add(v === 0 ? 0 : v);
  }
  return [...set].sort((a, b) => a - b);
}

/**
 * Largest finite value, smallest normal exponent and the top exponent of normals.
 * @example fpLimits('e4m3fn').max; // 448
 */
export function fpLimits(format: FpFormatName | FpFormat): { max: number; emin: number; emax: number } {
  const f = fpFormat(format);
  const v = fpValues(f);
  const max = v[v.length - 1]!;
  return { max, emin: 1 - f.bias, emax: Math.floor(Math.log2(max)) };
}

/**
 * The `fpRound` grid of a format: its mantissa bits, emin = 1 − bias and largest finite value.
 * @example fpRoundGrid('e4m3fn'); // { mantissaBits: 3, minExponent: -6, max: 448 }
 */
export function fpRoundGrid(format: FpFormatName | FpFormat): FpRoundGrid {
  const f = fpFormat(format);
  return { mantissaBits: f.man, minExponent: 1 - f.bias, max: fpLimits(f).max };
}

/**
 * Rounds onto the format's values: e = max(⌊log2|x|⌋, emin), step 2^(e − M), x̂ = R(x/step)·step,
 * saturated to ±max (±∞ too; NaN stays NaN). Half-even by default (OCP/IEEE), or half away from
 * zero (microxcaling's "nearest"), or floor. One kernel pass (core's `fpRound`). Forward only (no
 * gradient): wrap it with an estimator to train through it (the quantizers snap with fpGrid instead).
 * @example roundToFp(tensor([0.3, 5, 100]), 'e2m1').toArray(); // [0.5, 4, 6] — 0.25 would go to 0
 */
export function roundToFp(x: Tensor, format: FpFormatName | FpFormat, rounding: Rounding = 'halfEven'): Tensor {
  const grid = fpRoundGrid(format);
  return noGrad(() => fpRound(x, grid, { rounding }));
}

/** Bit pattern of each finite value (+0 for zero) and the value of each of the 2^(1+E+M) patterns. */
function codeTables(f: FpFormat): { codeOf: Map<number, number>; valueOf: Float64Array } {
  const width = 1 + f.exp + f.man;
  const valueOf = new Float64Array(2 ** width);
  const codeOf = new Map<number, number>();
  for (let code = valueOf.length - 1; code >= 0; code--) {
    const v = decodeFp(f, code >> (f.exp + f.man), (code >> f.man) & (2 ** f.exp - 1), code & (2 ** f.man - 1));
    valueOf[code] = v;
    if (Number.isFinite(v)) codeOf.set(v, code); // descending: +0 (code 0) wins over −0
  }
  return { codeOf, valueOf };
}

/**
 * The grid of one FP format: levels are its finite values (±0 one level), snapping is
 * `roundToFp` (saturating), codes are bit patterns (E4M3: OCP's bytes; E2M1: nibbles).
 * @example fpGrid('e2m1', 'e2m1').hi; // 6
 */
export function fpGrid(name: string, format: FpFormatName | FpFormat): Grid {
  const f = fpFormat(format);
  const values = fpValues(f);
  const { codeOf, valueOf } = codeTables(f);
  const width = 1 + f.exp + f.man;
  const set = new LevelSet(`${name} grid`, values);
  // snapping by binary search over the midpoints (as the level grids), ties settled like roundToFp:
  // half-even takes the value whose mantissa is even, half-away the larger magnitude
  const even = Uint8Array.from(values, (v) => 1 - (codeOf.get(v)! & 1));
  const snap = (u: Tensor, rounding: Rounding = 'halfEven'): Tensor => {
    const { mids } = set.table('float64');
    const src = u.contiguous().dataSync();
    const out = u.dtype === 'float64' ? new Float64Array(src.length) : new Float32Array(src.length);
    for (let i = 0; i < src.length; i++) {
      const v = src[i]!;
      let k = LevelSet.indexIn(mids, v);
      if (k > 0 && v === mids[k - 1]) {
        const lower = k - 1;
        if (rounding === 'halfEven' ? even[lower] === 1 : rounding === 'halfAway' ? Math.abs(values[lower]!) > Math.abs(values[k]!) : true) k = lower;
      }
      out[i] = v === v ? values[k]! : NaN;
    }
    return fromTypedArray(out, [...u.shape], u.dtype);
  };
  return {
    name, label: name, lo: values[0]!, hi: values[values.length - 1]!, integer: null, positiveLevels: values.filter((v) => v > 0).length,
    scale: { kind: 'real' }, idealBits: width, codeMin: 0, codeMax: 2 ** width - 1,
    defaults: { scaleRule: 'absmax', estimator: 'ste' },
    levels: (_dtype: FloatDType) => Float64Array.from(values), // every FP4/6/8 value is exact in float32
    snap,
    snapValue: (u) => set.snapValue(Math.min(Math.max(u, values[0]!), values[values.length - 1]!)),
    encode(v) {
      // the nearest value's pattern: exact for on-grid values, robust to x̂/s being a rounding off
      const src = v.contiguous().dataSync();
      const { mids } = set.table('float64');
      const out = new Int32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = codeOf.get(values[LevelSet.indexIn(mids, src[i]!)]!)!;
      return fromTypedArray(out, [...v.shape], 'int32');
    },
    decode(codes, dtype) {
      const src = codes.contiguous().dataSync();
      const out = dtype === 'float64' ? new Float64Array(src.length) : new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = valueOf[src[i]!]!;
      return fromTypedArray(out, [...codes.shape], dtype);
    },
  };
}
