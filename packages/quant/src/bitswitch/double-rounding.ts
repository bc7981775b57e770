/**
 * @file Double Rounding bit-switching (methods.md §7; the paper's code was not readable, so this
 * follows the reconstruction recorded there): one model stored as h-bit integer codes
 * W_h = clip(R(W/s_h)) with a learned per-channel s_h; a lower width l re-rounds those codes,
 * W_l = clip(R(W_h/2^(h−l))), dequantized as s_h·2^(h−l)·W_l. Training is joint over widths with
 * straight-through rounding (LSQ's scale gradient by autograd) and ALRS, a per-width factor on the
 * scale's gradient (default 2^−(h−l), the notes' candidate rule). R is round-half-to-even.
 */
import { linear, noGrad, quantRound, type Tensor } from '@qgrad/core';
import { Linear, Module, Parameter } from '@qgrad/nn';
import { roundNumber } from '../grids/int.js';
import { matchesName, replaceSubmodule, type NamePattern } from '../qat/prepare.js';

/** Re-rounds signed h-bit codes to l bits: clip(R(c/2^(h−l)), −2^(l−1), 2^(l−1) − 1). Integer only. @example reroundCodes([127, -3], 8, 4); // [8 → 7 clipped, 0] */
export function reroundCodes(codes: ArrayLike<number>, high: number, low: number): Int32Array {
  if (!(low >= 1 && low <= high)) throw new Error(`reroundCodes: low width must be in [1, ${high}], got ${low}`);
  const k = 2 ** (high - low);
  const lo = -(2 ** (low - 1));
  const hi = 2 ** (low - 1) - 1;
  return Int32Array.from(codes, (c) => Math.min(hi, Math.max(lo, roundNumber(c / k))));
}

/** Straight-through round then clip: forward clip(R(u)), gradient 1 inside the range and 0 outside. */
function steRoundClip(u: Tensor, lo: number, hi: number): Tensor {
  return quantRound(u).clamp(lo, hi);
}

/** Options of bit-switching by double rounding: the switchable widths and the per-width scale-gradient factor (ALRS). */
export interface BitSwitchOptions {
  /** The widths trained and switchable; the largest is the stored one (default [8, 6, 4]). */
  bits?: number[];
  /** ALRS: factor on the scale's gradient at width l (true: 2^−(h−l), default; false: none). */
  alrs?: boolean | ((high: number, low: number) => number);
}

/**
 * Linear layer whose weight is read at any of `bits` from one h-bit stored form.
 * @example
 * const l = BitSwitchLinear.from(new Linear(64, 32), { bits: [8, 4] });
 * l.bits = 4; l.forward(x); // 4-bit weights re-rounded from the 8-bit codes
 */
export class BitSwitchLinear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  /** Per-output-channel scale of the highest width [out, 1]. */
  scale: Tensor;
  readonly widths: number[];
  readonly high: number;
  /** The width used by forward (switch with setBitWidth). */
  bits: number;
  readonly alrs: (high: number, low: number) => number;

  constructor(src: Linear, o: BitSwitchOptions = {}) {
    super();
    const widths = [...(o.bits ?? [8, 6, 4])].sort((a, b) => b - a);
    if (!widths.length || widths.some((b) => !Number.isInteger(b) || b < 2 || b > 16)) throw new Error(`BitSwitchLinear: bits must be integers in [2, 16], got [${o.bits?.join(', ')}]`);
    this.widths = widths;
    this.high = widths[0]!;
    this.bits = this.high;
    this.weight = this.registerParameter('weight', src.weight);
    this.bias = this.registerParameter('bias', src.bias);
    const qmax = 2 ** (this.high - 1) - 1;
    this.scale = this.registerParameter('scale', Parameter(noGrad(() => src.weight.detach().abs().amax(-1, true).clamp(1e-8).div(qmax))));
    const a = o.alrs ?? true;
    this.alrs = typeof a === 'function' ? a : a ? (h, l) => 2 ** -(h - l) : () => 1;
  }
  static from(l: Linear, o: BitSwitchOptions = {}): BitSwitchLinear {
    return new BitSwitchLinear(l, o);
  }

  /** The dequantized weight at width `bits`: s·2^(h−l)·clip(R(clip(R(W/s))/2^(h−l))). */
  quantizedWeight(bits = this.bits): Tensor {
    if (!this.widths.includes(bits)) throw new Error(`BitSwitchLinear: width ${bits} is not one of the trained widths [${this.widths.join(', ')}]`);
    const h = this.high;
    const lambda = bits === h ? 1 : this.alrs(h, bits);
    const s = lambda === 1 ? this.scale : this.scale.detach().add(this.scale.sub(this.scale.detach()).mul(lambda)); // value s, gradient λ·∂/∂s
    const wh = steRoundClip(this.weight.div(s), -(2 ** (h - 1)), 2 ** (h - 1) - 1);
    if (bits === h) return wh.mul(s);
    const k = 2 ** (h - bits);
    return steRoundClip(wh.div(k), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).mul(s.mul(k));
  }

  /** The stored form: h-bit integer codes (int32, weight shape). */
  storedCodes(): Tensor {
    return noGrad(() => this.weight.div(this.scale).round().clamp(-(2 ** (this.high - 1)), 2 ** (this.high - 1) - 1).to('int32'));
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.quantizedWeight(), this.bias);
  }
  override extraRepr(): string {
    return `bits=${this.bits} of [${this.widths.join(', ')}]`;
  }
}

/**
 * Replaces matching Linear layers by BitSwitchLinear (shared weight and bias); returns the names.
 * @example prepareBitSwitch(model, { bits: [8, 6, 4] }, { skip: ['head'] }); setBitWidth(model, 4);
 */
export function prepareBitSwitch(model: Module, o: BitSwitchOptions = {}, sel: { match?: NamePattern | NamePattern[]; skip?: NamePattern[] } = {}): string[] {
  const names: string[] = [];
  for (const [name, m] of [...model.namedModules()]) {
    if (!(m instanceof Linear) || name === '' || (sel.match && !matchesName(name, sel.match)) || (sel.skip && matchesName(name, sel.skip))) continue;
    replaceSubmodule(model, name, BitSwitchLinear.from(m, o));
    names.push(name);
  }
  return names;
}

/**
 * Switches every BitSwitchLinear of `model` to `bits` (one call at inference).
 * @example setBitWidth(model, 4); // every BitSwitchLinear now runs on 4-bit weights, rounded again from its stored highest-precision ones
 */
export function setBitWidth(model: Module, bits: number): void {
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof BitSwitchLinear)) continue;
    if (!m.widths.includes(bits)) throw new Error(`setBitWidth: width ${bits} is not one of the trained widths [${m.widths.join(', ')}]`);
    m.bits = bits;
  }
}

/**
 * Joint training loss over widths: Σ_l loss() with the model at width l (then back to the highest).
 * @example jointLoss(model, [8, 6, 4], () => crossEntropy(model.forward(x), y)).backward();
 */
export function jointLoss(model: Module, widths: number[], loss: () => Tensor): Tensor {
  let total: Tensor | null = null;
  for (const b of widths) {
    setBitWidth(model, b);
    const l = loss();
    total = total ? total.add(l) : l;
  }
  setBitWidth(model, Math.max(...widths));
  return total!;
}
