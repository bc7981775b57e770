/**
 * @file The one `Grid` interface every quantizer, `convert`, inspection and the testing kit read,
 * and `LevelSet`, the sorted-level helper that level grids (NF4, codebook, binary) snap with.
 * Each grid is one file beside this one; the list of grids is the plain table in table.ts.
 */
import { fromTypedArray, type Tensor } from '@qgrad/core';
import type { ScaleRule } from '../scale/rules.js';
import type { Granularity } from './granularity.js';

/** Float dtypes quantizers run in. */
export type FloatDType = 'float32' | 'float64';

/** How a value is rounded onto the grid (FP and integer grids; level grids take the nearest level). */
export type Rounding = 'halfEven' | 'halfAway' | 'floor';

/** The grid options of a config: which ones a grid reads is its own business; others are errors. */
export interface GridOptions {
  /** int: 1–16 (signed ≥ 2; default 8); codebook: only checks the level count. */
  bits?: number;
  /** codebook: the levels, in scale units (any order; duplicates are errors). */
  levels?: readonly number[];
  /** int: signed (default) or unsigned [0, 2^b − 1]. */
  signed?: boolean;
  /** int: symmetric narrow range [−(2^(b−1) − 1), 2^(b−1) − 1]. */
  narrow?: boolean;
  /** int: unsigned range with a zero point (an offset β under 'lsq+'). */
  asymmetric?: boolean;
}

/** Which scale a grid takes: any positive real per group, or MX's power-of-two per block from the data (stored as E8M0). */
export type GridScale = { kind: 'real' } | { kind: 'pow2'; blockSize: number; emax: number };

/**
 * A quantization grid in scale units: x̂ = s·snap(x/s) (integer grids: s·(snap(x/s + z) − z)).
 * Hard operations carry no gradient; quantizers add the estimator's.
 */
export interface Grid {
  /** Its name in the table (table.ts), as configs spell it. */
  readonly name: string;
  /** 'int4', 'uint8', 'e4m3', 'mxfp4', 'nf4', 'codebook16' … */
  readonly label: string;
  /** Smallest and largest level. */
  readonly lo: number;
  readonly hi: number;
  /** Consecutive integers qmin … qmax (int, ternary): the fused fakeQuantize kernel and LSQ/LSQ+ apply. */
  readonly integer: { qmin: number; qmax: number } | null;
  /** Levels above zero (LSQ's Q_P). */
  readonly positiveLevels: number;
  readonly scale: GridScale;
  /** Information per code: log2(#levels) (ternary 1.585), or the format's width for FP. */
  readonly idealBits: number;
  /** Codes are integers in [codeMin, codeMax] (int: q itself; FP: the bit pattern; level grids: the index). */
  readonly codeMin: number;
  readonly codeMax: number;
  /** Default scale rule and estimator for weights, and a granularity the grid needs (NF4 blocks, MX blocks). */
  readonly defaults: { scaleRule: ScaleRule; estimator: string; granularity?: Granularity };
  /** Sorted levels as `dtype` holds them (null where too many to list: int above 16 bits never occurs). Throws on levels that collide in `dtype`. */
  levels(dtype: FloatDType): Float64Array;
  /** Nearest level of every element (x in scale units), no gradient. */
  snap(u: Tensor, rounding?: Rounding): Tensor;
  /** The same on one number (scale fitting). */
  snapValue(u: number): number;
  /** int32 codes of on-grid values (an off-grid value gets its nearest level's code). */
  encode(v: Tensor): Tensor;
  /** Values (in scale units, `dtype`) of codes. */
  decode(codes: Tensor, dtype: FloatDType): Tensor;
}

/**
 * Bits a code takes when stored: packed 1, 2 or 4 per field, else 8, 16 or 32.
 * @example storedBits({ codeMin: -8, codeMax: 7 }); // 4
 */
export function storedBits(g: Pick<Grid, 'codeMin' | 'codeMax'>): number {
  const need = Math.max(1, Math.ceil(Math.log2(g.codeMax - g.codeMin + 1)));
  return need <= 1 ? 1 : need <= 2 ? 2 : need <= 4 ? 4 : need <= 8 ? 8 : need <= 16 ? 16 : 32;
}

const round32 = (v: number) => Math.fround(v);

/**
 * A sorted set of distinct finite levels with nearest-level snapping by binary search over the
 * midpoints (a tie goes to the upper level, so binary maps 0 to +1). Levels are rounded to the
 * tensor's dtype first; two that collide there are an error naming both.
 * @example const levels = new LevelSet('my grid', [-1, -0.25, 0, 0.25, 1]);
 */
export class LevelSet {
  readonly values: readonly number[];
  #byDtype = new Map<FloatDType, { levels: Float64Array; mids: Float64Array }>();

  constructor(readonly owner: string, values: readonly number[]) {
    if (!values.length) throw new Error(`${owner}: needs at least one level`);
    for (const v of values) if (!Number.isFinite(v)) throw new Error(`${owner}: level ${v} is not finite`);
    const sorted = [...values].sort((a, b) => a - b);
    for (let i = 1; i < sorted.length; i++) if (sorted[i] === sorted[i - 1]) throw new Error(`${owner}: level ${sorted[i]} appears twice`);
    this.values = sorted;
  }

  /** Levels and midpoints as `dtype` holds them. */
  table(dtype: FloatDType): { levels: Float64Array; mids: Float64Array } {
    let t = this.#byDtype.get(dtype);
    if (!t) {
      const levels = Float64Array.from(this.values, dtype === 'float32' ? round32 : (v) => v);
      for (let i = 1; i < levels.length; i++) {
        if (!(levels[i]! > levels[i - 1]!)) throw new Error(`${this.owner}: levels ${this.values[i - 1]} and ${this.values[i]} are the same value in ${dtype} (${levels[i]}); levels must be distinct in the tensor's dtype`);
        if (!Number.isFinite(levels[i]!) || !Number.isFinite(levels[0]!)) throw new Error(`${this.owner}: levels overflow ${dtype}`);
      }
      const mids = new Float64Array(Math.max(levels.length - 1, 0));
      for (let i = 0; i < mids.length; i++) mids[i] = levels[i]! / 2 + levels[i + 1]! / 2;
      t = { levels, mids };
      this.#byDtype.set(dtype, t);
    }
    return t;
  }

  /** Index of the nearest level: the number of midpoints ≤ u (NaN → 0). */
  static indexIn(mids: Float64Array, u: number): number {
    let lo = 0;
    let hi = mids.length;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (u >= mids[m]!) lo = m + 1;
      else hi = m;
    }
    return lo;
  }

  indexOf(u: number, dtype: FloatDType = 'float64'): number {
    return LevelSet.indexIn(this.table(dtype).mids, u);
  }

  /** Nearest level of every element (dtype of u). */
  snap(u: Tensor): Tensor {
    const dtype = u.dtype as FloatDType;
    const { levels, mids } = this.table(dtype);
    const src = u.contiguous().dataSync();
    const out = dtype === 'float64' ? new Float64Array(src.length) : new Float32Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = levels[LevelSet.indexIn(mids, src[i]!)]!;
    return fromTypedArray(out, [...u.shape], dtype);
  }

  /** Level indices (int32) of every element's nearest level. */
  index(u: Tensor): Tensor {
    const { mids } = this.table(u.dtype as FloatDType);
    const src = u.contiguous().dataSync();
    const out = new Int32Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = LevelSet.indexIn(mids, src[i]!);
    return fromTypedArray(out, [...u.shape], 'int32');
  }

  /** Levels at indices (out-of-range indices are an error). */
  at(codes: Tensor, dtype: FloatDType): Tensor {
    const { levels } = this.table(dtype);
    const src = codes.contiguous().dataSync();
    const out = dtype === 'float64' ? new Float64Array(src.length) : new Float32Array(src.length);
    for (let i = 0; i < src.length; i++) {
      const v = levels[src[i]!];
      if (v === undefined) throw new Error(`${this.owner}: code ${src[i]} is outside 0…${levels.length - 1}`);
      out[i] = v;
    }
    return fromTypedArray(out, [...codes.shape], dtype);
  }

  snapValue(u: number): number {
    return this.values[this.indexOf(u)]!;
  }

  /** Half the gap between the two largest levels (QuEST's trust radius on non-uniform grids). */
  get topHalfGap(): number {
    const v = this.values;
    return v.length < 2 ? Infinity : (v[v.length - 1]! - v[v.length - 2]!) / 2;
  }
}

/**
 * A grid over an explicit level set (NF4, codebooks, binary): nearest-level snapping, codes are
 * level indices 0 … K − 1.
 * @example const sf4 = new LevelSet('sf4 grid', [-1, -0.5, -0.25, 0, 0.25, 0.5, 1]);
 * const grid = levelGrid('sf4', 'SF4', sf4, { scaleRule: 'absmax', estimator: 'ste' });
 */
export function levelGrid(name: string, label: string, set: LevelSet, defaults: Grid['defaults'], idealBits = Math.log2(set.values.length)): Grid {
  const v = set.values;
  return {
    name, label, lo: v[0]!, hi: v[v.length - 1]!, integer: null, positiveLevels: v.filter((l) => l > 0).length, scale: { kind: 'real' },
    idealBits, codeMin: 0, codeMax: v.length - 1, defaults,
    levels: (dtype) => set.table(dtype).levels,
    snap: (u) => set.snap(u),
    snapValue: (u) => set.snapValue(u),
    encode: (x) => set.index(x),
    decode: (c, dtype) => set.at(c, dtype),
  };
}
