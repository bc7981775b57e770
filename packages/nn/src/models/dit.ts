/**
 * @file A small Diffusion Transformer (DiT, Peebles & Xie 2023) noise predictor: patchify with a
 * strided conv, learned position embeddings, blocks conditioned on the timestep (and optionally a
 * class label) through adaLN-Zero, and a final adaLN + linear layer that unpatchifies to ε̂ (or x̂₀ / v̂,
 * as the Diffusion's `prediction` it is trained with).
 */
import { embedding, silu, tensor, zeros, type Tensor } from '@qgrad/core';
import { ModuleList } from '../containers.js';
import { normal_, zeros_ } from '../init.js';
import { MultiHeadAttention } from '../layers/attention.js';
import { Conv2d } from '../layers/conv.js';
import { Embedding, Linear } from '../layers/linear.js';
import { MLP } from '../layers/mlp.js';
import { LayerNorm } from '../layers/norm.js';
import { Module } from '../module.js';
import type { ModelInitOptions } from './llama.js';
import { timestepEmbedding } from './unet.js';

/** A DiT's shape (diffusion transformer): image and patch size, channels, width, depth, heads and optional class conditioning. */
export interface DiTConfig {
  imageSize: number;
  patchSize: number;
  inChannels: number;
  dim: number;
  depth: number;
  numHeads: number;
  /** MLP hidden width (default 4·dim). */
  mlpDim?: number;
  /** Class-conditional when set: labels in [0, numClasses), and numClasses itself means "no label". */
  numClasses?: number;
  /** Width of the sinusoidal timestep features fed to the conditioning MLP (default 64). */
  freqDim?: number;
}

/** A DiT for 28×28 MNIST: 4×4 patches (49 tokens), width 64, 4 blocks, class-conditional. */
export const mnistDiTConfig: DiTConfig = { imageSize: 28, patchSize: 4, inChannels: 1, dim: 64, depth: 4, numHeads: 4, numClasses: 10 };

/** x·(1 + scale) + shift with scale, shift [N, dim] broadcast over tokens [N, T, dim]. */
function modulate(x: Tensor, shift: Tensor, scale: Tensor): Tensor {
  return x.mul(scale.unsqueeze(1).add(1)).add(shift.unsqueeze(1));
}

/**
 * Pre-norm block whose norms are modulated by the conditioning c, with zero-initialised gates.
 * @example const y = new DiTBlock(mnistDiTConfig).forward(tokens, c); // tokens [N, T, dim], c [N, dim]
 */
export class DiTBlock extends Module {
  norm1: LayerNorm;
  attn: MultiHeadAttention;
  norm2: LayerNorm;
  mlp: MLP;
  adaLN: Linear;
  constructor(cfg: DiTConfig, opts: ModelInitOptions = {}) {
    super();
    const d = cfg.dim;
    this.norm1 = this.registerModule('norm1', new LayerNorm(d, { eps: 1e-6, elementwiseAffine: false, dtype: opts.dtype }));
    this.attn = this.registerModule('attn', new MultiHeadAttention(d, cfg.numHeads, { bias: true, ...opts }));
    this.norm2 = this.registerModule('norm2', new LayerNorm(d, { eps: 1e-6, elementwiseAffine: false, dtype: opts.dtype }));
    this.mlp = this.registerModule('mlp', new MLP(d, cfg.mlpDim ?? 4 * d, { activation: 'geluTanh', ...opts }));
    this.adaLN = this.registerModule('adaLN', new Linear(d, 6 * d, opts));
    // adaLN-Zero: every block starts as the identity
    zeros_(this.adaLN.weight);
    zeros_(this.adaLN.bias!);
  }
  /** x [N, T, dim], c [N, dim] → [N, T, dim]. */
  forward(x: Tensor, c: Tensor): Tensor {
    const [shift1, scale1, gate1, shift2, scale2, gate2] = this.adaLN.forward(silu(c)).chunk(6, 1); // 6 × [N, dim]
    const h = x.add(this.attn.forward(modulate(this.norm1.forward(x), shift1!, scale1!)).mul(gate1!.unsqueeze(1)));
    return h.add(this.mlp.forward(modulate(this.norm2.forward(h), shift2!, scale2!)).mul(gate2!.unsqueeze(1)));
  }
}

/**
 * Predicts ε (or x₀ / v, see Diffusion's `prediction`) for x_t [N, C, H, W] at timesteps t, optionally given class labels.
 * @example new DiT(mnistDiTConfig).forward(randn([2, 1, 28, 28]), [3, 700], [7, 10]).shape; // [2, 1, 28, 28]
 */
export class DiT extends Module {
  x_embed: Conv2d;
  pos_embed: Tensor;
  t_mlp1: Linear;
  t_mlp2: Linear;
  y_embed: Embedding | null;
  blocks: ModuleList<DiTBlock>;
  norm_out: LayerNorm;
  adaLN_out: Linear;
  out: Linear;
  readonly grid: number;
  constructor(readonly config: DiTConfig, opts: ModelInitOptions = {}) {
    super();
    const { dim: d, patchSize: p, inChannels: c, imageSize } = config;
    if (imageSize % p) throw new Error(`DiT: imageSize ${imageSize} is not a multiple of patchSize ${p}`);
    this.grid = imageSize / p;
    const fd = config.freqDim ?? 64;
    this.x_embed = this.registerModule('x_embed', new Conv2d(c, d, p, { stride: p, ...opts }));
    this.pos_embed = this.registerParameter('pos_embed', zeros([1, this.grid * this.grid, d], { dtype: opts.dtype ?? 'float32' }));
    normal_(this.pos_embed, 0, 0.02, opts);
    this.t_mlp1 = this.registerModule('t_mlp1', new Linear(fd, d, opts));
    this.t_mlp2 = this.registerModule('t_mlp2', new Linear(d, d, opts));
    // one extra row: the "no label" class used for unconditional samples
    this.y_embed = this.registerModule('y_embed', config.numClasses ? new Embedding(config.numClasses + 1, d, opts) : null);
    if (this.y_embed) normal_(this.y_embed.weight, 0, 0.02, opts);
    this.blocks = this.registerModule('blocks', new ModuleList(Array.from({ length: config.depth }, () => new DiTBlock(config, opts))));
    this.norm_out = this.registerModule('norm_out', new LayerNorm(d, { eps: 1e-6, elementwiseAffine: false, dtype: opts.dtype }));
    this.adaLN_out = this.registerModule('adaLN_out', new Linear(d, 2 * d, opts));
    this.out = this.registerModule('out', new Linear(d, p * p * c, opts));
    for (const l of [this.adaLN_out, this.out]) {
      zeros_(l.weight);
      zeros_(l.bias!);
    }
  }
  forward(x: Tensor, t: readonly number[], labels?: readonly number[]): Tensor {
    const { imageSize: s, inChannels: c, patchSize: p, dim: d } = this.config;
    const [n] = x.shape as [number];
    if (x.ndim !== 4 || x.shape[1] !== c || x.shape[2] !== s || x.shape[3] !== s || t.length !== n) {
      throw new Error(`DiT: expected x [N, ${c}, ${s}, ${s}] and N timesteps, got x [${x.shape.join(', ')}] and ${t.length} timesteps`);
    }
    const g = this.grid;
    let h = this.x_embed.forward(x).flatten(2).transpose(1, 2).add(this.pos_embed); // [N, g², dim]
    const dtype = x.dtype === 'float64' ? 'float64' : 'float32';
    let cond = this.t_mlp2.forward(silu(this.t_mlp1.forward(timestepEmbedding(t, this.config.freqDim ?? 64, 10000, dtype)))); // [N, dim]
    if (this.y_embed) {
      const y = labels ?? new Array<number>(n).fill(this.config.numClasses!);
      if (y.length !== n) throw new Error(`DiT: got ${y.length} labels for ${n} images`);
      cond = cond.add(embedding(tensor(Int32Array.from(y)), this.y_embed.weight)); // + [N, dim]
    }
    for (const b of this.blocks) h = b.forward(h, cond);
    const [shift, scale] = this.adaLN_out.forward(silu(cond)).chunk(2, 1); // 2 × [N, dim]
    h = this.out.forward(modulate(this.norm_out.forward(h), shift!, scale!)); // [N, g², p·p·C]
    // unpatchify: token (i, j) holds the p×p×C pixels of patch row i, column j
    h = h.view(n, g, g, p, p, c); // [N, gi, gj, pi, pj, C]
    return h.permute(0, 5, 1, 3, 2, 4).reshape(n, c, s, s); // [N, C, gi·p, gj·p]
  }
  override extraRepr(): string {
    return `grid=${this.grid}x${this.grid}, dim=${this.config.dim}`;
  }
}
