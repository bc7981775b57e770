/**
 * @file The one quantizer vocabulary: `QuantizerConfig` (a grid by name, its options, granularity,
 * scale, estimator) as every config of @qgrad/quant spells it, and `resolveQuantizer`, the one
 * place its defaults are chosen and its nonsense combinations become errors naming the layer, the
 * grid and the option.
 */
import { getEstimator, type Estimator } from '@qgrad/core';
import type { GridOptions, Grid, Rounding } from '../grids/grid.js';
import type { GridName } from '../grids/table.js';
import { granularityName, type Granularity } from '../grids/granularity.js';
import { makeGrid } from '../grids/table.js';
import { GAUSSIAN_MSE_ALPHA, type ScaleRule } from '../scale/rules.js';

/** fixed: set once from data (then a buffer); learned: a Parameter trained by LSQ/LSQ+; dynamic: recomputed from the tensor every call. */
export type ScaleMode = 'fixed' | 'learned' | 'dynamic';

/** How a quantizer's scale is made: fixed, learned or dynamic, the rule that computes it from data, its gradient scale and double quantization. */
export interface ScaleSpec {
  mode?: ScaleMode;
  /** How the scale is computed from data (the init of fixed/learned scales; the rule of dynamic ones). 'mse' and 'gaussian' fit it. */
  rule?: ScaleRule;
  /** Learned scales: factor on their gradient, or 'lsq' for 1/√(N·Q_P) (default). */
  gradScale?: number | 'lsq';
  /** QLoRA's double quantization of dynamic scales (E4M3 in blocks of 256, after the mean): scale/double.ts. */
  double?: boolean;
}

/** A mode, a rule (with the default mode), or both. */
export type ScaleConfig = ScaleMode | Exclude<ScaleRule, object> | ScaleSpec;

/**
 * What every quantizer config says, weights and activations alike.
 * @example { grid: 'nf4' } · { grid: 'int', bits: 4, granularity: { group: 32 } } · { grid: 'e4m3', scale: 'learned' }
 */
export interface QuantizerConfig extends GridOptions {
  /** Default 'int'. */
  grid?: GridName;
  /** Which elements share a scale (default: the grid's own (NF4 blocks of 64, MX 32), else 'channel' for weights, 'tensor' otherwise). */
  granularity?: Granularity;
  scale?: ScaleConfig;
  /** Gradient estimator (default 'lsq' where the scale is learned, else the grid's: 'ste'). */
  estimator?: string | Estimator;
  rounding?: Rounding;
  /** Trust radius (in steps) of the 'trust' estimator. */
  trust?: number;
  /** Temperature of the 'relaxed' estimator's soft backward. */
  temperature?: number;
}

/** A config with its defaults filled in and checked: what quantizer modules, convert and inspection read. */
export interface QuantizerPlan {
  /** Names the quantizer in errors ("prepareQAT: layer 'fc1' (Linear) weight"). */
  who: string;
  grid: Grid;
  granularity: Granularity;
  mode: ScaleMode;
  rule: ScaleRule;
  /** Numeric factor, or 'lsq' (1/√(N·Q_P), N the elements per scale). */
  gradScale: number | 'lsq';
  estimator: Estimator;
  /** What the third quantity is: an integer zero point, or LSQ+'s real offset β. */
  offset: 'zeroPoint' | 'beta';
  /** Whether there is a zero point / offset at all. */
  hasZeroPoint: boolean;
  rounding: Rounding;
  /** Deterministic forward (stochastic rounding is not). */
  deterministic: boolean;
  /** Scales double-quantized (QLoRA). */
  doubleScale: boolean;
}

const MODES: readonly string[] = ['fixed', 'learned', 'dynamic'];
const RULES: readonly string[] = ['minmax', 'absmax', 'mse', 'gaussian', 'absmean', 'median', 'lsq'];
/** Built-in estimators that give the scale no gradient. */
const NO_SCALE_GRAD = ['ste', 'clipped-ste', 'trust', 'stochastic', 'relaxed'];
const isLsq = (e: Estimator) => e.name === 'lsq' || e.name === 'lsq+';

function parseScale(who: string, s: ScaleConfig | undefined): ScaleSpec {
  if (s === undefined) return {};
  if (typeof s === 'string') {
    if (MODES.includes(s)) return { mode: s as ScaleMode };
    if (RULES.includes(s)) return { rule: s as ScaleRule };
    throw new Error(`${who}: unknown scale ${JSON.stringify(s)}; a mode (${MODES.join(', ')}), a rule (${RULES.join(', ')}) or { mode, rule, gradScale }`);
  }
  if (s.mode !== undefined && !MODES.includes(s.mode)) throw new Error(`${who}: unknown scale mode ${JSON.stringify(s.mode)}; modes are ${MODES.join(', ')}`);
  return s;
}

/**
 * Fills in defaults and rejects combinations that make no sense. `role` picks the defaults:
 * weights learn int scales (LSQ) and compute the others from the weight; inputs learn a per-tensor
 * int scale, else use dynamic absmax; 'tensor' (the functional API) uses the given or dynamic scale.
 * @example resolveQuantizer({ grid: 'nf4' }, 'weight', 'fc1').granularity; // { block: 64 }
 */
export function resolveQuantizer(config: QuantizerConfig, role: 'weight' | 'input' | 'tensor', who: string): QuantizerPlan {
  const grid = makeGrid(config, who);
  const g = grid.name;
  let granularity = config.granularity ?? grid.defaults.granularity ?? (role === 'weight' ? 'channel' : 'tensor');
  const scale = parseScale(who, config.scale);
  if (grid.scale.kind === 'pow2') {
    const b = grid.scale.blockSize;
    const group = typeof granularity === 'object' && 'group' in granularity && granularity.group === b && (granularity.axis ?? -1) === -1;
    const block = typeof granularity === 'object' && 'block' in granularity && granularity.block === b;
    if (!group && !block) throw new Error(`${who}: grid '${g}' shares a power-of-two scale per block of ${b} along the last axis; granularity ${granularityName(granularity)} does not apply (leave it out, or { block: ${b} } to run blocks over the flattened tensor when rows are not a multiple of ${b})`);
    if ((scale.mode && scale.mode !== 'dynamic') || scale.rule) throw new Error(`${who}: grid '${g}' computes its own power-of-two block scales from the data; option scale ${JSON.stringify(config.scale)} does not apply`);
  }
  let est = config.estimator === undefined ? undefined : getEstimator(config.estimator);
  let mode = scale.mode;
  if (!mode) {
    if (grid.scale.kind === 'pow2') mode = 'dynamic';
    else if (est) mode = isLsq(est) ? 'learned' : 'dynamic';
    else if (role === 'weight') mode = g === 'int' ? 'learned' : 'dynamic';
    else if (role === 'input') mode = g === 'int' && granularity === 'tensor' ? 'learned' : 'dynamic';
    else mode = 'dynamic';
  }
  if (!est) est = getEstimator(mode === 'learned' ? 'lsq' : grid.defaults.estimator);
  const rule = scale.rule ?? (mode === 'dynamic' && grid.integer && role !== 'weight' ? (config.asymmetric ? 'minmax' : 'absmax') : grid.defaults.scaleRule);
  const show = JSON.stringify(config.scale ?? mode);
  if (isLsq(est) && mode !== 'learned') throw new Error(`${who}: estimator '${est.name}' learns the scale, but scale ${show} is ${mode}; use scale 'learned', or an estimator such as 'ste'`);
  if (mode === 'learned' && NO_SCALE_GRAD.includes(est.name)) throw new Error(`${who}: a learned scale needs an estimator that gives it a gradient ('lsq', 'lsq+' or your own); '${est.name}' gives none`);
  if (est.name === 'lsq+' && !grid.integer) throw new Error(`${who}: estimator 'lsq+' learns an offset on an integer grid; grid '${g}' is not one`);
  if (est.name === 'stochastic' && !grid.integer) throw new Error(`${who}: estimator 'stochastic' rounds onto an integer grid; grid '${g}' is not one`);
  if (mode === 'learned' && granularity === 'token') throw new Error(`${who}: per-token scales are dynamic (one per row of each batch); scale 'learned' does not apply to granularity 'token'`);
  if (role === 'input' && mode !== 'dynamic' && granularity !== 'tensor') throw new Error(`${who}: an input's ${mode} scale must be per tensor (inputs change shape with the batch); granularity ${granularityName(granularity)} needs scale 'dynamic'`);
  if (scale.gradScale !== undefined && mode !== 'learned') throw new Error(`${who}: scale option gradScale applies to learned scales only, not ${mode}`);
  if (rule === 'gaussian' && GAUSSIAN_MSE_ALPHA[Math.round(grid.idealBits * 1000) / 1000] === undefined) {
    throw new Error(`${who}: scale rule 'gaussian' needs a grid of ${Object.keys(GAUSSIAN_MSE_ALPHA).join(', ')} bits; grid '${grid.label}' has ${grid.idealBits}`);
  }
  if (scale.double && (mode !== 'dynamic' || grid.scale.kind !== 'real' || config.asymmetric)) {
    throw new Error(`${who}: scale option double (QLoRA's double quantization) applies to dynamic symmetric scales; grid '${grid.label}' has a ${grid.scale.kind === 'real' ? `${mode}${config.asymmetric ? ' asymmetric' : ''}` : 'power-of-two'} scale`);
  }
  const offset = est.spec.offset === 'beta' ? 'beta' : 'zeroPoint';
  const rounding = config.rounding ?? 'halfEven';
  if (rounding === 'floor' && !grid.integer) throw new Error(`${who}: rounding 'floor' applies to integer grids; grid '${g}' rounds to nearest`);
  return {
    who, grid, granularity, mode, rule, gradScale: scale.gradScale ?? (mode === 'learned' ? 'lsq' : 1), estimator: est, offset,
    hasZeroPoint: !!config.asymmetric || offset === 'beta', rounding, deterministic: est.spec.forward === undefined, doubleScale: !!scale.double,
  };
}

/**
 * 'int4 channel lsq learned' style summary of a plan.
 * @example describePlan(resolveQuantizer({ grid: 'int', bits: 4, granularity: 'channel' }, 'weight', 'fc1')); // 'int4 channel …'
 */
export function describePlan(p: QuantizerPlan): string {
  return `${p.grid.label} ${granularityName(p.granularity)} ${p.estimator.name} ${p.mode}${p.doubleScale ? '/double' : ''}${p.mode === 'dynamic' || typeof p.rule === 'object' || p.rule !== p.grid.defaults.scaleRule ? `/${typeof p.rule === 'object' ? `p${p.rule.percentile}` : p.rule}` : ''}`;
}
