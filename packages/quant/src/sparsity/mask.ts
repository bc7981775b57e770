/**
 * @file The 2:4 mask itself: top-2 of |w| in each group of four consecutive inputs, on plain
 * arrays, and `SemiStructuredMask`, the module a sparsified layer carries (magnitude with a
 * straight-through gradient, or CAST's dense scaled forward with proximal decay of the pruned
 * entries). Choosing layers and the training-step hook live in sparsify.ts.
 */
import { fromTypedArray, noGrad, ones, type Tensor } from '@qgrad/core';
import { Module } from '@qgrad/nn';
import type { WeightMask } from '../qat/modules.js';

/** How a sparsified layer learns its mask: CAST's continuous decay, or hard magnitude top-2 each forward. */
export type SparsityMethod = 'cast' | 'magnitude';
/** The supported semi-structured patterns (the one sparse tensor cores run). */
export type SparsityPattern = '2:4';

/**
 * The N:M keep-mask of a row-major [rows, K] array: in each group of M consecutive entries of a
 * row, the N largest |w| get 1, the rest 0; ties keep the lower index, NaN counts as largest so it
 * is never silently dropped. K must be a multiple of M.
 * @example nmMask(Float32Array.from([0.1, -3, 2, 0.5]), 4); // Float32Array [0, 1, 1, 0]
 */
export function nmMask(w: ArrayLike<number>, K: number, n = 2, m = 4): Float32Array {
  if (K % m !== 0) throw new Error(`nmMask: the row length ${K} is not a multiple of the group size ${m}`);
  const out = new Float32Array(w.length);
  const mag = new Float64Array(m);
  const used = new Uint8Array(m);
  for (let g = 0; g < w.length; g += m) {
    for (let j = 0; j < m; j++) {
      const v = Math.abs(w[g + j]!);
      mag[j] = Number.isNaN(v) ? Infinity : v;
      used[j] = 0;
    }
    for (let r = 0; r < n; r++) {
      let best = -1;
      for (let j = 0; j < m; j++) if (!used[j] && (best < 0 || mag[j]! > mag[best]!)) best = j;
      used[best] = 1;
      out[g + best] = 1;
    }
  }
  return out;
}

/** CAST's schedule knobs (methods-2.md §8; the decay form is a reconstruction, see sparsify's docs). */
export interface CastOptions {
  /** Final strength λ of the proximal L1 decay of pruned entries, in units of the layer's mean |w| per unit learning rate (default 2). */
  decay?: number;
  /** Steps over which λ_t ramps linearly from 0 to `decay` (default 1000). */
  rampSteps?: number;
  /** The mask is recomputed from |w| every this many steps (default 10, CAST's T1). */
  refreshEvery?: number;
  /** Learn a per-output-channel gain g (init 1) compensating the decay: W_eff = g ⊙ W (default true). */
  gain?: boolean;
}

/**
 * The 2:4 mask of one Linear weight [O, K]. `magnitude`: forward W ⊙ top2(|W|) recomputed each
 * call, backward the identity (straight-through, so pruned weights keep learning and may return).
 * `cast`: forward g ⊙ W, dense; `step(lr)` refreshes the mask every `refreshEvery` steps and
 * shrinks the pruned entries toward 0 by a ramped proximal L1 step, so sparsity arrives
 * continuously and the final hard mask removes (almost) nothing. After `harden` both are W ⊙ M
 * with a frozen M (the pruned zeros written into W).
 * @example
 * const m = new SemiStructuredMask([8, 16], 'cast', 'float32');
 * const wEff = m.maskWeight(layer.weight); // g ⊙ W while training; W ⊙ M once hardened
 */
export class SemiStructuredMask extends Module implements WeightMask {
  readonly pattern: SparsityPattern = '2:4';
  /** 1 where a weight is kept (last computed or frozen), weight dtype, weight shape. */
  mask: Tensor;
  /** CAST's per-output-channel gain [O, 1] (null for magnitude, or with `gain: false`). */
  gain: Tensor | null;
  /** Whether the mask is frozen (`harden`). */
  hardened = false;
  /** Training steps seen by `step` (CAST's schedule clock). */
  steps = 0;
  readonly cast: Required<CastOptions>;

  constructor(readonly weightShape: readonly number[], readonly method: SparsityMethod, dtype: 'float32' | 'float64', cast: CastOptions = {}, readonly who = 'SemiStructuredMask') {
    super();
    if (weightShape.length !== 2) throw new Error(`${who}: 2:4 sparsity needs a 2-D [out, in] weight, got shape [${weightShape.join(', ')}]`);
    if (weightShape[1]! % 4 !== 0) throw new Error(`${who}: 2:4 sparsity groups the ${weightShape[1]} inputs in fours; ${weightShape[1]} is not a multiple of 4 (weight shape [${weightShape.join(', ')}])`);
    if (method !== 'cast' && method !== 'magnitude') throw new Error(`${who}: method must be 'cast' or 'magnitude', got ${JSON.stringify(method)}`);
    this.cast = { decay: cast.decay ?? 2, rampSteps: cast.rampSteps ?? 1000, refreshEvery: cast.refreshEvery ?? 10, gain: cast.gain ?? true };
    this.mask = this.registerBuffer('mask', ones([...weightShape], { dtype }));
    this.gain = this.registerParameter('gain', method === 'cast' && this.cast.gain ? ones([weightShape[0]!, 1], { dtype }) : null);
  }

  /** Recomputes the mask from |w| (no gradient), in place. */
  refresh(weight: Tensor): Tensor {
    noGrad(() => this.mask.copy_(fromTypedArray(nmMask(weight.contiguous().dataSync(), this.weightShape[1]!), [...this.weightShape], 'float32')));
    return this.mask;
  }

  maskWeight(weight: Tensor): Tensor {
    if (this.hardened) return weight.mul(this.mask);
    if (this.method === 'magnitude') {
      const m = this.refresh(weight);
      // w + (w⊙m − w) is w⊙m exactly (m ∈ {0, 1}) and has the identity as its derivative
      return weight.add(weight.mul(m).sub(weight).detach());
    }
    return this.gain ? weight.mul(this.gain) : weight;
  }

  /** λ_t: the decay strength at the current step (linear ramp to `decay`). */
  decayNow(): number {
    const { decay, rampSteps } = this.cast;
    return rampSteps <= 0 ? decay : decay * Math.min(1, this.steps / rampSteps);
  }

  /**
   * One CAST step after the optimizer's: count it, refresh the mask every `refreshEvery` steps,
   * then w ← sign(w)·max(|w| − lr·λ_t·mean|w|, 0) on the pruned entries only (kept ones are never
   * touched). Does nothing for magnitude or a hardened mask.
   */
  step(weight: Tensor, lr: number): void {
    if (this.method !== 'cast' || this.hardened) return;
    if (this.steps % this.cast.refreshEvery === 0) this.refresh(weight);
    this.steps++;
    const lam = lr * this.decayNow();
    if (!(lam > 0)) return;
    noGrad(() => {
      const w = weight.contiguous().dataSync();
      const m = this.mask.contiguous().dataSync();
      let mean = 0;
      for (let i = 0; i < w.length; i++) mean += Math.abs(w[i]!);
      const t = (lam * mean) / w.length;
      const out = w.slice();
      for (let i = 0; i < w.length; i++) {
        if (m[i]) continue;
        const a = Math.abs(w[i]!) - t;
        out[i] = a > 0 ? Math.sign(w[i]!) * a : 0;
      }
      weight.copy_(fromTypedArray(out, [...this.weightShape], weight.dtype));
    });
  }

  harden(weight: Tensor): void {
    if (this.hardened) return;
    noGrad(() => {
      if (this.gain) {
        weight.mul_(this.gain);
        this.gain.fill_(1);
      }
      weight.mul_(this.refresh(weight));
    });
    this.hardened = true;
  }

  override extraRepr(): string {
    return `pattern=${this.pattern}, method=${this.method}${this.hardened ? ', hardened' : ''}`;
  }
}
