/**
 * @file Vision Transformer (Dosovitskiy et al.): a strided-conv patch embedding, a class token,
 * learned position embeddings, pre-norm blocks (LayerNorm → attention, LayerNorm → GELU MLP)
 * and a linear head on the class token.
 */
import { cat, zeros, type Tensor } from '@qgrad/core';
import { ModuleList } from '../containers.js';
import { normal_, zeros_ } from '../init.js';
import { MultiHeadAttention } from '../layers/attention.js';
import { Conv2d } from '../layers/conv.js';
import { Linear } from '../layers/linear.js';
import { MLP } from '../layers/mlp.js';
import { LayerNorm } from '../layers/norm.js';
import { Module } from '../module.js';
import type { ModelInitOptions } from './llama.js';

/** A ViT's shape: image and patch size, channels, classes, width, depth, heads and MLP width. */
export interface ViTConfig {
  imageSize: number;
  patchSize: number;
  inChannels: number;
  numClasses: number;
  dim: number;
  depth: number;
  numHeads: number;
  /** MLP hidden width (usually 4·dim). */
  mlpDim: number;
  /** LayerNorm epsilon (default 1e-6, as timm and torchvision). */
  normEps?: number;
}

/** A tiny MNIST ViT: 7×7 patches of 28×28 images, 16 tokens + class token, width 64. */
export const mnistViTConfig: ViTConfig = { imageSize: 28, patchSize: 7, inChannels: 1, numClasses: 10, dim: 64, depth: 2, numHeads: 4, mlpDim: 128 };

/**
 * Cuts [N, C, H, W] images into non-overlapping patches and projects each: → [N, P, dim].
 * @example new PatchEmbed(mnistViTConfig).forward(zeros([8, 1, 28, 28])).shape; // [8, 16, 64]
 */
export class PatchEmbed extends Module {
  proj: Conv2d;
  constructor(readonly cfg: ViTConfig, opts: ModelInitOptions = {}) {
    super();
    if (cfg.imageSize % cfg.patchSize) throw new Error(`PatchEmbed: imageSize ${cfg.imageSize} is not a multiple of patchSize ${cfg.patchSize}`);
    // a conv with kernel = stride = patch is exactly unfold + one shared linear map per patch
    this.proj = this.registerModule('proj', new Conv2d(cfg.inChannels, cfg.dim, cfg.patchSize, { stride: cfg.patchSize, ...opts }));
  }
  forward(x: Tensor): Tensor {
    const [n, c, h, w] = x.shape as [number, number, number, number];
    const { inChannels, imageSize } = this.cfg;
    if (x.ndim !== 4 || c !== inChannels || h !== imageSize || w !== imageSize) {
      throw new Error(`PatchEmbed: expected images [N, ${inChannels}, ${imageSize}, ${imageSize}], got [${x.shape.join(', ')}]`);
    }
    const y = this.proj.forward(x); // [N, dim, H/p, W/p]
    return y.flatten(2).transpose(1, 2); // [N, P, dim]
  }
}

/**
 * x + attn(norm1(x)), then + mlp(norm2(·)).
 * @example new ViTBlock(mnistViTConfig).forward(zeros([8, 17, 64])).shape; // [8, 17, 64]
 */
export class ViTBlock extends Module {
  norm1: LayerNorm;
  attn: MultiHeadAttention;
  norm2: LayerNorm;
  mlp: MLP;
  constructor(cfg: ViTConfig, opts: ModelInitOptions = {}) {
    super();
    const eps = cfg.normEps ?? 1e-6;
    this.norm1 = this.registerModule('norm1', new LayerNorm(cfg.dim, { eps, dtype: opts.dtype }));
    this.attn = this.registerModule('attn', new MultiHeadAttention(cfg.dim, cfg.numHeads, { bias: true, ...opts }));
    this.norm2 = this.registerModule('norm2', new LayerNorm(cfg.dim, { eps, dtype: opts.dtype }));
    this.mlp = this.registerModule('mlp', new MLP(cfg.dim, cfg.mlpDim, { activation: 'gelu', ...opts }));
  }
  forward(x: Tensor): Tensor {
    const h = x.add(this.attn.forward(this.norm1.forward(x)));
    return h.add(this.mlp.forward(this.norm2.forward(h)));
  }
}

/**
 * Image classifier: patches + class token + positions → blocks → norm → head(class token).
 * @example new ViT(mnistViTConfig).forward(randn([2, 1, 28, 28])).shape; // [2, 10]
 */
export class ViT extends Module {
  patch_embed: PatchEmbed;
  cls_token: Tensor;
  pos_embed: Tensor;
  blocks: ModuleList<ViTBlock>;
  norm: LayerNorm;
  head: Linear;
  readonly numPatches: number;
  constructor(readonly config: ViTConfig, opts: ModelInitOptions = {}) {
    super();
    const dtype = opts.dtype ?? 'float32';
    this.numPatches = (config.imageSize / config.patchSize) ** 2;
    this.patch_embed = this.registerModule('patch_embed', new PatchEmbed(config, opts));
    this.cls_token = this.registerParameter('cls_token', zeros([1, 1, config.dim], { dtype }));
    this.pos_embed = this.registerParameter('pos_embed', zeros([1, this.numPatches + 1, config.dim], { dtype }));
    this.blocks = this.registerModule('blocks', new ModuleList(Array.from({ length: config.depth }, () => new ViTBlock(config, opts))));
    this.norm = this.registerModule('norm', new LayerNorm(config.dim, { eps: config.normEps ?? 1e-6, dtype }));
    this.head = this.registerModule('head', new Linear(config.dim, config.numClasses, opts));
    // timm's init for the learned tokens (truncation at ±2σ is immaterial at σ = 0.02)
    normal_(this.pos_embed, 0, 0.02, opts);
    normal_(this.cls_token, 0, 0.02, opts);
    zeros_(this.head.bias!);
  }
  /** Class-token features after the final norm: images [N, C, H, W] → [N, dim]. */
  features(x: Tensor): Tensor {
    const p = this.patch_embed.forward(x); // [N, P, dim]
    const n = p.shape[0]!;
    const cls = this.cls_token.expand(n, 1, this.config.dim); // [N, 1, dim]
    let h = cat([cls, p], 1).add(this.pos_embed); // [N, P + 1, dim]
    for (const b of this.blocks) h = b.forward(h);
    return this.norm.forward(h).select(1, 0); // [N, dim]
  }
  /** Logits [N, numClasses]. */
  forward(x: Tensor): Tensor {
    return this.head.forward(this.features(x));
  }
}
