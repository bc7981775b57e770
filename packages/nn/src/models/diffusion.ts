/**
 * @file Denoising diffusion (DDPM, Ho et al. 2020): linear or cosine β schedules, the
 * noise-prediction training loss, and the ancestral DDPM and deterministic/stochastic DDIM
 * (Song et al. 2021) samplers. The denoiser is any `(x_t, t) → output` function (e.g. UNet) whose output is
 * ε̂, x̂₀ or v̂ as the process's `prediction` says (diffusers' `prediction_type`).
 */
import { mseLoss, noGrad, randint, randn, tensor, type Generator, type Tensor } from '@qgrad/core';

/** A denoiser: x_t [N, …] and integer timesteps t (N of them) → its prediction (ε̂, x̂₀ or v̂) of x_t's shape. */
export type NoisePredictor = (x: Tensor, t: number[]) => Tensor;

/**
 * What the denoiser outputs: the noise ε ('epsilon', DDPM), the clean image x₀ ('x0'), or the velocity
 * v = √ᾱ·ε − √(1−ᾱ)·x₀ ('v', Salimans & Ho 2022). Each is trained by the MSE to its own target.
 */
export type PredictionType = 'epsilon' | 'x0' | 'v';

/** The noise schedule of a diffusion process: DDPM's linear betas or the cosine schedule. */
export type BetaSchedule = 'linear' | 'cosine';

/** Options of a diffusion process: the number of steps and the beta schedule. */
export interface DiffusionOptions {
  /** Number of diffusion steps T (default 1000). */
  timesteps?: number;
  /** 'linear' (Ho et al.) or 'cosine' (Nichol & Dhariwal); default 'linear'. */
  schedule?: BetaSchedule;
  /** Endpoints of the linear schedule (default 1e-4 and 0.02, as DDPM for T = 1000). */
  betaStart?: number;
  betaEnd?: number;
  /** What the denoiser predicts (default 'epsilon'); the loss's target and the samplers' reading of its output. */
  prediction?: PredictionType;
}

/** Options of the DDPM/DDIM samplers: the generator, clipping of the predicted x₀, and a progress callback. */
export interface SamplerOptions {
  generator?: Generator;
  /** Clamp the predicted x₀ to [−1, 1] at every step (default true: data lives there). */
  clipDenoised?: boolean;
  /** Called after every step with the number of steps done and the total. */
  onStep?: (done: number, total: number) => void;
}

/** [√ᾱ_t, √(1 − ᾱ_t)]: numbers, or per-sample tensors [N, 1, …]. */
type Coefs = [number, number] | [Tensor, Tensor];
const coefs = (ab: number): Coefs => [Math.sqrt(ab), Math.sqrt(1 - ab)];

/**
 * β_t for t = 0 … T−1. 'linear' spaces β evenly from betaStart to betaEnd; 'cosine' takes
 * ᾱ(t) = cos²(((t/T) + s)/(1 + s)·π/2) / ᾱ(0) with s = 0.008 and β_t = min(1 − ᾱ_t/ᾱ_{t−1}, 0.999).
 * @example betaSchedule('cosine', 1000)[999]; // 0.999
 */
export function betaSchedule(schedule: BetaSchedule, timesteps: number, betaStart = 1e-4, betaEnd = 0.02): Float64Array {
  const b = new Float64Array(timesteps);
  if (schedule === 'linear') {
    for (let t = 0; t < timesteps; t++) b[t] = timesteps === 1 ? betaStart : betaStart + ((betaEnd - betaStart) * t) / (timesteps - 1);
  } else if (schedule === 'cosine') {
    const s = 0.008;
    const f = (t: number) => Math.cos((((t / timesteps) + s) / (1 + s)) * (Math.PI / 2)) ** 2;
    for (let t = 0; t < timesteps; t++) b[t] = Math.min(1 - f(t + 1) / f(t), 0.999);
  } else {
    const never: never = schedule;
    throw new Error(`betaSchedule: unknown schedule '${String(never)}' (use 'linear' or 'cosine')`);
  }
  return b;
}

/**
 * The forward (noising) process and its reverse samplers.
 * @example
 * const ddpm = new Diffusion({ timesteps: 200, schedule: 'cosine' }); // prediction: 'x0' makes the UNet predict x₀
 * const loss = ddpm.loss((x, t) => unet.forward(x, t), images); // images in [−1, 1]
 * const samples = ddpm.sampleDdim((x, t) => unet.forward(x, t), [16, 1, 28, 28], 50);
 */
export class Diffusion {
  readonly timesteps: number;
  readonly betas: Float64Array;
  /** ᾱ_t = ∏_{s ≤ t} (1 − β_s). */
  readonly alphasCumprod: Float64Array;
  readonly prediction: PredictionType;
  constructor(opts: DiffusionOptions = {}) {
    this.timesteps = opts.timesteps ?? 1000;
    if (!(Number.isInteger(this.timesteps) && this.timesteps >= 1)) throw new RangeError(`Diffusion: timesteps must be a positive integer, got ${opts.timesteps}`);
    this.betas = betaSchedule(opts.schedule ?? 'linear', this.timesteps, opts.betaStart, opts.betaEnd);
    this.alphasCumprod = new Float64Array(this.timesteps);
    let acc = 1;
    this.betas.forEach((b, t) => (this.alphasCumprod[t] = acc *= 1 - b));
    this.prediction = opts.prediction ?? 'epsilon';
    if (!['epsilon', 'x0', 'v'].includes(this.prediction)) throw new RangeError(`Diffusion: prediction must be 'epsilon', 'x0' or 'v', got '${String(opts.prediction)}'`);
  }

  /** Per-sample coefficients broadcast over x [N, …]: a tensor [N, 1, …, 1] of x's dtype. */
  #coef(values: number[], x: Tensor): Tensor {
    return tensor(values, { dtype: x.dtype }).reshape([values.length, ...x.shape.slice(1).map(() => 1)]); // [N, 1, …]
  }

  /** x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε, sampling q(x_t | x₀). */
  qSample(x0: Tensor, t: number[], noise: Tensor): Tensor {
    const ab = t.map((ti) => this.alphasCumprod[ti]!);
    return x0.mul(this.#coef(ab.map(Math.sqrt), x0)).add(noise.mul(this.#coef(ab.map((a) => Math.sqrt(1 - a)), x0)));
  }

  /**
   * The denoiser's training target for x₀ noised by `noise` at t: ε, x₀ or v = √ᾱ_t·ε − √(1 − ᾱ_t)·x₀.
   * @example new Diffusion({ prediction: 'v' }).target(x0, noise, [999]); // ≈ −x₀ at high noise
   */
  target(x0: Tensor, noise: Tensor, t: number[]): Tensor {
    const p = this.prediction;
    if (p === 'epsilon') return noise;
    if (p === 'x0') return x0;
    if (p === 'v') {
      const [s, s1] = this.#coefsOf(t, x0);
      return noise.mul(s).sub(x0.mul(s1));
    }
    const never: never = p;
    throw new Error(`Diffusion: unknown prediction '${String(never)}'`);
  }

  /**
   * ε̂ from the denoiser's output at (x_t, t): the output itself ('epsilon'), (x_t − √ᾱ_t·x̂₀)/√(1 − ᾱ_t)
   * ('x0'), or √(1 − ᾱ_t)·x_t + √ᾱ_t·v̂ ('v').
   */
  epsilonOf(output: Tensor, x: Tensor, t: number[]): Tensor {
    return this.#epsilon(output, x, this.#coefsOf(t, x));
  }

  /** x̂₀ from the denoiser's output at (x_t, t): (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t, the output itself, or √ᾱ_t·x_t − √(1 − ᾱ_t)·v̂. */
  x0Of(output: Tensor, x: Tensor, t: number[]): Tensor {
    return this.#x0(output, x, this.#coefsOf(t, x));
  }

  /** [√ᾱ_t, √(1 − ᾱ_t)] as numbers when every t is the same (the samplers), else per sample [N, 1, …] (taken in float64, then cast). */
  #coefsOf(t: number[], x: Tensor): Coefs {
    if (t.length !== x.shape[0]) throw new Error(`Diffusion: got ${t.length} timesteps for x [${x.shape.join(', ')}]`);
    const ab = t.map((ti) => this.alphasCumprod[ti]!);
    if (ab.every((a) => a === ab[0])) return coefs(ab[0]!);
    return [this.#coef(ab.map(Math.sqrt), x), this.#coef(ab.map((a) => Math.sqrt(1 - a)), x)];
  }
  #epsilon(out: Tensor, x: Tensor, [s, s1]: Coefs): Tensor {
    const p = this.prediction;
    if (p === 'epsilon') return out;
    if (p === 'x0') return x.sub(out.mul(s)).div(s1);
    if (p === 'v') return x.mul(s1).add(out.mul(s));
    const never: never = p;
    throw new Error(`Diffusion: unknown prediction '${String(never)}'`);
  }
  #x0(out: Tensor, x: Tensor, [s, s1]: Coefs): Tensor {
    const p = this.prediction;
    if (p === 'epsilon') return x.sub(out.mul(s1)).div(s);
    if (p === 'x0') return out;
    if (p === 'v') return x.mul(s).sub(out.mul(s1));
    const never: never = p;
    throw new Error(`Diffusion: unknown prediction '${String(never)}'`);
  }

  /**
   * The simple DDPM objective: t ~ U{0 … T−1}, ε ~ N(0, I), ‖model(x_t, t) − target‖² averaged, the target
   * being ε, x₀ or v as `prediction` says. Draws the N timesteps first, then the noise, from `generator`.
   */
  loss(model: NoisePredictor, x0: Tensor, opts: { generator?: Generator } = {}): Tensor {
    const n = x0.shape[0]!;
    const t = Array.from(randint(0, this.timesteps, [n], { generator: opts.generator }).dataSync(), Number);
    const noise = randn([...x0.shape], { dtype: x0.dtype, generator: opts.generator });
    return mseLoss(model(this.qSample(x0, t, noise), t), this.target(x0, noise, t));
  }

  /** x̂₀ from the denoiser's output at one ᾱ_t, optionally clamped to [−1, 1]. */
  #predictX0(x: Tensor, out: Tensor, ab: number, clip: boolean): Tensor {
    const x0 = this.#x0(out, x, coefs(ab));
    return clip ? x0.clamp(-1, 1) : x0;
  }

  /**
   * Ancestral sampling with all T steps: from x_T ~ N(0, I), x_{t−1} is drawn from the
   * posterior q(x_{t−1} | x_t, x̂₀) with mean c₁·x̂₀ + c₂·x_t and variance β̃_t =
   * β_t(1 − ᾱ_{t−1})/(1 − ᾱ_t).
   */
  sample(model: NoisePredictor, shape: number[], opts: SamplerOptions = {}): Tensor {
    const clip = opts.clipDenoised ?? true;
    return noGrad(() => {
      let x = randn(shape, { generator: opts.generator });
      const n = shape[0]!;
      for (let t = this.timesteps - 1; t >= 0; t--) {
        const ab = this.alphasCumprod[t]!;
        const abPrev = t > 0 ? this.alphasCumprod[t - 1]! : 1;
        const beta = this.betas[t]!;
        const x0 = this.#predictX0(x, model(x, new Array(n).fill(t)), ab, clip);
        const c1 = (beta * Math.sqrt(abPrev)) / (1 - ab);
        const c2 = ((1 - abPrev) * Math.sqrt(1 - beta)) / (1 - ab);
        x = x0.mul(c1).add(x.mul(c2));
        if (t > 0) x = x.add(randn(shape, { generator: opts.generator }).mul(Math.sqrt((beta * (1 - abPrev)) / (1 - ab))));
        opts.onStep?.(this.timesteps - t, this.timesteps);
      }
      return x;
    });
  }

  /**
   * DDIM sampling over `steps` evenly spaced timesteps ((steps−1)·⌊T/steps⌋ down to 0). eta = 0 is the
   * deterministic DDIM; eta = 1 matches DDPM's variance on the sub-sequence:
   * x_prev = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z, σ = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev).
   */
  sampleDdim(model: NoisePredictor, shape: number[], steps = 50, opts: SamplerOptions & { eta?: number } = {}): Tensor {
    const clip = opts.clipDenoised ?? true;
    const eta = opts.eta ?? 0;
    const k = Math.max(1, Math.min(steps, this.timesteps));
    // 'leading' spacing as diffusers' DDIMScheduler: (k−1)·⌊T/k⌋, …, ⌊T/k⌋, 0. Starting below T−1
    // matters with ε-prediction: where ᾱ_t ≈ 0 (the cosine schedule's last steps) x̂₀ = (x − √(1−ᾱ)ε̂)/√ᾱ
    // amplifies every error of ε̂ by 1/√ᾱ_t
    const stride = Math.floor(this.timesteps / k);
    const seq = Array.from({ length: k }, (_, i) => (k - 1 - i) * stride);
    return noGrad(() => {
      let x = randn(shape, { generator: opts.generator });
      const n = shape[0]!;
      seq.forEach((t, i) => {
        const ab = this.alphasCumprod[t]!;
        const abPrev = i + 1 < k ? this.alphasCumprod[seq[i + 1]!]! : 1;
        const out = model(x, new Array(n).fill(t));
        const x0 = this.#predictX0(x, out, ab, clip);
        // ε consistent with the clamped x̂₀
        const eps = clip ? x.sub(x0.mul(Math.sqrt(ab))).div(Math.sqrt(1 - ab)) : this.#epsilon(out, x, coefs(ab));
        const sigma = eta * Math.sqrt((1 - abPrev) / (1 - ab)) * Math.sqrt(1 - ab / abPrev);
        x = x0.mul(Math.sqrt(abPrev)).add(eps.mul(Math.sqrt(Math.max(0, 1 - abPrev - sigma * sigma))));
        if (sigma > 0) x = x.add(randn(shape, { generator: opts.generator }).mul(sigma));
        opts.onStep?.(i + 1, k);
      });
      return x;
    });
  }
}
