/**
 * @file Training-phase schedules for QAT: a full-precision phase then QAT, switching at a fraction
 * of the steps, and QAT fused with the learning-rate cooldown (warmup–stable–decay, with fake
 * quantization switched on exactly when the LR starts to decay). `QATPhase` flips the model's quantizers.
 */
import type { Module } from '@qgrad/nn';
import { setQuantEnabled } from '../qat/modules.js';
import type { Schedule } from './temperature.js';

/** When a run switches from full precision to QAT: the total steps and the fraction trained before. */
export interface PhaseOptions {
  totalSteps: number;
  /** Fraction of the steps trained in full precision before QAT starts (0 = QAT throughout). */
  switchAt: number;
}

/**
 * The first QAT step: ⌊switchAt·total⌋ (QAT runs for steps ≥ it).
 * @example qatStartStep({ totalSteps: 1000, switchAt: 0.9 }); // 900
 */
export function qatStartStep(o: PhaseOptions): number {
  if (!(o.switchAt >= 0 && o.switchAt <= 1)) throw new Error(`qatStartStep: switchAt must be in [0, 1], got ${o.switchAt}`);
  return Math.floor(o.switchAt * o.totalSteps);
}

/** The learning rate of a QAT run's warmup–stable–decay schedule: peak rate, total steps, warmup and cooldown. */
export interface WsdOptions {
  lr: number;
  totalSteps: number;
  /** Linear warmup steps from 0 (default 0). */
  warmupSteps?: number;
  /** Fraction of the steps in the final linear decay (default 0.2). */
  cooldownFraction?: number;
  /** LR at the end of the decay (default 0). */
  minLr?: number;
}

/**
 * Warmup–stable–decay LR: linear warmup, constant, then linear decay to minLr over the cooldown.
 * @example const lrAt = wsdSchedule({ lr: 3e-3, totalSteps: 1000, warmupSteps: 50 }); // lrAt(step)
 */
export function wsdSchedule(o: WsdOptions): Schedule & { cooldownStart: number } {
  const warm = o.warmupSteps ?? 0;
  const start = Math.floor(o.totalSteps * (1 - (o.cooldownFraction ?? 0.2)));
  const minLr = o.minLr ?? 0;
  const f = (step: number) => {
    if (step < warm) return (o.lr * (step + 1)) / warm;
    if (step < start) return o.lr;
    const t = Math.min((step - start) / Math.max(o.totalSteps - start, 1), 1);
    return o.lr + (minLr - o.lr) * t;
  };
  return Object.assign(f, { cooldownStart: start });
}

/**
 * Switches a model's quantizers for a two-phase run: full precision for steps < `startStep`,
 * QAT from it on (scales re-initialised from the trained weights at the switch). Call
 * `step(i)` before each forward.
 * @example
 * const lr = wsdSchedule({ lr: 1e-3, totalSteps: 1000, cooldownFraction: 0.2 });
 * const phase = new QATPhase(model, lr.cooldownStart); // QAT fused with the cooldown
 */
export class QATPhase {
  #on: boolean | null = null;
  constructor(readonly model: Module, readonly startStep: number) {}
  /** Builds the phase from a fraction of the steps. */
  static fromFraction(model: Module, o: PhaseOptions): QATPhase {
    return new QATPhase(model, qatStartStep(o));
  }
  /** Whether step i trains with fake quantization. */
  isQAT(step: number): boolean {
    return step >= this.startStep;
  }
  /** Puts the model in the right phase for step i; returns whether it just switched. */
  step(step: number): boolean {
    const on = this.isQAT(step);
    if (on === this.#on) return false;
    const first = this.#on === null;
    setQuantEnabled(this.model, on, { reinit: !first });
    this.#on = on;
    return !first;
  }
}
