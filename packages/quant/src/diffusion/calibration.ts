/**
 * @file PTQ4DM's timestep-aware calibration (methods-2.md §11): `TimestepModule` (a noise predictor
 * whose forward takes t as a tensor, so `ptq`'s calibration batches can carry it, and that tells
 * TALSQ quantizers the t of each forward), the timestep distributions (NDTC normal, uniform, single),
 * `collectCalibration` (x_t from the float model's own DDIM sampler), `noiseCalibration` (the naive
 * pure-noise baseline) and `ptq4dm`, which feeds the set to `ptq`. TALSQ is talsq.ts.
 */
import { cat, dispose, Generator, keep, noGrad, randn, tensor, tidy, type Tensor } from '@qgrad/core';
import { Module, type Diffusion } from '@qgrad/nn';
import { ptq, type PtqOptions, type PtqReport } from '../ptq/ptq.js';

/** Anything that predicts ε from x_t [N, …], N integer timesteps and optional N class labels (nn's DiT and UNet fit). */
export interface TimestepPredictor {
  forward(x: Tensor, t: readonly number[], labels?: readonly number[]): Tensor;
}

/**
 * The timesteps of the forward running now, as `TimestepModule` sets them for the quantizers
 * inside (TALSQ picks its step size by them). Null outside a forward.
 * @example const ctx = new TimestepContext(); ctx.run([10, 20], () => ctx.current); // [10, 20]
 */
export class TimestepContext {
  current: readonly number[] | null = null;
  /** Runs `fn` with `current` set to `t`, restoring the previous value after (nested forwards keep working). */
  run<T>(t: readonly number[], fn: () => T): T {
    const before = this.current;
    this.current = t;
    try {
      return fn();
    } finally {
      this.current = before;
    }
  }
}

const toNumbers = (v: Tensor | readonly number[]): number[] => (Array.isArray(v) ? [...(v as readonly number[])] : Array.from((v as Tensor).dataSync(), Number));

/**
 * Wraps a noise predictor (`net`, e.g. nn's DiT) so that its forward takes the timesteps and labels
 * as int tensors or arrays. `ptq` runs a model on batches of tensors, so calibration batches
 * `[x_t, t, labels]` need it; and each forward announces its t on `context`, which is how TALSQ's
 * per-timestep step sizes are chosen. Quantize the wrapper: its layers are named `net.…`.
 * @example
 * const model = new TimestepModule(new DiT(mnistDiTConfig));
 * model.forward(randn([2, 1, 28, 28]), tensor([10, 900], { dtype: 'int32' }), [3, 7]).shape; // [2, 1, 28, 28]
 */
export class TimestepModule<N extends Module & TimestepPredictor = Module & TimestepPredictor> extends Module {
  net: N;
  readonly context = new TimestepContext();
  constructor(net: N) {
    super();
    this.net = this.registerModule('net', net);
  }
  forward(x: Tensor, t: Tensor | readonly number[], labels?: Tensor | readonly number[]): Tensor {
    const ts = toNumbers(t);
    const ys = labels === undefined ? undefined : toNumbers(labels);
    return this.context.run(ts, () => this.net.forward(x, ts, ys));
  }
}

/**
 * How calibration timesteps are drawn, in units of the sampler's step sequence (index j of K steps, real
 * timestep j·⌊T/K⌋, as `Diffusion.sampleDdim` spaces them): 'ndtc' is PTQ4DM's normal distribution,
 * j = clamp(trunc(N(mean, std)·K), 0, K − 1) (defaults 0.4, 0.4 as the reference script); 'uniform'
 * draws j uniformly from [0, ⌈upTo·K⌉) (default upTo 1; the reference's other mode is 0.8); 'single'
 * puts every sample at one index.
 */
export type TimestepSampling = { kind: 'ndtc'; mean?: number; std?: number } | { kind: 'uniform'; upTo?: number } | { kind: 'single'; index: number };

/**
 * n step indices in [0, steps) drawn by `sampling` from `generator` (one normal or uniform draw per sample).
 * @example sampleTimestepIndices(1024, 50, { kind: 'ndtc' }, new Generator(0)); // mostly around 20 = 0.4·50
 */
export function sampleTimestepIndices(n: number, steps: number, sampling: TimestepSampling, generator: Generator): number[] {
  if (!(Number.isInteger(steps) && steps >= 1)) throw new RangeError(`sampleTimestepIndices: steps must be a positive integer, got ${steps}`);
  const clampIndex = (j: number) => Math.min(steps - 1, Math.max(0, j));
  switch (sampling.kind) {
    case 'ndtc': {
      const mean = sampling.mean ?? 0.4;
      const std = sampling.std ?? 0.4;
      if (!(std >= 0)) throw new RangeError(`sampleTimestepIndices: ndtc std must be ≥ 0, got ${std}`);
      // trunc as Python's int() in the reference's generate_t
      return Array.from({ length: n }, () => clampIndex(Math.trunc((mean + std * generator.normal()) * steps)));
    }
    case 'uniform': {
      const upTo = sampling.upTo ?? 1;
      if (!(upTo > 0 && upTo <= 1)) throw new RangeError(`sampleTimestepIndices: uniform upTo must be in (0, 1], got ${upTo}`);
      const k = Math.max(1, Math.ceil(upTo * steps));
      return Array.from({ length: n }, () => clampIndex(Math.floor(generator.random() * k)));
    }
    case 'single':
      if (!(Number.isInteger(sampling.index) && sampling.index >= 0 && sampling.index < steps)) throw new RangeError(`sampleTimestepIndices: single index must be an integer in [0, ${steps}), got ${sampling.index}`);
      return new Array<number>(n).fill(sampling.index);
    default: {
      const never: never = sampling;
      throw new Error(`sampleTimestepIndices: unknown sampling ${JSON.stringify(never)}; kinds are ndtc, uniform, single`);
    }
  }
}

/**
 * The real timestep of DDIM step index j with K steps over T: j·⌊T/K⌋ (Diffusion.sampleDdim's 'leading' spacing).
 * @example ddimTimestep(20, 50, 1000); // 400
 */
export function ddimTimestep(j: number, steps: number, timesteps: number): number {
  return j * Math.floor(timesteps / Math.max(1, Math.min(steps, timesteps)));
}

/** Calibration inputs of a diffusion model: x_t [n, C, H, W] (kept), their timesteps, step indices and labels. */
export interface CalibrationSet {
  x: Tensor;
  t: number[];
  /** The sampler step index each sample was taken at (−1 for noiseCalibration). */
  index: number[];
  labels?: number[];
}

/** Options of `collectCalibration`. */
export interface CollectCalibrationOptions {
  /** Number of (x_t, t) pairs, one sampler trajectory each (PTQ4DM: 1024). */
  samples: number;
  /** Per-sample shape [C, H, W]. */
  shape: number[];
  /** DDIM steps K of the sampler (default 50). */
  steps?: number;
  /** How the step of each sample is drawn (default NDTC, mean 0.4, std 0.4). */
  sampling?: TimestepSampling;
  /** DDIM η (default 0, deterministic). */
  eta?: number;
  /** Trajectories run side by side (default 64). */
  batchSize?: number;
  /** Class labels, one per sample (class-conditional models). */
  labels?: readonly number[];
  generator?: Generator;
}

/**
 * PTQ4DM's calibration set: the float model's own DDIM sampler runs from pure noise, and sample i is
 * the sampler state x_t at its drawn step, labelled with that step's true timestep t (the reference
 * labels it with the loop position instead, which disagrees except near the middle; methods-2.md §11
 * records the choice). The state handed to the model at timestep t is exactly the x_t kept.
 * @example
 * const cal = collectCalibration(diffusion, dit, { samples: 256, shape: [1, 28, 28], steps: 50, labels });
 * ptq4dm(model, cal, { method: 'gptq', default: { weight: { grid: 'int', bits: 4 } } });
 */
export function collectCalibration(diffusion: Diffusion, model: TimestepPredictor, o: CollectCalibrationOptions): CalibrationSet {
  const steps = o.steps ?? 50;
  const g = o.generator ?? new Generator(0);
  const n = o.samples;
  if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`collectCalibration: samples must be a positive integer, got ${n}`);
  if (o.labels && o.labels.length !== n) throw new Error(`collectCalibration: got ${o.labels.length} labels for ${n} samples`);
  const index = sampleTimestepIndices(n, steps, o.sampling ?? { kind: 'ndtc' }, g);
  const t = index.map((j) => ddimTimestep(j, steps, diffusion.timesteps));
  const bs = o.batchSize ?? 64;
  const rows: Tensor[] = new Array(n);
  for (let lo = 0; lo < n; lo += bs) {
    const hi = Math.min(n, lo + bs);
    const labels = o.labels?.slice(lo, hi);
    const capture = (x: Tensor, ts: number[]) => {
      for (let i = lo; i < hi; i++) if (t[i] === ts[0]) rows[i] = keep(x.narrow(0, i - lo, 1).clone());
      return tidy(() => model.forward(x, ts, labels)); // a step's activations go with the step
    };
    // a tidy per chunk: the sampler's intermediates go, the kept rows stay
    tidy(() => void diffusion.sampleDdim(capture, [hi - lo, ...o.shape], steps, { generator: g, eta: o.eta ?? 0 }));
  }
  const x = noGrad(() => keep(cat(rows)));
  dispose(rows);
  return { x, t, index, ...(o.labels && { labels: [...o.labels] }) };
}

/**
 * The naive data-free baseline: x ~ N(0, I) (the x_T distribution) at timesteps drawn uniformly from
 * [0, T), so every layer is calibrated on inputs that only the first denoising step really sees.
 * @example const cal = noiseCalibration(diffusion, 256, [1, 28, 28], { generator: new Generator(1) });
 */
export function noiseCalibration(diffusion: Diffusion, samples: number, shape: number[], o: { labels?: readonly number[]; generator?: Generator } = {}): CalibrationSet {
  const g = o.generator ?? new Generator(0);
  const t = Array.from({ length: samples }, () => Math.floor(g.random() * diffusion.timesteps));
  const x = keep(randn([samples, ...shape], { generator: g }));
  return { x, t, index: new Array<number>(samples).fill(-1), ...(o.labels && { labels: [...o.labels] }) };
}

/**
 * A calibration set as `ptq`'s batches for a TimestepModule: [x_t, t (int32), labels (int32)?] per batch.
 * @example ptq(model, calibrationBatches(cal, 64), { method: 'rtn', default: { weight: { grid: 'int', bits: 8 } } });
 */
export function calibrationBatches(set: CalibrationSet, batchSize = 64): Tensor[][] {
  const n = set.t.length;
  const out: Tensor[][] = [];
  for (let lo = 0; lo < n; lo += batchSize) {
    const hi = Math.min(n, lo + batchSize);
    const b = [set.x.narrow(0, lo, hi - lo), tensor(set.t.slice(lo, hi), { dtype: 'int32' })];
    if (set.labels) b.push(tensor(set.labels.slice(lo, hi), { dtype: 'int32' }));
    out.push(b);
  }
  return out;
}

/**
 * PTQ4DM: `ptq` (any method, any rules) calibrated on a diffusion calibration set — weights by the
 * method on the layer inputs the set produces, activations by the inputs' fixed scales, which `ptq`
 * initialises from the whole set (give `input: { …, scale: { mode: 'fixed', rule: 'mse' } }`).
 * PTQ4DM's QDrop block reconstruction is not part of it.
 * @example
 * const cal = collectCalibration(diffusion, model, { samples: 256, shape: [1, 28, 28], labels });
 * ptq4dm(model, cal, { method: 'rtn', default: { weight: { grid: 'int', bits: 8 }, input: { grid: 'int', bits: 8, scale: { mode: 'fixed', rule: 'mse' } } } });
 */
export function ptq4dm<M extends TimestepModule>(model: M, set: CalibrationSet, o: PtqOptions & { batchSize?: number }): { model: M; report: PtqReport } {
  return ptq(model, calibrationBatches(set, o.batchSize ?? 64), o);
}
