/**
 * @file A small UNet noise predictor for DDPM (Ho et al. 2020): sinusoidal timestep embeddings,
 * residual conv blocks with GroupNorm + SiLU and an additive timestep projection, two
 * downsamplings (strided conv) and two upsamplings (nearest ×2 + conv) with skip connections.
 */
import { cat, interpolate, silu, tensor, type Tensor } from '@qgrad/core';
import { ModuleList } from '../containers.js';
import { zeros_ } from '../init.js';
import { Conv2d } from '../layers/conv.js';
import { Linear } from '../layers/linear.js';
import { GroupNorm } from '../layers/norm.js';
import { Module } from '../module.js';
import type { ModelInitOptions } from './llama.js';

/**
 * Transformer-style sinusoidal embeddings of timesteps t [N] → [N, dim]: [sin(t·ωᵢ), cos(t·ωᵢ)]
 * with ωᵢ = maxPeriod^(−i/(dim/2)), as in the DDPM and DiT code.
 * @example timestepEmbedding([0, 500], 32).shape; // [2, 32]
 */
export function timestepEmbedding(t: readonly number[], dim: number, maxPeriod = 10000, dtype: 'float32' | 'float64' = 'float32'): Tensor {
  if (dim % 2) throw new Error(`timestepEmbedding: dim ${dim} must be even`);
  const half = dim / 2;
  const out = new Float64Array(t.length * dim);
  t.forEach((ti, n) => {
    for (let i = 0; i < half; i++) {
      const a = ti * Math.exp((-Math.log(maxPeriod) * i) / half);
      out[n * dim + i] = Math.sin(a);
      out[n * dim + half + i] = Math.cos(a);
    }
  });
  return tensor(out, { shape: [t.length, dim], dtype: 'float64' }).to(dtype);
}

/** The diffusion UNet's shape: input and base channels, the per-level multipliers, the timestep embedding width and GroupNorm groups. */
export interface UNetConfig {
  inChannels: number;
  /** Channels at full resolution; each downsampling uses channelMults[i]·baseChannels. */
  baseChannels: number;
  channelMults: number[];
  /** Width of the timestep embedding MLP (default 4·baseChannels). */
  timeDim?: number;
  /** GroupNorm groups (must divide every channel count; default 8). */
  groups?: number;
}

/** A UNet for 28×28 MNIST: 32 → 64 → 64 channels at 28, 14, 7 pixels. */
export const mnistUNetConfig: UNetConfig = { inChannels: 1, baseChannels: 32, channelMults: [1, 2, 2] };

/**
 * norm → SiLU → conv, + time projection, norm → SiLU → conv, + (1×1-projected) input.
 * @example new ResBlock(32, 64, 128, 8).forward(x, tEmb); // x [N, 32, H, W], tEmb [N, 128] → [N, 64, H, W]
 */
export class ResBlock extends Module {
  norm1: GroupNorm;
  conv1: Conv2d;
  time: Linear;
  norm2: GroupNorm;
  conv2: Conv2d;
  skip: Conv2d | null;
  constructor(cin: number, cout: number, timeDim: number, groups: number, opts: ModelInitOptions = {}) {
    super();
    this.norm1 = this.registerModule('norm1', new GroupNorm(Math.min(groups, cin), cin, { dtype: opts.dtype }));
    this.conv1 = this.registerModule('conv1', new Conv2d(cin, cout, 3, { padding: 1, ...opts }));
    this.time = this.registerModule('time', new Linear(timeDim, cout, opts));
    this.norm2 = this.registerModule('norm2', new GroupNorm(Math.min(groups, cout), cout, { dtype: opts.dtype }));
    this.conv2 = this.registerModule('conv2', new Conv2d(cout, cout, 3, { padding: 1, ...opts }));
    this.skip = this.registerModule('skip', cin === cout ? null : new Conv2d(cin, cout, 1, opts));
    // the residual branch starts at zero, so each block starts as the identity (as in DDPM/ADM)
    zeros_(this.conv2.weight);
    zeros_(this.conv2.bias!);
  }
  /** x [N, cin, H, W], temb [N, timeDim] → [N, cout, H, W]. */
  forward(x: Tensor, temb: Tensor): Tensor {
    let h = this.conv1.forward(silu(this.norm1.forward(x))); // [N, cout, H, W]
    h = h.add(this.time.forward(silu(temb)).unsqueeze(-1).unsqueeze(-1)); // + [N, cout, 1, 1]
    h = this.conv2.forward(silu(this.norm2.forward(h)));
    return h.add(this.skip ? this.skip.forward(x) : x);
  }
}

/**
 * Predicts the noise ε in x_t [N, C, H, W] at integer timesteps t (H, W divisible by
 * 2^(levels − 1)).
 * @example new UNet(mnistUNetConfig).forward(randn([2, 1, 28, 28]), [10, 900]).shape; // [2, 1, 28, 28]
 */
export class UNet extends Module {
  time_mlp1: Linear;
  time_mlp2: Linear;
  conv_in: Conv2d;
  down: ModuleList<ResBlock>;
  downsample: ModuleList<Conv2d>;
  mid: ResBlock;
  up: ModuleList<ResBlock>;
  upsample: ModuleList<Conv2d>;
  norm_out: GroupNorm;
  conv_out: Conv2d;
  readonly timeDim: number;
  constructor(readonly config: UNetConfig, opts: ModelInitOptions = {}) {
    super();
    const { baseChannels: c0, channelMults: mults, inChannels } = config;
    const groups = config.groups ?? 8;
    const td = (this.timeDim = config.timeDim ?? 4 * c0);
    const ch = mults.map((m) => m * c0);
    this.time_mlp1 = this.registerModule('time_mlp1', new Linear(c0, td, opts));
    this.time_mlp2 = this.registerModule('time_mlp2', new Linear(td, td, opts));
    this.conv_in = this.registerModule('conv_in', new Conv2d(inChannels, ch[0]!, 3, { padding: 1, ...opts }));
    // level i works at resolution H/2^i with ch[i] channels
    this.down = this.registerModule('down', new ModuleList(ch.map((c, i) => new ResBlock(i ? ch[i - 1]! : ch[0]!, c, td, groups, opts))));
    this.downsample = this.registerModule('downsample', new ModuleList(ch.slice(0, -1).map((c) => new Conv2d(c, c, 3, { stride: 2, padding: 1, ...opts }))));
    const top = ch[ch.length - 1]!;
    this.mid = this.registerModule('mid', new ResBlock(top, top, td, groups, opts));
    // up[i] runs at level i on [upsampled deeper features, skip of level i]
    this.up = this.registerModule('up', new ModuleList(ch.map((c, i) => new ResBlock((i === ch.length - 1 ? top : ch[i + 1]!) + c, c, td, groups, opts))));
    this.upsample = this.registerModule('upsample', new ModuleList(ch.slice(1).map((c) => new Conv2d(c, c, 3, { padding: 1, ...opts }))));
    this.norm_out = this.registerModule('norm_out', new GroupNorm(Math.min(groups, ch[0]!), ch[0]!, { dtype: opts.dtype }));
    this.conv_out = this.registerModule('conv_out', new Conv2d(ch[0]!, inChannels, 3, { padding: 1, ...opts }));
    zeros_(this.conv_out.weight); // predict ε = 0 at first: a stable start for the MSE
    zeros_(this.conv_out.bias!);
  }
  forward(x: Tensor, t: readonly number[]): Tensor {
    const levels = this.config.channelMults.length;
    const f = 2 ** (levels - 1);
    if (x.ndim !== 4 || x.shape[1] !== this.config.inChannels || x.shape[2]! % f || x.shape[3]! % f || t.length !== x.shape[0]) {
      throw new Error(`UNet: expected x [N, ${this.config.inChannels}, H, W] with H, W divisible by ${f} and N timesteps, got x [${x.shape.join(', ')}] and ${t.length} timesteps`);
    }
    const dtype = x.dtype === 'float64' ? 'float64' : 'float32';
    const emb = timestepEmbedding(t, this.config.baseChannels, 10000, dtype); // [N, c0]
    const temb = this.time_mlp2.forward(silu(this.time_mlp1.forward(emb))); // [N, timeDim]
    let h = this.conv_in.forward(x); // [N, ch0, H, W]
    const skips: Tensor[] = [];
    for (let i = 0; i < levels; i++) {
      h = this.down.at(i).forward(h, temb); // [N, ch_i, H/2^i, W/2^i]
      skips.push(h);
      if (i < levels - 1) h = this.downsample.at(i).forward(h); // [N, ch_i, H/2^(i+1), W/2^(i+1)]
    }
    h = this.mid.forward(h, temb);
    for (let i = levels - 1; i >= 0; i--) {
      h = this.up.at(i).forward(cat([h, skips[i]!], 1), temb); // [N, ch_i, H/2^i, W/2^i]
      if (i > 0) h = this.upsample.at(i - 1).forward(interpolate(h, { scaleFactor: 2 })); // [N, ch_i, H/2^(i-1), W/2^(i-1)]
    }
    return this.conv_out.forward(silu(this.norm_out.forward(h))); // [N, C, H, W]
  }
}
