/**
 * @file Learning-rate schedules: multiplier functions of the step (linear warmup, cosine,
 * warmup-stable-decay with linear cooldown, constant) that compose, and `LambdaLR`, the
 * scheduler that applies them to an optimizer's groups, like `torch.optim.lr_scheduler.LambdaLR`.
 */
import type { Optimizer } from './optimizer.js';

/** A learning-rate multiplier as a function of the step (0, 1, 2, …). */
export type LrLambda = (step: number) => number;

/** 1 at every step. */
export const constantSchedule = (): LrLambda => () => 1;

/**
 * Linear warmup from 0 to 1 over `warmupSteps` steps (step/warmupSteps, as Hugging Face's
 * schedules), then 1.
 * @example linearWarmup(100)(50); // 0.5
 */
export function linearWarmup(warmupSteps: number): LrLambda {
  return (step) => (warmupSteps > 0 && step < warmupSteps ? step / warmupSteps : 1);
}

/** Options of the cosine schedule: linear warmup, the step where the cosine ends and its floor. */
export interface CosineOptions {
  warmupSteps?: number;
  /** Step at which the cosine reaches its floor. */
  totalSteps: number;
  /** Floor as a fraction of the base rate (default 0). */
  minLrRatio?: number;
}

/**
 * Linear warmup then half a cosine from 1 down to `minLrRatio` at `totalSteps`, flat after:
 * min + (1 − min)·½(1 + cos(π·progress)).
 * @example cosineSchedule({ warmupSteps: 10, totalSteps: 110 })(60); // 0.5
 */
export function cosineSchedule(o: CosineOptions): LrLambda {
  const warm = o.warmupSteps ?? 0;
  const min = o.minLrRatio ?? 0;
  return (step) => {
    if (step < warm) return step / warm;
    const progress = Math.min(1, (step - warm) / Math.max(1, o.totalSteps - warm));
    return min + (1 - min) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}

/** Options of the warmup–stable–decay schedule: warmup, total steps, the length of the final linear cooldown and its floor. */
export interface WsdOptions {
  warmupSteps?: number;
  totalSteps: number;
  /** Length of the final linear cooldown (default 20% of totalSteps). */
  decaySteps?: number;
  minLrRatio?: number;
}

/**
 * Warmup-stable-decay (trapezoidal): linear warmup, constant 1, then a linear cooldown to
 * `minLrRatio` over the last `decaySteps` steps ending at `totalSteps`.
 * @example wsdSchedule({ warmupSteps: 10, totalSteps: 100, decaySteps: 20 })(90); // 0.5
 */
export function wsdSchedule(o: WsdOptions): LrLambda {
  const warm = o.warmupSteps ?? 0;
  const decay = o.decaySteps ?? Math.round(0.2 * o.totalSteps);
  const min = o.minLrRatio ?? 0;
  const start = o.totalSteps - decay;
  if (start < warm) throw new Error(`wsdSchedule: warmup (${warm}) and decay (${decay}) steps do not fit in ${o.totalSteps} total steps`);
  return (step) => {
    if (step < warm) return step / warm;
    if (step < start) return 1;
    return min + (1 - min) * Math.max(0, 1 - (step - start) / Math.max(1, decay));
  };
}

/**
 * The product of several multipliers (e.g. a warmup times a decay).
 * @example new LambdaLR(opt, multiplySchedules(linearWarmup(100), (step) => 0.999 ** step));
 */
export function multiplySchedules(...fs: LrLambda[]): LrLambda {
  return (step) => fs.reduce((acc, f) => acc * f(step), 1);
}

/**
 * Runs schedules one after another, like `SequentialLR`: `fs[i]` from `milestones[i-1]`, each
 * restarted at its own step 0.
 * @example chainSchedules([linearWarmup(10), constantSchedule()], [10]);
 */
export function chainSchedules(fs: LrLambda[], milestones: number[]): LrLambda {
  if (milestones.length !== fs.length - 1) throw new Error(`chainSchedules: ${fs.length} schedules need ${fs.length - 1} milestones, got ${milestones.length}`);
  return (step) => {
    let i = 0;
    while (i < milestones.length && step >= milestones[i]!) i++;
    return fs[i]!(step - (i ? milestones[i - 1]! : 0));
  };
}

/** The learning-rate keys a scheduler scales (Muon's auxiliary Adam rate included). */
const LR_KEYS = ['lr', 'adamLr'] as const;

/**
 * Sets each group's learning rate to base·λ(step), like PyTorch's `LambdaLR`: construction applies
 * step 0; call `step()` after each `optimizer.step()`. One λ for all groups or one per group.
 * The base rates are the groups' rates at construction (both `lr` and Muon's `adamLr`).
 * @example
 * const sched = new LambdaLR(opt, cosineSchedule({ warmupSteps: 100, totalSteps: 5000 }));
 * for (...) { loss.backward(); opt.step(); opt.zeroGrad(); sched.step(); }
 */
export class LambdaLR {
  readonly baseLrs: Record<string, number>[];
  readonly lambdas: LrLambda[];
  /** Steps taken so far (PyTorch's `last_epoch`). */
  lastStep = 0;

  constructor(readonly optimizer: Optimizer<object>, lrLambda: LrLambda | LrLambda[]) {
    const groups = optimizer.paramGroups as unknown as Record<string, unknown>[];
    this.lambdas = Array.isArray(lrLambda) ? lrLambda : groups.map(() => lrLambda);
    if (this.lambdas.length !== groups.length) throw new Error(`LambdaLR: expected ${groups.length} lr lambdas (one per group), got ${this.lambdas.length}`);
    this.baseLrs = groups.map((g) => {
      const base: Record<string, number> = {};
      for (const k of LR_KEYS) if (typeof g[k] === 'number') base[k] = g[k] as number;
      return base;
    });
    this.#apply();
  }
  #apply(): void {
    const groups = this.optimizer.paramGroups as unknown as Record<string, unknown>[];
    groups.forEach((g, i) => {
      const f = this.lambdas[i]!(this.lastStep);
      for (const [k, base] of Object.entries(this.baseLrs[i]!)) g[k] = base * f;
    });
  }
  /** Advances one step and updates the groups' rates. */
  step(): void {
    this.lastStep++;
    this.#apply();
  }
  /** The rates just set, one per group. */
  getLastLr(): number[] {
    return (this.optimizer.paramGroups as unknown as { lr: number }[]).map((g) => g.lr);
  }
  stateDict(): { lastStep: number; baseLrs: Record<string, number>[] } {
    return { lastStep: this.lastStep, baseLrs: this.baseLrs.map((b) => ({ ...b })) };
  }
  loadStateDict(sd: { lastStep: number; baseLrs: Record<string, number>[] }): void {
    this.lastStep = sd.lastStep;
    sd.baseLrs.forEach((b, i) => Object.assign(this.baseLrs[i]!, b));
    this.#apply();
  }
}
