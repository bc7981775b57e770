/**
 * @file Temperature schedules for the soft quantizers (linear, cosine, exponential), HESTIA's
 * pressure/temperature schedule (methods.md §4) and `HestiaScheduler`, which drives every HESTIA
 * and 'relaxed'-estimator quantizer of a model. The Hessian-trace temperature scales are in hessian.ts.
 */
import type { Module } from '@qgrad/nn';
import { ActQuantizer, WeightQuantizer } from '../qat/quantizers.js';

/** A value per optimizer step. */
export type Schedule = (step: number) => number;

/** A value ramped linearly from `start` to `end` over `steps`. */
export interface RampOptions {
  start: number;
  end: number;
  /** Steps from start to end; the value stays at `end` afterwards. */
  steps: number;
}

const progress = (step: number, steps: number) => (steps <= 0 ? 1 : Math.min(Math.max(step / steps, 0), 1));

/** start → end linearly. @example linearSchedule({ start: 1, end: 0, steps: 10 })(5); // 0.5 */
export function linearSchedule(o: RampOptions): Schedule {
  return (step) => o.start + (o.end - o.start) * progress(step, o.steps);
}

/** start → end along half a cosine (flat at both ends). @example cosineSchedule({ start: 1, end: 0, steps: 10 })(5); // 0.5 */
export function cosineSchedule(o: RampOptions): Schedule {
  return (step) => o.end + ((o.start - o.end) * (1 + Math.cos(Math.PI * progress(step, o.steps)))) / 2;
}

/** start·(end/start)^t: a constant ratio per step (both must be > 0). @example exponentialSchedule({ start: 1, end: 0.01, steps: 2 })(1); // 0.1 */
export function exponentialSchedule(o: RampOptions): Schedule {
  if (!(o.start > 0 && o.end > 0)) throw new Error(`exponentialSchedule: start and end must be > 0, got ${o.start} and ${o.end}`);
  return (step) => o.start * (o.end / o.start) ** progress(step, o.steps);
}

/** HESTIA's default initial temperature: argmin_T E_{u∼N(0, π/2)}[(ũ(u; T) − u)²] (methods.md §4). */
export const HESTIA_T0 = 0.3509;

/** Options of `HestiaScheduler`: when the pressure reaches 1 and how much of training anneals the temperature. */
export interface HestiaScheduleOptions {
  /** ρ at which the pressure reaches 1 (default 0.2). */
  compressRatio?: number;
  /** Fraction of training spent annealing T to 0 at the end (default 0.8). */
  annealRatio?: number;
  initTemp?: number;
  /**
   * 'linear' / 'cosine' anneal T₀·coeff (the Hessian scale only applies before the anneal, as in
   * HESTIA's code, which makes T jump); 'hessian' (default) anneals T₀·ts·cosine, continuous.
   */
  style?: 'linear' | 'cosine' | 'hessian';
}

/**
 * P(ρ) = min(1, ρ/compressRatio), ρ = step/total.
 * @example hestiaPressure(0.1); // 0.5 (half way to compressRatio 0.2)
 */
export function hestiaPressure(rho: number, compressRatio = 0.2): number {
  return compressRatio <= 0 ? 1 : Math.min(1, Math.max(rho, 0) / compressRatio);
}

/**
 * HESTIA's temperature at progress ρ for a tensor whose Hessian temperature scale is `ts`.
 * @example hestiaTemperature(step / totalSteps); // anneals to 0 over the last annealRatio of training
 */
export function hestiaTemperature(rho: number, o: HestiaScheduleOptions = {}, ts = 1): number {
  const a = o.annealRatio ?? 0.8;
  const T0 = o.initTemp ?? HESTIA_T0;
  const style = o.style ?? 'hessian';
  if (!(a > 0)) throw new Error(`hestiaTemperature: annealRatio must be > 0, got ${a}`);
  if ((o.compressRatio ?? 0.2) + a > 1 + 1e-12) throw new Error(`hestiaTemperature: compressRatio + annealRatio must be ≤ 1, got ${(o.compressRatio ?? 0.2) + a}`);
  if (rho <= 1 - a) return T0 * ts;
  const t = Math.min((rho - (1 - a)) / a, 1);
  const cos = (1 + Math.cos(Math.PI * t)) / 2;
  if (style === 'linear') return T0 * (1 - t);
  if (style === 'cosine') return T0 * cos;
  return T0 * cos * ts;
}

/**
 * Sets the temperature of every quantizer that uses one (HESTIA's soft forward, the 'relaxed' estimator's soft backward).
 * @example setTemperature(model, 0.5);
 */
export function setTemperature(model: Module, temperature: number): void {
  for (const m of model.modules()) {
    if (m instanceof WeightQuantizer && m.soft) m.soft.temperature = temperature;
    if ((m instanceof WeightQuantizer || m instanceof ActQuantizer) && m.plan.estimator.name === 'relaxed') m.temperature = temperature;
  }
}

/**
 * Drives HESTIA quantizers: call `step(i)` at the start of optimizer step i; it sets each
 * quantizer's pressure and temperature (times its own `tempScale`, see hessian.ts).
 * @example const sched = new HestiaScheduler(model, 1000); for (let i = 0; i < 1000; i++) { sched.step(i); ... }
 */
export class HestiaScheduler {
  readonly quantizers: WeightQuantizer[];
  constructor(model: Module, readonly totalSteps: number, readonly options: HestiaScheduleOptions = {}) {
    this.quantizers = [...model.modules()].filter((m): m is WeightQuantizer => m instanceof WeightQuantizer && m.soft !== null);
    if (!this.quantizers.length) throw new Error("HestiaScheduler: the model has no weight quantizers with HESTIA's soft forward (weight option soft)");
  }
  /** Sets pressure and temperature for step `step`; returns P and the temperature of a tensor with scale 1. */
  step(step: number): { pressure: number; temperature: number } {
    const rho = step / this.totalSteps;
    const P = hestiaPressure(rho, this.options.compressRatio);
    for (const q of this.quantizers) {
      const soft = q.soft!;
      soft.pressure = P;
      // the forward multiplies by soft.tempScale, so store T/ts ('linear'/'cosine' anneals ignore ts)
      soft.temperature = hestiaTemperature(rho, this.options, soft.tempScale) / soft.tempScale;
    }
    return { pressure: P, temperature: hestiaTemperature(rho, this.options, 1) };
  }
}
