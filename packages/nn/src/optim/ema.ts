/**
 * @file Exponential moving average of weights (Polyak averaging, as timm's ModelEma / the
 * `ema_avg` of `torch.optim.swa_utils`): shadow ← decay·shadow + (1 − decay)·param.
 */
import { noGrad, type Tensor } from '@qgrad/core';
import { lerp_ } from './optimizer.js';

/** Options of `EMA`: the decay and its warmup. */
export interface EMAOptions {
  /** Decay per update (default 0.999). */
  decay?: number;
  /** Use min(decay, (1 + n)/(10 + n)) after n updates so early averages are not stuck at init. */
  warmup?: boolean;
}

/**
 * Keeps shadow copies of `params` that track their moving average; `copyTo` writes the averages
 * into the live parameters (e.g. for evaluation), `store`/`restore` put the live ones back.
 * @example
 * const ema = new EMA(model.parameters(), { decay: 0.999 });
 * // after each optimizer step: ema.update();
 * ema.store(); ema.copyTo(); evaluate(model); ema.restore();
 */
export class EMA {
  readonly params: Tensor[];
  shadow: Tensor[];
  numUpdates = 0;
  readonly decay: number;
  readonly warmup: boolean;
  #stored: Tensor[] | null = null;

  constructor(params: Iterable<Tensor>, opts: EMAOptions = {}) {
    this.params = [...params];
    this.decay = opts.decay ?? 0.999;
    this.warmup = opts.warmup ?? false;
    if (!(this.decay >= 0 && this.decay <= 1)) throw new RangeError(`EMA: decay must be in [0, 1], got ${this.decay}`);
    this.shadow = noGrad(() => this.params.map((p) => p.detach().clone()));
  }
  /** The decay the next update uses. */
  currentDecay(): number {
    return this.warmup ? Math.min(this.decay, (1 + this.numUpdates) / (10 + this.numUpdates)) : this.decay;
  }
  /** shadow ← decay·shadow + (1 − decay)·param, for every parameter. */
  update(): void {
    const d = this.currentDecay();
    noGrad(() => this.params.forEach((p, i) => lerp_(this.shadow[i]!, p, 1 - d)));
    this.numUpdates++;
  }
  /** Writes the averaged values into `params` (default: the tracked parameters). */
  copyTo(params: Tensor[] = this.params): void {
    noGrad(() => params.forEach((p, i) => p.copy_(this.shadow[i]!)));
  }
  /** Saves the live parameter values (before `copyTo`), for `restore`. */
  store(): void {
    this.#stored = noGrad(() => this.params.map((p) => p.detach().clone()));
  }
  restore(): void {
    if (!this.#stored) throw new Error('EMA.restore: nothing stored; call store() first');
    const s = this.#stored;
    noGrad(() => this.params.forEach((p, i) => p.copy_(s[i]!)));
    this.#stored = null;
  }
  stateDict(): { shadow: Tensor[]; numUpdates: number } {
    return { shadow: noGrad(() => this.shadow.map((t) => t.clone())), numUpdates: this.numUpdates };
  }
  loadStateDict(sd: { shadow: Tensor[]; numUpdates: number }): void {
    if (sd.shadow.length !== this.shadow.length) throw new Error(`EMA.loadStateDict: ${sd.shadow.length} tensors in the checkpoint, ${this.shadow.length} tracked`);
    noGrad(() => sd.shadow.forEach((t, i) => this.shadow[i]!.copy_(t)));
    this.numUpdates = sd.numUpdates;
  }
}
