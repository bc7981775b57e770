/**
 * @file EfficientDM's TALSQ (temporal activation LSQ, methods-2.md §10): an activation quantizer
 * with one learned step size (and zero point, when asymmetric) per timestep bucket, picked by the t
 * of the running forward (TimestepModule's context), and `talsq(model)`, which installs it in
 * place of every calibrated input quantizer. The LoRA layers and the distillation are efficientdm.ts.
 */
import { embedding, noGrad, ones, tensor, zeros, type Tensor } from '@qgrad/core';
import { Parameter } from '@qgrad/nn';
import { fakeQuantView } from '../quantizer/apply.js';
import { ActQuantizer, type ActQuantConfig } from '../qat/quantizers.js';
import type { QuantizerConfig } from '../quantizer/config.js';
import type { TimestepContext, TimestepModule } from './calibration.js';

/**
 * K equal buckets of the timesteps 0 … T−1: t belongs to bucket ⌊t·K/T⌋. With K DDIM steps
 * (spacing ⌊T/K⌋, T a multiple of K) every sampling step has its own bucket, which is EfficientDM's
 * one step size per sampling step.
 * @example new TimestepBuckets(1000, 20).bucketOf(950); // 19
 */
export class TimestepBuckets {
  constructor(readonly timesteps: number, readonly count: number) {
    if (!(Number.isInteger(timesteps) && timesteps >= 1)) throw new RangeError(`TimestepBuckets: timesteps must be a positive integer, got ${timesteps}`);
    if (!(Number.isInteger(count) && count >= 1 && count <= timesteps)) throw new RangeError(`TimestepBuckets: count must be an integer in 1 … ${timesteps}, got ${count}`);
  }
  bucketOf(t: number): number {
    if (!(Number.isInteger(t) && t >= 0 && t < this.timesteps)) throw new RangeError(`TimestepBuckets: timestep ${t} is outside 0 … ${this.timesteps - 1}`);
    return Math.floor((t * this.count) / this.timesteps);
  }
}

/** The learned-scale config TALSQ trains from a calibration config: same grid, learned scale without LSQ's gradient scale (as the reference). */
function learnedConfig(c: ActQuantConfig): ActQuantConfig {
  const rule = typeof c.scale === 'object' ? c.scale.rule : undefined;
  const { estimator: _drop, ...rest } = c;
  return { ...rest, scale: { mode: 'learned', ...(rule !== undefined && { rule }), gradScale: 1 } as QuantizerConfig['scale'] };
}

/**
 * An activation quantizer with a step size Δ_k (and zero point z_k when asymmetric) per timestep
 * bucket k, all learned (LSQ's straight-through round, clamp mask, no gradient scale: EfficientDM's
 * form). Each sample of a batch uses its own bucket, read from `context` (set by TimestepModule), so
 * a batch at one timestep updates one Δ_k only. The reference counts forwards instead (index =
 * calls mod T, one call per sampling step); by t the choice survives other step counts and batches
 * that mix timesteps.
 * @example
 * const q = new TemporalActQuantizer({ grid: 'int', bits: 8 }, new TimestepBuckets(1000, 20), model.context);
 * model.context.run([0, 950], () => q.forward(x)); // rows use Δ_0 and Δ_19
 */
export class TemporalActQuantizer extends ActQuantizer {
  readonly buckets: TimestepBuckets;
  readonly #context: TimestepContext;

  constructor(config: ActQuantConfig, buckets: TimestepBuckets, context: TimestepContext, who = 'TemporalActQuantizer') {
    super(learnedConfig(config), who);
    if (this.plan.mode !== 'learned' || this.plan.granularity !== 'tensor') throw new Error(`${who}: TALSQ learns one per-tensor step size per timestep bucket; the config resolves to ${this.plan.mode} ${JSON.stringify(this.plan.granularity)}`);
    this.buckets = buckets;
    this.#context = context;
    const dtype = 'float32';
    // the registry reads the field, so the [1, 1] slots the base class registered now hold one row per bucket
    this.scale = Parameter(ones([buckets.count, 1], { dtype }));
    this.zeroPoint = this.plan.hasZeroPoint ? Parameter(zeros([buckets.count, 1], { dtype })) : null;
    this.initialized.fill_(1);
  }

  /** Every bucket starts from a calibrated per-tensor quantizer's (Δ, z), as the reference does. */
  static fromCalibrated(aq: ActQuantizer, config: ActQuantConfig, buckets: TimestepBuckets, context: TimestepContext, who = aq.plan.who): TemporalActQuantizer {
    if (!aq.scale || !aq.isInitialized) throw new Error(`${who}: TALSQ starts from a calibrated stored (fixed or learned) per-tensor scale; this input quantizer's scale is ${aq.scale ? 'not initialised yet (run calibration first)' : 'dynamic'}`);
    const q = new TemporalActQuantizer(config, buckets, context, who);
    noGrad(() => {
      q.scale!.copy_(aq.scale!.detach().reshape([1, 1]).expand([buckets.count, 1]));
      if (q.zeroPoint) q.zeroPoint.copy_(aq.zeroPoint ? aq.zeroPoint.detach().reshape([1, 1]).expand([buckets.count, 1]) : zeros([buckets.count, 1]));
    });
    q.enabled = aq.enabled;
    q.train(aq.training);
    return q;
  }

  /** Where the running forward's timesteps are read (the TimestepModule's context). */
  get context(): TimestepContext {
    return this.#context;
  }

  /** The bucket of each sample of the running forward. */
  activeBuckets(): number[] {
    const t = this.#context.current;
    if (!t) throw new Error(`${this.plan.who}: TALSQ picks its step size by the timestep, but no timesteps are set; run the model through TimestepModule.forward (or context.run)`);
    return t.map((ti) => this.buckets.bucketOf(ti));
  }

  override initFrom(x: Tensor): void {
    void x; // the per-bucket scales come from fromCalibrated, never from one batch
  }

  override forward(x: Tensor): Tensor {
    if (!this.enabled) return x;
    const k = this.activeBuckets();
    const n = x.shape[0]!;
    if (k.length !== n) throw new Error(`${this.plan.who}: the input has ${n} rows in dim 0 but the forward runs ${k.length} timesteps (x [${x.shape.join(', ')}])`);
    const idx = tensor(k, { dtype: 'int32' });
    const s = embedding(idx, this.scale!); // [N, 1]: Δ of each sample's bucket; the gradient scatters back to those rows only
    const z = this.zeroPoint ? embedding(idx, this.zeroPoint) : 0;
    const view = x.reshape([n, x.numel() / n]); // one sample per row
    return fakeQuantView(this.plan, view, s.to(x.dtype), typeof z === 'number' ? z : z.to(x.dtype), { lsqN: x.numel() }).reshape([...x.shape]);
  }

  override extraRepr(): string {
    return `${super.extraRepr()}, TALSQ ${this.buckets.count} buckets of T=${this.buckets.timesteps}`;
  }
}

/** A module with a replaceable input quantizer (QuantLinear, QuantConv2d, EfficientDMLinear). */
interface HasInputQuantizer {
  inputQuantizer: ActQuantizer | null;
}

/**
 * Replaces every calibrated stored-scale input quantizer inside `model` by a TemporalActQuantizer
 * with `buckets` buckets over the model's diffusion steps, each bucket starting at the calibrated
 * scale. `input` is the activation config the model was calibrated with (the learned form keeps
 * its grid). Returns the installed quantizers by layer name.
 * @example
 * ptq4dm(model, cal, { method: 'rtn', default: { weight: W4, input: A8 } });
 * talsq(model, { input: A8, timesteps: 1000, buckets: 20 });
 */
export function talsq(model: TimestepModule, o: { input: ActQuantConfig; timesteps: number; buckets: number }): [string, TemporalActQuantizer][] {
  const buckets = new TimestepBuckets(o.timesteps, o.buckets);
  const out: [string, TemporalActQuantizer][] = [];
  for (const [name, m] of model.namedModules()) {
    const layer = m as unknown as Partial<HasInputQuantizer>;
    const aq = layer.inputQuantizer;
    if (!(aq instanceof ActQuantizer) || aq instanceof TemporalActQuantizer || !aq.scale) continue;
    const q = TemporalActQuantizer.fromCalibrated(aq, o.input, buckets, model.context, `talsq: layer '${name}' input`);
    layer.inputQuantizer = q;
    out.push([name, q]);
  }
  if (!out.length) throw new Error('talsq: the model has no calibrated stored-scale input quantizers (quantize inputs with a fixed scale, e.g. ptq4dm with input { scale: { mode: "fixed" } })');
  return out;
}
