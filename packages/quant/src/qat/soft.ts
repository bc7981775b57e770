/**
 * @file HESTIA's soft forward (methods.md §4) as a plug-in of the weight quantizer: on any grid
 * with a finite level set, q = s·Σ_k softmax(−(w/s − c_k)²/T)_k c_k with s the quantizer's scale
 * (a dynamic absmean/absmax scale is not detached, as in HESTIA), then w + P·(q − w). At T = 0 the
 * quantizer's own hard forward is used. HestiaScheduler (schedules/) drives P and T.
 */
import { keep, softQuantize, tensor, type Tensor } from '@qgrad/core';
import type { FloatDType, Grid } from '../grids/grid.js';

/** Options of HESTIA's soft forward: temperature and pressure, which `HestiaScheduler` anneals. */
export interface SoftForwardOptions {
  /** Temperature T (0 = hard); HestiaScheduler anneals it. Default 0. */
  temperature?: number;
  /** Pressure P ∈ [0, 1] of the lerp w + P·(q − w). Default 1. */
  pressure?: number;
  /** Per-tensor multiplier on T from the Hessian trace (calibrateHestia). Default 1. */
  tempScale?: number;
}

/** Finite level sets larger than this are not relaxed (int ≤ 8 bits, FP4/6, NF4, ternary, binary, codebooks). */
export const SOFT_MAX_LEVELS = 256;

/**
 * HESTIA's soft forward of a weight quantizer: a softmax over the grid's levels at temperature T, blended into w by the pressure P; at T = 0 the hard quantizer.
 * @example prepareQAT(model, { default: { weight: { grid: 'ternary', soft: { temperature: 1, pressure: 0 } } } });
 */
export class SoftForward {
  temperature: number;
  pressure: number;
  tempScale: number;
  readonly #levels = new Map<FloatDType, Tensor>();

  constructor(readonly grid: Grid, who: string, o: SoftForwardOptions = {}) {
    const n = grid.integer ? grid.integer.qmax - grid.integer.qmin + 1 : grid.codeMax - grid.codeMin + 1;
    if (n > SOFT_MAX_LEVELS) throw new Error(`${who}: option soft (HESTIA) relaxes over the grid's levels; grid '${grid.label}' has ${n}, more than ${SOFT_MAX_LEVELS} (use int ≤ 8 bits, FP4, NF4, ternary, binary or a codebook)`);
    this.temperature = o.temperature ?? 0;
    this.pressure = o.pressure ?? 1;
    this.tempScale = o.tempScale ?? 1;
  }

  /** The effective temperature T·tempScale (0: hard). */
  get effectiveTemperature(): number {
    return this.temperature * this.tempScale;
  }

  levels(dtype: FloatDType): Tensor {
    let t = this.#levels.get(dtype);
    // kept: made lazily inside the first forward, often inside a trainStep, which would
    // otherwise release it while this cache still hands it out
    if (!t) this.#levels.set(dtype, (t = keep(tensor(Array.from(this.grid.levels(dtype)), { dtype }))));
    return t;
  }

  /**
   * w + P·(q − w) for a grouped view `w` with scale `s` (shape [..., 1]) and zero point z (integer
   * grids; grid units): soft q = s·(ũ(w/s + z) − z), or `hard()` at T = 0.
   */
  apply(w: Tensor, s: Tensor, z: Tensor | number, hard: () => Tensor): Tensor {
    const P = this.pressure;
    if (P === 0) return w;
    const T = this.effectiveTemperature;
    let q: Tensor;
    if (T > 0) {
      const u = typeof z === 'number' && z === 0 ? w.div(s) : w.div(s).add(z);
      const soft = softQuantize(u, this.levels(w.dtype as FloatDType), T + 1e-6); // dũ/du = (2/T)·Var_p(c)
      q = (typeof z === 'number' && z === 0 ? soft : soft.sub(z)).mul(s);
    } else q = hard();
    return P === 1 ? q : w.add(q.sub(w).mul(P));
  }
}
