/**
 * @file The functional quantizer API on the one vocabulary: `fakeQuant` (QAT forward with the
 * estimator's gradients), `initQuantParams` (data-derived scales to make learnable), `quantize`
 * (codes + scales, for storage) and `dequantize`, which gives fakeQuant's forward back from them.
 */
import { hadamard, noGrad, type Tensor } from '@qgrad/core';
import { toGroups } from '../grids/granularity.js';
import { checkScale } from '../scale/rules.js';
import { codesOfView, dataScale, dequantizeView, effectiveZero, fakeQuantView, type ApplyOptions } from './apply.js';
import { resolveQuantizer, type QuantizerConfig, type QuantizerPlan } from './config.js';

/** What `fakeQuant` takes: a quantizer config (grid, granularity, scale, estimator) and an optional Hadamard rotation. */
export interface FakeQuantConfig extends QuantizerConfig, ApplyOptions {
  /** Rotate by a block Hadamard transform along the last axis first (QuEST); rotate back after (default). */
  hadamard?: { blockSize?: number; rotateBack?: boolean };
}

/** Given scale (and zero point) for `fakeQuant`, instead of computing them from x. */
export interface QuantParams {
  /** Shaped like the grouped view with its last dim 1 (see granularity.ts). */
  scale: Tensor;
  zeroPoint?: Tensor;
}

const plans = new WeakMap<object, QuantizerPlan>();
function planOf(c: FakeQuantConfig, who: string): QuantizerPlan {
  let p = plans.get(c);
  if (!p) plans.set(c, (p = resolveQuantizer(c, 'tensor', who)));
  return p;
}

function rotate(x: Tensor, c: FakeQuantConfig): Tensor {
  return c.hadamard ? hadamard(x, { blockSize: c.hadamard.blockSize }) : x;
}

function paramsFor(plan: QuantizerPlan, view: Tensor, p: QuantParams | undefined): { scale: Tensor; zeroPoint: Tensor | number } {
  if (!p) {
    if (plan.mode !== 'dynamic' && plan.grid.scale.kind !== 'pow2') throw new Error(`${plan.who}: a ${plan.mode} scale is passed in as params (make it with initQuantParams)`);
    return dataScale(plan, view);
  }
  const want = [...view.shape.slice(0, -1), 1];
  const ok = (t: Tensor) => t.numel() === 1 || t.shape.join() === want.join();
  if (!ok(p.scale) || (p.zeroPoint && !ok(p.zeroPoint))) {
    throw new Error(`${plan.who}: params of shape [${p.scale.shape.join(', ')}] do not fit the grouped view [${view.shape.join(', ')}]; expected [${want.join(', ')}] (initQuantParams makes them)`);
  }
  checkScale(p.scale, plan.who);
  return { scale: p.scale, zeroPoint: p.zeroPoint ?? 0 };
}

/**
 * Data-derived scale (and zero point) for x under `config`, detached; make them learnable with
 * `.requiresGrad_()` and pass them back to `fakeQuant` as `params` (with scale: 'learned').
 * @example const p = initQuantParams(w, { grid: 'int', bits: 4, granularity: 'channel', scale: 'learned' });
 */
export function initQuantParams(x: Tensor, config: FakeQuantConfig): QuantParams {
  const plan = planOf(config, 'initQuantParams');
  if (plan.grid.scale.kind === 'pow2') throw new Error(`initQuantParams: grid '${plan.grid.name}' computes its own power-of-two block scales`);
  return noGrad(() => {
    const { scale, zeroPoint } = dataScale(plan, toGroups(rotate(x, config), plan.granularity, plan.who).view);
    return { scale, ...(typeof zeroPoint === 'number' ? {} : { zeroPoint }) };
  });
}

/**
 * Fake-quantizes x under `config` (QAT forward): rotation, grouping, scales (from `params`, else
 * computed from x by the rule and detached), the grid, the estimator's gradients, and back.
 * @example fakeQuant(w, { grid: 'int', bits: 4, granularity: { group: 32 } }); fakeQuant(w, { grid: 'nf4' });
 */
export function fakeQuant(x: Tensor, config: FakeQuantConfig, params?: QuantParams): Tensor {
  const plan = planOf(config, 'fakeQuant');
  const g = toGroups(rotate(x, config), plan.granularity, plan.who);
  const { scale, zeroPoint } = paramsFor(plan, g.view, params);
  const out = g.restore(fakeQuantView(plan, g.view, scale, zeroPoint, config));
  return config.hadamard && config.hadamard.rotateBack !== false ? hadamard(out, { blockSize: config.hadamard.blockSize }) : out;
}

/** What `quantize` returns: integer codes, the scales and zero points, the plan, and `dequantize()` back to values. */
export interface Quantized {
  /** int32 codes in x's shape: integers (int, ternary), bit patterns (FP, MX) or level indices (NF4, codebook, binary). */
  codes: Tensor;
  /** Per group, shaped like the grouped view with its last dim 1 (MX: the powers of two 2^X). */
  scale: Tensor;
  zeroPoint: Tensor | number;
  plan: QuantizerPlan;
  /** Back to real values (in the rotated basis when the config rotates); equals fakeQuant's forward. */
  dequantize(): Tensor;
}

/**
 * Quantizes x for storage/export under `config` (no gradient): codes plus the scales that map them
 * back; `dequantize()` equals `fakeQuant`'s forward bit for bit (before any rotation back).
 * @example const q = quantize(w, { grid: 'e4m3' }); q.codes; // OCP E4M3 bytes as int32
 */
export function quantize(x: Tensor, config: FakeQuantConfig, params?: QuantParams): Quantized {
  const plan = planOf(config, 'quantize');
  return noGrad(() => {
    const g = toGroups(rotate(x, config), plan.granularity, plan.who);
    const { scale, zeroPoint } = paramsFor(plan, g.view, params);
    const z = effectiveZero(plan, zeroPoint);
    const xHat = fakeQuantView(plan, g.view, scale.detach(), typeof zeroPoint === 'number' ? zeroPoint : zeroPoint.detach());
    const codes = g.restore(codesOfView(plan, xHat, scale, z));
    const q = { codes, scale: scale.detach(), zeroPoint: z, plan };
    return { ...q, dequantize: () => dequantize(q) };
  });
}

/**
 * Values of stored codes: regroups `codes` (x's shape) by the plan's granularity and applies the
 * grid's decode and the scales — what `quantize(...).dequantize()` and convert's layers compute.
 * @example const { codes, scale, zeroPoint, plan } = quantize(w, { grid: 'nf4' }); dequantize({ codes, scale, zeroPoint, plan });
 */
export function dequantize(q: Pick<Quantized, 'codes' | 'scale' | 'zeroPoint' | 'plan'>): Tensor {
  return noGrad(() => {
    const g = toGroups(q.codes, q.plan.granularity, q.plan.who);
    return g.restore(dequantizeView(q.plan, g.view, q.scale, q.zeroPoint));
  });
}
