/**
 * @file The QAT quantizer modules on the one vocabulary (quantizer/config.ts): `WeightQuantizer`
 * (any grid, granularity and scale mode; optional HESTIA soft forward, soft.ts; oscillation
 * freezing) and `ActQuantizer` (a layer's input: learned per-tensor or dynamic scales, with
 * sharing of dynamic results, shared.ts). The arithmetic is quantizer/apply.ts; layers are modules.ts.
 */
import { amax, amin, clamp, isGradEnabled, noGrad, where, zeros, type Tensor } from '@qgrad/core';
import { Module, Parameter } from '@qgrad/nn';
import type { FloatDType, Grid } from '../grids/grid.js';
import { granularityName, groupedShape, toGroups, type Granularity, type Grouped } from '../grids/granularity.js';
import {
  codesOfView, dataScale, dequantizeView, effectiveZero, fakeQuantAbsmaxView, fakeQuantView, levelIndexOfView, valueOfLevelIndex, type ScaleAndZero,
} from '../quantizer/apply.js';
import { describePlan, resolveQuantizer, type QuantizerConfig, type QuantizerPlan } from '../quantizer/config.js';
import type { DoubleScale } from '../scale/double.js';
import { checkScale, MIN_STEP } from '../scale/rules.js';
import { sharedLookup, sharedRemember, type SharedGrid } from './shared.js';
import { SoftForward, type SoftForwardOptions } from './soft.js';

export { MIN_STEP };

interface FlagSeen {
  flag: Tensor | null;
  version: number;
}

/**
 * Whether a one-element 0/1 buffer is set, reading it only when it is another tensor or was
 * written since it was last seen set (fill_, copy_ and loadStateDict bump the version).
 */
function readFlag(flag: Tensor, seen: FlagSeen): boolean {
  if (seen.flag === flag && seen.version === flag.version) return true;
  const on = flag.item() !== 0;
  seen.flag = on ? flag : null;
  seen.version = flag.version;
  return on;
}

/**
 * LSQ+ min/max init of an unsigned grid with offset β, per group: s = (max − min)/(qmax − qmin),
 * β = min − qmin·s (min ≤ 0 ≤ max); signed grids start from the rule's scale and β = 0.
 */
function initialScale(plan: QuantizerPlan, view: Tensor): ScaleAndZero {
  const int = plan.grid.integer;
  if (plan.offset === 'beta' && int && int.qmin >= 0) {
    return noGrad(() => {
      const lo = amin(view.detach(), -1, true).minimum(0);
      const hi = amax(view.detach(), -1, true).maximum(0);
      const s = clamp(hi.sub(lo).div(int.qmax - int.qmin), MIN_STEP);
      return { scale: s, zeroPoint: lo.sub(s.mul(int.qmin)) };
    });
  }
  const r = dataScale(plan, view);
  return { scale: r.scale, zeroPoint: plan.hasZeroPoint && typeof r.zeroPoint === 'number' ? noGrad(() => r.scale.mul(0)) : r.zeroPoint };
}

/** What both quantizer modules share: the plan, stored scales, the init flag, on/off. */
abstract class QuantizerModule extends Module {
  readonly plan: QuantizerPlan;
  /** Learned (Parameter) or fixed (buffer) scales; null when dynamic. */
  scale: Tensor | null;
  zeroPoint: Tensor | null;
  /** 1 once stored scales were initialised from data (persistent, so checkpoints keep it). */
  initialized: Tensor;
  /** Quantization on/off (off: identity, for full-precision phases). */
  enabled = true;
  /** Trust radius of the 'trust' estimator and temperature of 'relaxed' (schedules may change them). */
  trust: number | undefined;
  temperature: number | undefined;
  #initSeen: FlagSeen = { flag: null, version: -1 };

  constructor(config: QuantizerConfig, role: 'weight' | 'input', who: string, scaleShape: number[], dtype: FloatDType = 'float32') {
    super();
    this.plan = resolveQuantizer(config, role, who);
    this.trust = config.trust;
    this.temperature = config.temperature;
    const p = this.plan;
    const z = () => zeros(scaleShape, { dtype });
    if (p.mode === 'learned') {
      this.scale = this.registerParameter('scale', Parameter(z().add(1)));
      this.zeroPoint = this.registerParameter('zeroPoint', p.hasZeroPoint ? Parameter(z()) : null);
    } else {
      const stored = p.mode === 'fixed';
      this.scale = this.registerBuffer('scale', stored ? z().add(1) : null);
      this.zeroPoint = this.registerBuffer('zeroPoint', stored && p.hasZeroPoint ? z() : null);
    }
    this.initialized = this.registerBuffer('initialized', zeros([1]));
  }

  get grid(): Grid {
    return this.plan.grid;
  }
  get granularity(): Granularity {
    return this.plan.granularity;
  }
  get isInitialized(): boolean {
    return readFlag(this.initialized, this.#initSeen);
  }

  /** Stores the init of `view`'s scales (in place, so optimizers keep their references). */
  protected initView(view: Tensor): void {
    noGrad(() => {
      if (this.scale) {
        const { scale, zeroPoint } = initialScale(this.plan, view);
        checkScale(scale, this.plan.who);
        this.scale.copy_(scale.reshape(this.scale.shape));
        if (this.zeroPoint && typeof zeroPoint !== 'number') this.zeroPoint.copy_(zeroPoint.reshape(this.zeroPoint.shape));
      }
      this.initialized.fill_(1);
    });
  }

  /** The scale and raw zero point used for `view`: stored, or computed from it. */
  protected scaleOf(view: Tensor, differentiable = false): ScaleAndZero {
    if (this.scale) return { scale: this.scale, zeroPoint: this.zeroPoint ?? 0 };
    return dataScale(this.plan, view, this.plan.rule, differentiable);
  }

  override extraRepr(): string {
    return describePlan(this.plan);
  }
}

/** A weight quantizer's config: the grid, granularity, scale and estimator, plus HESTIA's optional soft forward. */
export interface WeightQuantConfig extends QuantizerConfig {
  /** HESTIA's soft forward over the grid's levels (any finite grid); HestiaScheduler drives it. */
  soft?: SoftForwardOptions;
}

/** The grid of a quantizer for one tensor, as convert and inspection read it. */
export interface GridParams {
  plan: QuantizerPlan;
  /** Per group (grouped-view layout), detached. */
  scale: Tensor;
  /** Rounded, clamped integer zero point, β, or 0. */
  zeroPoint: Tensor | number;
  /** The double-quantized form of `scale` (scale option double). */
  double?: DoubleScale;
}

/**
 * Fake-quantizes a weight, viewed as a matrix [out, in·…] and grouped by its granularity.
 * @example
 * const wq = new WeightQuantizer([16, 32], { grid: 'int', bits: 4 }); // LSQ, per channel
 * wq.initFrom(w); const wHat = wq.forward(w);
 * new WeightQuantizer([16, 64], { grid: 'nf4' }); // absmax blocks of 64, straight-through
 */
export class WeightQuantizer extends QuantizerModule {
  /** The matrix the granularity groups: [out, numel/out] (1-D weights as they are). */
  readonly matrixShape: number[];
  /** Shape of the grouped view. */
  readonly viewShape: number[];
  /** HESTIA soft forward, when configured. */
  readonly soft: SoftForward | null;
  /** Oscillation freezing (inspect/oscillation.ts): where set (view layout), the level index is pinned. */
  frozenMask: Tensor | null = null;
  frozenCodes: Tensor | null = null;

  constructor(readonly weightShape: readonly number[], config: WeightQuantConfig = {}, who = 'WeightQuantizer', dtype: FloatDType = 'float32') {
    const n = weightShape.reduce((a, b) => a * b, 1);
    const matrix = weightShape.length >= 2 ? [weightShape[0]!, n / weightShape[0]!] : [...weightShape];
    const gs = groupedShape(matrix, resolveQuantizer(config, 'weight', who).granularity, who);
    super(config, 'weight', who, [...gs.view.slice(0, -1), 1], dtype);
    this.matrixShape = matrix;
    this.viewShape = gs.view;
    if (config.soft && this.plan.offset === 'beta') throw new Error(`${who}: option soft (HESTIA) relaxes over fixed levels; estimator 'lsq+' moves them with an offset`);
    this.soft = config.soft ? new SoftForward(this.plan.grid, who, config.soft) : null;
  }

  /** The grouped view of `w` (last axis: one scale's elements). */
  group(w: Tensor): Grouped {
    return toGroups(w.reshape(this.matrixShape), this.plan.granularity, this.plan.who);
  }

  /** (Re)initialises stored scales (and zero point / offset) from weight `w`, in place. */
  initFrom(w: Tensor): void {
    this.initView(this.group(w).view);
  }

  /** The on-grid weight in view layout (frozen codes pinned), with the grid it is on. */
  #hard(view: Tensor, sz: ScaleAndZero): Tensor {
    let y = fakeQuantView(this.plan, view, sz.scale, sz.zeroPoint, this);
    if (this.frozenMask && this.frozenCodes) {
      y = where(this.frozenMask, valueOfLevelIndex(this.plan, this.frozenCodes, sz.scale, effectiveZero(this.plan, sz.zeroPoint)), y);
    }
    return y;
  }

  forward(w: Tensor): Tensor {
    if (!this.enabled) return w;
    if (!this.isInitialized) this.initFrom(w);
    const g = this.group(w);
    let y: Tensor;
    const soft = this.soft;
    if (soft && !(soft.pressure === 1 && soft.effectiveTemperature === 0)) {
      const sz = this.scaleOf(g.view, soft.effectiveTemperature > 0);
      y = soft.apply(g.view, sz.scale, effectiveZero(this.plan, sz.zeroPoint), () => this.#hard(g.view, this.scaleOf(g.view)));
    } else y = this.#hard(g.view, this.scaleOf(g.view));
    return g.restore(y).reshape([...w.shape]);
  }

  /** The grid used for `w` right now (dynamic scales computed, zero points rounded). */
  gridParams(w: Tensor): GridParams {
    return noGrad(() => {
      const sz = this.scaleOf(this.group(w).view);
      return { plan: this.plan, scale: sz.scale.detach(), zeroPoint: effectiveZero(this.plan, sz.zeroPoint), ...(sz.double && { double: sz.double }) };
    });
  }

  /** Storage codes of `w` (int32, view layout): see Grid.encode. */
  codes(w: Tensor): Tensor {
    return noGrad(() => {
      const view = this.group(w).view;
      const sz = this.scaleOf(view);
      return codesOfView(this.plan, this.#hard(view, sz), sz.scale, effectiveZero(this.plan, sz.zeroPoint));
    });
  }

  /** Monotone level indices of `w` (float, view layout): integer codes, or positions among the levels. */
  levelIndex(w: Tensor): Tensor {
    return noGrad(() => {
      const view = this.group(w).view;
      const sz = this.scaleOf(view);
      return levelIndexOfView(this.plan, this.#hard(view, sz), sz.scale, effectiveZero(this.plan, sz.zeroPoint));
    });
  }

  /** Values of view-layout codes with their grid (what convert's layers compute). */
  dequantize(codes: Tensor, g: Pick<GridParams, 'scale' | 'zeroPoint'>): Tensor {
    return dequantizeView(this.plan, codes, g.scale, g.zeroPoint);
  }

  override extraRepr(): string {
    return `${describePlan(this.plan)}${this.soft ? ', soft (HESTIA)' : ''}`;
  }
}

// ---------------------------------------------------------------- activations
/** An input (activation) quantizer's config: the grid, granularity, scale and estimator, plus how LSQ counts N. */
export interface ActQuantConfig extends QuantizerConfig {
  /**
   * N in LSQ's gradient scale 1/√(N·Q_P): 'numel' (elements of the batch, what reference code
   * does, default) or 'paper' (features per example, LSQ paper).
   */
  gradScalePolicy?: 'numel' | 'paper';
  /**
   * Dynamic scales only: reuse the result when a quantizer with the same grid already quantized
   * this very tensor (unchanged since), as the q/k/v or gate/up projections of one input do
   * (default true). The one result then feeds every consumer and autograd sums their gradients.
   */
  share?: boolean;
}

/**
 * Fake-quantizes activations (a layer's input). Learned and fixed scales are per tensor and
 * initialise from the first batch seen; dynamic ones follow every batch (any granularity).
 * @example const aq = new ActQuantizer({ bits: 4, signed: false }); const xHat = aq.forward(x);
 */
export class ActQuantizer extends QuantizerModule {
  readonly gradScalePolicy: 'numel' | 'paper';
  /** Share dynamic quantizations of one input tensor with same-grid quantizers (see {@link ActQuantConfig.share}). */
  share: boolean;

  constructor(config: ActQuantConfig = {}, who = 'ActQuantizer') {
    super(config, 'input', who, [1, 1]);
    this.gradScalePolicy = config.gradScalePolicy ?? 'numel';
    this.share = config.share ?? true;
  }

  /** Initialises a stored scale (and β) from a batch, in place. */
  initFrom(x: Tensor): void {
    this.initView(x.reshape([1, x.numel()]));
  }

  /** The grid for batch `x` (dynamic scales computed from it), in the grouped-view layout of `x`. */
  gridParams(x: Tensor): GridParams {
    return noGrad(() => {
      const sz = this.scale ? { scale: this.scale, zeroPoint: this.zeroPoint ?? 0 } : dataScale(this.plan, toGroups(x, this.plan.granularity, this.plan.who).view);
      return { plan: this.plan, scale: sz.scale.detach(), zeroPoint: effectiveZero(this.plan, sz.zeroPoint) };
    });
  }

  forward(x: Tensor): Tensor {
    if (!this.enabled) return x;
    if (!this.scale) return this.share && this.plan.deterministic ? this.#shared(x) : this.#dynamic(x);
    if (!this.isInitialized) this.initFrom(x);
    const view = x.reshape([1, x.numel()]);
    const lsqN = this.gradScalePolicy === 'paper' ? x.numel() / (x.shape[0] ?? 1) : x.numel();
    return fakeQuantView(this.plan, view, this.scale, this.zeroPoint ?? 0, { trust: this.trust, temperature: this.temperature, lsqN }).reshape([...x.shape]);
  }

  #dynamic(x: Tensor): Tensor {
    const g = toGroups(x, this.plan.granularity, this.plan.who);
    // per-token int absmax: scale and x̂ in one kernel pass
    const fused = fakeQuantAbsmaxView(this.plan, g.view, this);
    if (fused) return g.restore(fused);
    const sz = dataScale(this.plan, g.view);
    return g.restore(fakeQuantView(this.plan, g.view, sz.scale, sz.zeroPoint, this));
  }

  /** #dynamic(x), or the result a same-grid quantizer computed for this very x while it still holds (shared.ts). */
  #shared(x: Tensor): Tensor {
    const p = this.plan;
    const grid: SharedGrid = {
      kind: this.constructor, grid: p.grid.label, granularity: granularityName(p.granularity), rule: JSON.stringify(p.rule), estimator: p.estimator,
      rounding: p.rounding, trust: this.trust, temperature: this.temperature, training: this.training,
    };
    const recorded = isGradEnabled() && x.requiresGrad;
    const hit = sharedLookup(x, grid, recorded);
    if (hit) return hit;
    const out = this.#dynamic(x);
    sharedRemember(x, grid, recorded, out);
    return out;
  }
}
