/**
 * @file Oscillation tracking of quantized weights (Nagel et al. 2022, as in OFQ's
 * `TrackOscillation`, methods.md §8): per weight, integer-code flips, oscillations (a flip
 * against the direction of the previous flip) with an EMA frequency, and optional freezing of
 * weights that oscillate too often to R(EMA of their code).
 */
import { fromTypedArray, type Tensor } from '@qgrad/core';
import type { Module } from '@qgrad/nn';
import { isQuantLayer, type QuantLayer } from '../qat/modules.js';
import { roundNumber as rne } from '../grids/int.js';

/** Options of the oscillation tracker: the EMA momentum and an optional freezing threshold. */
export interface OscillationOptions {
  /** EMA momentum m of the oscillation frequency and of the integer value (default 0.01). */
  momentum?: number;
  /** Freeze weights whose EMA oscillation frequency exceeds this (≥ 2–3× momentum); off when omitted. */
  freezeThreshold?: number;
}

/** One layer's oscillation counts: how often its integer codes flipped back and forth, and how many weights are frozen. */
export interface OscillationRow {
  name: string;
  numel: number;
  steps: number;
  /** Code changes summed over weights and steps. */
  flips: number;
  /** Flips whose direction reverses the weight's previous flip. */
  oscillations: number;
  /** flips / (numel · steps). */
  flipRate: number;
  oscillationRate: number;
  /** Weights whose EMA frequency is above the threshold (or above momentum when none is set). */
  oscillating: number;
  frozen: number;
}

interface Track {
  name: string;
  layer: QuantLayer;
  prev: Float64Array | null;
  dirPrev: Int8Array;
  ema: Float64Array;
  emaInt: Float64Array;
  frozen: Uint8Array;
  frozenCodes: Float64Array;
  steps: number;
  flips: number;
  oscillations: number;
}

/**
 * Call `update()` after every optimizer step; `report()` gives per-layer counts.
 * @example
 * const osc = new OscillationTracker(model, { freezeThreshold: 0.04 });
 * for (...) { loss.backward(); opt.step(); osc.update(); }
 * console.table(osc.report());
 */
export class OscillationTracker {
  readonly momentum: number;
  readonly freezeThreshold: number | undefined;
  readonly tracks: Track[] = [];

  constructor(model: Module, opts: OscillationOptions = {}) {
    this.momentum = opts.momentum ?? 0.01;
    this.freezeThreshold = opts.freezeThreshold;
    for (const [name, m] of model.namedModules()) {
      if (!isQuantLayer(m) || !m.weightQuantizer) continue;
      const n = m.weight.numel();
      this.tracks.push({
        name, layer: m, prev: null, dirPrev: new Int8Array(n), ema: new Float64Array(n), emaInt: new Float64Array(n),
        frozen: new Uint8Array(n), frozenCodes: new Float64Array(n), steps: 0, flips: 0, oscillations: 0,
      });
    }
    if (!this.tracks.length) throw new Error('OscillationTracker: the model has no QAT layers with weight quantizers');
  }

  /** Reads every tracked layer's integer codes and updates the counters (and freezing). */
  update(): void {
    for (const t of this.tracks) {
      const wq = t.layer.weightQuantizer!;
      if (!wq.enabled) continue;
      this.observe(t, Float64Array.from(wq.levelIndex(t.layer.weight).dataSync()));
    }
  }

  /** One step for one layer given its current codes (exposed for tests and custom loops). */
  observe(t: Track, codes: Float64Array): void {
    const m = this.momentum;
    if (!t.prev) {
      t.prev = codes;
      t.emaInt.set(codes);
      return;
    }
    t.steps++;
    let newlyFrozen = false;
    for (let i = 0; i < codes.length; i++) {
      const delta = rne(t.prev[i]! - codes[i]!);
      const dir = Math.sign(delta);
      const osc = dir !== 0 && dir * t.dirPrev[i]! === -1 ? 1 : 0;
      if (dir !== 0) {
        t.flips++;
        t.dirPrev[i] = dir; // only a change updates the remembered direction
      }
      t.oscillations += osc;
      t.ema[i] = m * osc + (1 - m) * t.ema[i]!;
      t.emaInt[i] = m * codes[i]! + (1 - m) * t.emaInt[i]!;
      if (this.freezeThreshold !== undefined && !t.frozen[i] && t.ema[i]! > this.freezeThreshold) {
        const wq = t.layer.weightQuantizer!;
        t.frozen[i] = 1;
        const int = wq.grid.integer;
        const [lo, hi] = int ? [int.qmin, int.qmax] : [0, wq.grid.levels(t.layer.weight.dtype === 'float64' ? 'float64' : 'float32').length - 1];
        t.frozenCodes[i] = Math.min(Math.max(rne(t.emaInt[i]!), lo), hi);
        newlyFrozen = true;
      }
    }
    t.prev = codes;
    if (newlyFrozen) this.#pin(t);
  }

  #pin(t: Track): void {
    const wq = t.layer.weightQuantizer!;
    const dtype = t.layer.weight.dtype;
    wq.frozenMask = fromTypedArray(Uint8Array.from(t.frozen), [...wq.viewShape], 'uint8');
    wq.frozenCodes = fromTypedArray(dtype === 'float64' ? Float64Array.from(t.frozenCodes) : Float32Array.from(t.frozenCodes), [...wq.viewShape], dtype) as Tensor;
  }

  report(): OscillationRow[] {
    const th = this.freezeThreshold ?? this.momentum;
    return this.tracks.map((t) => {
      const n = t.ema.length;
      const denom = Math.max(n * t.steps, 1);
      let oscillating = 0;
      let frozen = 0;
      for (let i = 0; i < n; i++) {
        if (t.ema[i]! > th) oscillating++;
        frozen += t.frozen[i]!;
      }
      return { name: t.name, numel: n, steps: t.steps, flips: t.flips, oscillations: t.oscillations, flipRate: t.flips / denom, oscillationRate: t.oscillations / denom, oscillating, frozen };
    });
  }
}
