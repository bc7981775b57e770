/**
 * @file The QAT quantizer modules: `WeightQuantizer` (int / ternary / binary / HESTIA grids;
 * per-tensor, per-channel or per-group; learned LSQ/LSQ+ scales as Parameters, static or
 * dynamic scales) and `ActQuantizer` (per-tensor learned LSQ/LSQ+, or dynamic per-tensor /
 * per-token absmax). Both call core's `fakeQuantize`. Layers using them are in modules.ts.
 */
import {
  abs, add, amax, clamp, div, fakeQuantize, getEstimator, isGradEnabled, mean, mul, noGrad, norm, round, softQuantize, sub, where, zeros,
  type Estimator, type FakeQuantizeOptions, type Tensor,
} from '@qgrad/core';
import { Module, Parameter } from '@qgrad/nn';
import { initScale, rne, type GridExtent, type ScaleInit } from '../grids/scale-init.js';
import { sharedLookup, sharedRemember, type SharedGrid } from './shared.js';

/** Smallest step handed out by dynamic scales (BitNet's 1e−5 clamp). */
export const MIN_STEP = 1e-5;

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

/** One scale for the whole tensor, one per output channel (row), or one per `group` consecutive inputs of a row. */
export type WeightGranularity = 'tensor' | 'channel' | { group: number };
/** Uniform integer grid, {−1, 0, 1}·s (BitNet), {−α, +α} (sign), or HESTIA's annealed soft ternary grid. */
export type WeightGrid = 'int' | 'ternary' | 'binary' | 'hestia';
/** learned: a Parameter trained by the estimator's scale gradient (LSQ); static: fixed at init; dynamic: recomputed from the weight every forward. */
export type ScaleMode = 'learned' | 'static' | 'dynamic';
type Rounding = 'halfEven' | 'halfAway' | 'floor';

export interface WeightQuantConfig {
  grid?: WeightGrid;
  /** Bits of the 'int' grid (default 8): signed [−2^(b−1), 2^(b−1)−1], or [0, 2^b−1] when asymmetric. */
  bits?: number;
  /** Symmetric narrow range [−(2^(b−1)−1), 2^(b−1)−1]. */
  narrow?: boolean;
  /** Default 'channel'. */
  granularity?: WeightGranularity;
  /** Core estimator name (default 'lsq' on the int grid, 'ste' on ternary/binary). */
  estimator?: string | Estimator;
  /** Default 'learned' for lsq/lsq+, else 'dynamic'. */
  scaleMode?: ScaleMode;
  /** Default 'lsq' on the int grid (or 'minmax' when asymmetric), 'absmean' on ternary/binary. */
  scaleInit?: ScaleInit;
  /** Unsigned range with a zero point (an offset β under 'lsq+'). */
  asymmetric?: boolean;
  rounding?: Rounding;
  /** Scale-gradient factor (default 'lsq' = 1/√(N·qmax) for learned scales, else 1). */
  gradScale?: number | 'lsq';
  /** Options for the 'trust' and 'relaxed' estimators. */
  trust?: number;
  temperature?: number;
}

/** The resolved grid of a quantizer: what convert and inspect read. */
export interface GridParams {
  qmin: number;
  qmax: number;
  /** Steps, broadcastable to the [A, B, C] view. */
  scale: Tensor;
  /** Integer-domain zero point (already rounded/clamped) or, when offset is 'beta', the real offset. */
  zeroPoint: Tensor | number;
  offset: 'zeroPoint' | 'beta';
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;
const isLsq = (e: string | Estimator) => ['lsq', 'lsq+'].includes(typeof e === 'string' ? e : e.name);

/** The [A, B, C] view a weight of `shape` is quantized in: one scale per (a, b). */
export function groupView(shape: readonly number[], g: WeightGranularity, who = 'WeightQuantizer'): [number, number, number] {
  const n = shape.reduce((a, b) => a * b, 1);
  if (g === 'tensor') return [1, 1, n];
  const out = shape[0] ?? 1;
  const k = n / out;
  if (g === 'channel') return [out, 1, k];
  if (!Number.isInteger(g.group) || g.group < 1 || k % g.group) throw new Error(`${who}: group size ${g.group} must divide the ${k} inputs per row of a weight of shape ${fmt(shape)}`);
  return [out, k / g.group, g.group];
}

/** Short text for summaries: 'tensor', 'channel', 'group128'. */
export function granularityName(g: WeightGranularity): string {
  return typeof g === 'string' ? g : `group${g.group}`;
}

/**
 * Fake-quantizes a weight. Learned scales are a `scale` Parameter of shape [A, B, 1] (and a
 * `zeroPoint` Parameter when asymmetric: integer z under 'lsq', offset β under 'lsq+').
 * @example
 * const wq = new WeightQuantizer([16, 32], { bits: 4, granularity: 'channel' });
 * wq.initFrom(w); const wHat = wq.forward(w); // LSQ scale gradients on backward
 */
export class WeightQuantizer extends Module {
  scale: Tensor | null;
  zeroPoint: Tensor | null;
  /** 1 once the scale was initialised from a weight (persistent, so checkpoints keep it). */
  initialized: Tensor;
  /** Quantization on/off (off: identity, for full-precision phases). */
  enabled = true;
  readonly grid: WeightGrid;
  readonly bits: number;
  readonly qmin: number;
  readonly qmax: number;
  readonly granularity: WeightGranularity;
  readonly view: [number, number, number];
  readonly estimator: string | Estimator;
  readonly scaleMode: ScaleMode;
  readonly scaleInit: ScaleInit;
  readonly offset: 'zeroPoint' | 'beta';
  readonly asymmetric: boolean;
  readonly rounding: Rounding;
  readonly gradScale: number | 'lsq';
  trust: number | undefined;
  /** Temperature of the 'relaxed' estimator, or HESTIA's soft quantizer (0 = hard). */
  temperature: number | undefined;
  /** HESTIA: per-tensor temperature multiplier (from the Hessian trace) and pressure P ∈ [0, 1]. */
  tempScale = 1;
  pressure = 1;
  /** Oscillation freezing (inspect/oscillation.ts): where set, the integer code is pinned. */
  frozenMask: Tensor | null = null;
  frozenCodes: Tensor | null = null;

  constructor(readonly weightShape: readonly number[], config: WeightQuantConfig = {}) {
    super();
    this.grid = config.grid ?? 'int';
    this.granularity = config.granularity ?? 'channel';
    this.view = groupView(weightShape, this.granularity);
    this.asymmetric = config.asymmetric ?? false;
    const b = config.bits ?? 8;
    if (this.grid === 'int') {
      if (!Number.isInteger(b) || b < 2 || b > 16) throw new Error(`WeightQuantizer: int grid bits must be an integer in 2…16, got ${b}`);
      this.qmin = this.asymmetric ? 0 : config.narrow ? -(2 ** (b - 1) - 1) : -(2 ** (b - 1));
      this.qmax = this.asymmetric ? 2 ** b - 1 : 2 ** (b - 1) - 1;
      this.bits = b;
    } else if (this.grid === 'binary') [this.qmin, this.qmax, this.bits] = [0, 1, 1];
    else [this.qmin, this.qmax, this.bits] = [-1, 1, Math.log2(3)];
    if (this.asymmetric && this.grid !== 'int') throw new Error(`WeightQuantizer: asymmetric applies to the int grid only, not '${this.grid}'`);
    this.estimator = config.estimator ?? (this.grid === 'int' ? 'lsq' : 'ste');
    const est = getEstimator(this.estimator);
    this.offset = est.spec.offset === 'beta' ? 'beta' : 'zeroPoint';
    this.scaleMode = config.scaleMode ?? (isLsq(this.estimator) && this.grid !== 'hestia' ? 'learned' : 'dynamic');
    this.scaleInit = config.scaleInit ?? (this.grid !== 'int' ? 'absmean' : this.asymmetric ? 'minmax' : 'lsq');
    this.rounding = config.rounding ?? 'halfEven';
    this.gradScale = config.gradScale ?? (this.scaleMode === 'learned' ? 'lsq' : 1);
    this.trust = config.trust;
    this.temperature = config.temperature ?? (this.grid === 'hestia' ? 0 : undefined);
    const [A, B] = this.view;
    const stored = this.scaleMode !== 'dynamic' && this.grid !== 'hestia';
    const zeros3 = () => zeros([A, B, 1]);
    const needsOffset = this.asymmetric || this.offset === 'beta';
    if (this.scaleMode === 'learned' && stored) {
      this.scale = this.registerParameter('scale', Parameter(zeros3().add(1)));
      this.zeroPoint = this.registerParameter('zeroPoint', needsOffset ? Parameter(zeros3()) : null);
    } else {
      this.scale = this.registerBuffer('scale', stored ? zeros3().add(1) : null);
      this.zeroPoint = this.registerBuffer('zeroPoint', stored && needsOffset ? zeros3() : null);
    }
    this.initialized = this.registerBuffer('initialized', zeros([1]));
  }

  get isInitialized(): boolean {
    return readFlag(this.initialized, this.#initSeen);
  }
  /** The `initialized` buffer and version last read as 1: forward skips the read (a device sync) while both hold. */
  #initSeen: FlagSeen = { flag: null, version: -1 };

  /** (Re)initialises stored scales (and zero point / offset) from weight `w`, in place. */
  initFrom(w: Tensor): void {
    noGrad(() => {
      if (this.scale) {
        const { scale, zeroPoint } = this.#initial(w.reshape(this.view));
        this.scale.copy_(scale);
        if (this.zeroPoint) this.zeroPoint.copy_(zeroPoint);
      }
      this.initialized.fill_(1);
    });
  }

  /** Scale and offset from the init rule (binary: levels ±α with α from the rule, so step 2α). */
  #initial(w3: Tensor): { scale: Tensor; zeroPoint: Tensor | number } {
    const method = this.grid === 'binary' && this.scaleInit === 'lsq' ? 'absmean' : this.scaleInit;
    const r = initScale(w3.detach(), method, this.#extent());
    let scale = r.scale.to(w3.dtype);
    if (this.grid === 'binary') scale = scale.mul(2);
    if (this.offset === 'beta' && this.asymmetric) {
      // LSQ+ min/max init: s = (max − min)/(qmax − qmin), β = min − qmin·s
      const lo = w3.detach().amin(-1, true).minimum(0);
      const hi = w3.detach().amax(-1, true).maximum(0);
      scale = clamp(div(sub(hi, lo), this.qmax - this.qmin), MIN_STEP);
      return { scale, zeroPoint: sub(lo, mul(scale, this.qmin)) };
    }
    return { scale, zeroPoint: this.asymmetric ? r.zeroPoint.to(w3.dtype) : 0 };
  }

  /** What the grids' scale initialisers need to know (binary asks for α of the levels ±α). */
  #extent(): GridExtent {
    const [qmin, qmax] = this.grid === 'binary' ? [-1, 1] : [this.qmin, this.qmax];
    const snap = this.grid === 'binary' ? (u: number) => (u >= 0 ? 1 : -1) : (u: number) => Math.min(Math.max(rne(u), qmin), qmax);
    return { qmin, qmax, bits: this.grid === 'int' ? this.bits : this.grid === 'binary' ? 1 : 1.585, affine: this.grid !== 'binary', snap };
  }

  /** The grid used for `w` right now (dynamic scales computed, zero points rounded). */
  gridParams(w: Tensor): GridParams {
    const w3 = w.reshape(this.view);
    let scale: Tensor;
    let zp: Tensor | number;
    if (this.grid === 'hestia') {
      scale = clamp(mean(abs(w3.detach()), -1, true), MIN_STEP);
      zp = 0;
    } else if (this.scale) {
      [scale, zp] = [this.scale, this.zeroPoint ?? 0];
    } else {
      ({ scale, zeroPoint: zp } = this.#initial(w3));
    }
    if (this.grid === 'binary') zp = 0.5;
    else if (typeof zp !== 'number' && this.offset === 'zeroPoint') zp = noGrad(() => round(zp as Tensor).clamp(this.qmin, this.qmax));
    return { qmin: this.qmin, qmax: this.qmax, scale: scale.detach(), zeroPoint: typeof zp === 'number' ? zp : zp.detach(), offset: this.offset };
  }

  forward(w: Tensor): Tensor {
    if (!this.enabled) return w;
    if (!this.isInitialized) this.initFrom(w);
    const w3 = w.reshape(this.view); // [A, B, C]: one scale per (a, b)
    let y: Tensor;
    if (this.grid === 'hestia') y = this.#hestia(w3);
    else {
      const stored = this.scale !== null;
      const { scale, zeroPoint } = stored ? { scale: this.scale!, zeroPoint: this.zeroPoint ?? 0 } : this.#initial(w3);
      const binary = this.grid === 'binary';
      const opts: FakeQuantizeOptions = {
        qmin: this.qmin, qmax: this.qmax, estimator: this.estimator, rounding: this.rounding, gradScale: this.gradScale,
        trust: this.trust, temperature: this.temperature, roundZeroPoint: binary ? false : undefined,
      };
      y = fakeQuantize(w3, scale, binary ? 0.5 : zeroPoint, opts);
      if (this.frozenMask && this.frozenCodes) {
        const z = binary ? 0.5 : this.gridParams(w).zeroPoint;
        const pinned = this.offset === 'beta' ? add(mul(this.frozenCodes, scale), zeroPoint) : mul(sub(this.frozenCodes, z), scale);
        y = where(this.frozenMask, pinned, y);
      }
    }
    return y.reshape([...w.shape]);
  }

  /**
   * HESTIA (methods.md §4): u = w/m with m = max(mean|w|, 1e−5) per group (not detached);
   * q = m·Σ_k softmax(−(u − c_k)²/T)_k c_k over c = (−1, 0, 1) at T = temperature·tempScale,
   * or the hard ternary with identity STE at T = 0; output w + P·(q − w).
   */
  #hestia(w3: Tensor): Tensor {
    const P = this.pressure;
    if (P === 0) return w3;
    const T = (this.temperature ?? 0) * this.tempScale;
    let q: Tensor;
    if (T > 0) {
      const m = clamp(mean(abs(w3), -1, true), MIN_STEP);
      q = mul(softQuantize(div(w3, m), [-1, 0, 1], T + 1e-6), m);
    } else {
      const m = clamp(mean(abs(w3.detach()), -1, true), MIN_STEP);
      q = fakeQuantize(w3, m, 0, { qmin: -1, qmax: 1, estimator: 'ste' });
    }
    return P === 1 ? q : add(w3, mul(sub(q, w3), P));
  }

  /** Integer codes of `w` on its current grid (float tensor of integers, shape [A, B, C]). */
  codes(w: Tensor): Tensor {
    return noGrad(() => {
      const g = this.gridParams(w);
      const wHat = this.forward(w).reshape(this.view);
      return codesOf(wHat, g);
    });
  }

  override extraRepr(): string {
    const grid = this.grid === 'int' ? `int${this.bits}${this.asymmetric ? ' asym' : ''}` : this.grid;
    return `${grid}, ${granularityName(this.granularity)}, estimator=${typeof this.estimator === 'string' ? this.estimator : this.estimator.name}, scale=${this.scaleMode}/${JSON.stringify(this.scaleInit).replace(/"/g, '')}`;
  }
}

/**
 * Integer codes of a fake-quantized tensor: round(x̂/s + z), or round((x̂ − β)/s). Exact: x̂ is
 * s·(q − z) rounded once, so the division lands within far less than ½ of the integer.
 */
export function codesOf(xHat: Tensor, g: GridParams): Tensor {
  return noGrad(() => (g.offset === 'beta' ? round(div(sub(xHat, g.zeroPoint), g.scale)) : round(add(div(xHat, g.scale), g.zeroPoint))));
}

/** Dequantized values of integer codes: (q − z)·s, or q·s + β, with the fake-quant kernel's arithmetic order. */
export function dequantize(codes: Tensor, g: GridParams): Tensor {
  return g.offset === 'beta' ? add(mul(codes, g.scale), g.zeroPoint) : mul(sub(codes, g.zeroPoint), g.scale);
}

// ---------------------------------------------------------------- activations
export interface ActQuantConfig {
  bits?: number;
  /** Signed [−2^(b−1), 2^(b−1)−1] (default) or unsigned [0, 2^b−1] (inputs after ReLU, pixels). */
  signed?: boolean;
  /** 'tensor' (default) or 'token' (one scale per row of the last axis; always dynamic). */
  granularity?: 'tensor' | 'token';
  /** 'learned' (LSQ, default for 'tensor') or 'dynamic' (absmax of each batch / token). */
  scaleMode?: 'learned' | 'dynamic';
  /** Default 'lsq' when learned, 'ste' when dynamic. 'lsq+' learns an offset β too. */
  estimator?: string | Estimator;
  /** Learned-scale init from the first batch: 'lsq' 2·mean|x|/√qmax (default) or 'absmax'. */
  scaleInit?: 'lsq' | 'absmax';
  /**
   * N in LSQ's gradient scale 1/√(N·qmax): 'numel' (elements of the batch, what reference code
   * does, default) or 'paper' (features per example, LSQ paper).
   */
  gradScalePolicy?: 'numel' | 'paper';
  rounding?: Rounding;
  trust?: number;
  temperature?: number;
  /**
   * Dynamic scales only: reuse the result when a quantizer with the same grid already quantized
   * this very tensor (unchanged since), as the q/k/v or gate/up projections of one input do
   * (default true). The one result then feeds every consumer and autograd sums their gradients.
   */
  share?: boolean;
}

/**
 * Fake-quantizes activations (a layer's input). Learned scales initialise from the first batch seen.
 * @example const aq = new ActQuantizer({ bits: 4, signed: false }); const xHat = aq.forward(x);
 */
export class ActQuantizer extends Module {
  scale: Tensor | null;
  zeroPoint: Tensor | null;
  initialized: Tensor;
  enabled = true;
  readonly bits: number;
  readonly qmin: number;
  readonly qmax: number;
  readonly signed: boolean;
  readonly granularity: 'tensor' | 'token';
  readonly scaleMode: 'learned' | 'dynamic';
  readonly estimator: string | Estimator;
  readonly offset: 'zeroPoint' | 'beta';
  readonly scaleInit: 'lsq' | 'absmax';
  readonly gradScalePolicy: 'numel' | 'paper';
  readonly rounding: Rounding;
  trust: number | undefined;
  temperature: number | undefined;
  /** Share dynamic quantizations of one input tensor with same-grid quantizers (see {@link ActQuantConfig.share}). */
  share: boolean;
  /** Deterministic forward (stochastic rounding draws per call, so its results are never shared). */
  readonly #deterministic: boolean;
  #initSeen: FlagSeen = { flag: null, version: -1 };

  constructor(config: ActQuantConfig = {}) {
    super();
    const b = config.bits ?? 8;
    if (!Number.isInteger(b) || b < 2 || b > 16) throw new Error(`ActQuantizer: bits must be an integer in 2…16, got ${b}`);
    this.bits = b;
    this.signed = config.signed ?? true;
    [this.qmin, this.qmax] = this.signed ? [-(2 ** (b - 1)), 2 ** (b - 1) - 1] : [0, 2 ** b - 1];
    this.granularity = config.granularity ?? 'tensor';
    this.scaleMode = config.scaleMode ?? (this.granularity === 'token' ? 'dynamic' : 'learned');
    if (this.granularity === 'token' && this.scaleMode === 'learned') throw new Error("ActQuantizer: per-token scales are dynamic (one per row of each batch); use scaleMode 'dynamic'");
    this.estimator = config.estimator ?? (this.scaleMode === 'learned' ? 'lsq' : 'ste');
    const spec = getEstimator(this.estimator).spec;
    this.offset = spec.offset === 'beta' ? 'beta' : 'zeroPoint';
    this.#deterministic = spec.forward === undefined;
    this.share = config.share ?? true;
    this.scaleInit = config.scaleInit ?? 'lsq';
    this.gradScalePolicy = config.gradScalePolicy ?? 'numel';
    this.rounding = config.rounding ?? 'halfEven';
    this.trust = config.trust;
    this.temperature = config.temperature;
    const learned = this.scaleMode === 'learned';
    this.scale = learned ? this.registerParameter('scale', Parameter(zeros([1]).add(1))) : this.registerBuffer('scale', null);
    this.zeroPoint = learned && this.offset === 'beta' ? this.registerParameter('zeroPoint', Parameter(zeros([1]))) : this.registerBuffer('zeroPoint', null);
    this.initialized = this.registerBuffer('initialized', zeros([1]));
  }

  get isInitialized(): boolean {
    return readFlag(this.initialized, this.#initSeen);
  }

  /** Initialises a learned scale (and β) from a batch, in place. */
  initFrom(x: Tensor): void {
    noGrad(() => {
      if (this.scale) {
        const a = abs(x.detach());
        const s = this.scaleInit === 'absmax' ? a.amax().item() / this.qmax : (2 * a.mean().item()) / Math.sqrt(this.qmax);
        this.scale.fill_(Math.max(s, MIN_STEP));
        if (this.zeroPoint) {
          // LSQ+ (QuEST's min/max init): β = min(x) − qmin·s
          const lo = Math.min(x.detach().amin().item(), 0);
          if (this.signed) this.zeroPoint.fill_(0);
          else {
            const s2 = Math.max((x.detach().amax().item() - lo) / (this.qmax - this.qmin), MIN_STEP);
            this.scale.fill_(s2);
            this.zeroPoint.fill_(lo - this.qmin * s2);
          }
        }
      }
      this.initialized.fill_(1);
    });
  }

  /** The grid for batch `x` (dynamic scales computed from it). */
  gridParams(x: Tensor): GridParams {
    if (this.scale) return { qmin: this.qmin, qmax: this.qmax, scale: this.scale.detach(), zeroPoint: this.zeroPoint?.detach() ?? 0, offset: this.offset };
    return { qmin: this.qmin, qmax: this.qmax, scale: dynamicScale(x, this.granularity, this.signed, this.qmax), zeroPoint: 0, offset: this.offset };
  }

  forward(x: Tensor): Tensor {
    if (!this.enabled) return x;
    if (!this.scale) return this.share && this.#deterministic ? this.#shared(x) : this.#dynamic(x);
    if (!this.isInitialized) this.initFrom(x);
    let gradScale: number = 1;
    if (isLsq(this.estimator)) {
      const n = this.gradScalePolicy === 'paper' ? x.numel() / (x.shape[0] ?? 1) : x.numel();
      gradScale = 1 / Math.sqrt(n * this.qmax);
    }
    return fakeQuantize(x, this.scale, this.zeroPoint ?? 0, {
      qmin: this.qmin, qmax: this.qmax, estimator: this.estimator, rounding: this.rounding, gradScale,
      trust: this.trust, temperature: this.temperature,
    });
  }

  #dynamic(x: Tensor): Tensor {
    return fakeQuantize(x, dynamicScale(x, this.granularity, this.signed, this.qmax), 0, {
      qmin: this.qmin, qmax: this.qmax, estimator: this.estimator, rounding: this.rounding,
      trust: this.trust, temperature: this.temperature,
    });
  }

  /** #dynamic(x), or the result a same-grid quantizer computed for this very x while it still holds (shared.ts). */
  #shared(x: Tensor): Tensor {
    const grid: SharedGrid = {
      kind: this.constructor, qmin: this.qmin, qmax: this.qmax, granularity: this.granularity, estimator: this.estimator,
      rounding: this.rounding, trust: this.trust, temperature: this.temperature, training: this.training,
    };
    const recorded = isGradEnabled() && x.requiresGrad;
    const hit = sharedLookup(x, grid, recorded);
    if (hit) return hit;
    const out = this.#dynamic(x);
    sharedRemember(x, grid, recorded, out);
    return out;
  }

  override extraRepr(): string {
    return `${this.signed ? 'int' : 'uint'}${this.bits}, ${this.granularity}, ${this.scaleMode}, estimator=${typeof this.estimator === 'string' ? this.estimator : this.estimator.name}`;
  }
}

/** Absmax step of a batch (per tensor) or of each row of the last axis (per token), detached: max(absmax, 1e−5)/qmax. */
export function dynamicScale(x: Tensor, granularity: 'tensor' | 'token', signed: boolean, qmax: number): Tensor {
  return noGrad(() => {
    const d = x.detach();
    // max|x| is the ∞-norm: one reduction pass (the absmax kernel under noGrad)
    const m = granularity === 'token'
      ? (signed ? norm(d, Infinity, -1, true) : amax(d, -1, true))
      : (signed ? norm(d, Infinity) : amax(d)).reshape([1]);
    return div(clamp(m, MIN_STEP), qmax);
  });
}
