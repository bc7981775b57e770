/**
 * @file Llama, a decoder-only transformer (RMSNorm, RoPE, grouped-query attention, SwiGLU) with
 * Hugging Face `LlamaForCausalLM`'s parameter names and layouts, KV-cached `generate()` and
 * `Llama.fromPretrained(dir)` for HF `config.json` + `model.safetensors` directories.
 */
import { crossEntropy, loadSafetensors, noGrad, swiglu, tensor, type DType, type Generator, type Tensor } from '@qgrad/core';
import { ModuleList } from '../containers.js';
import { normal_, zeros_ } from '../init.js';
import { KVCache, sharedCausalBias, RotaryEmbedding, scaledDotProductAttention } from '../layers/attention.js';
import { Embedding, Linear } from '../layers/linear.js';
import { RMSNorm } from '../layers/norm.js';
import { Module } from '../module.js';
import { sampleLogits } from './sampling.js';

/** A Llama's shape: vocabulary, width, layers, heads, the SwiGLU width, context length and RoPE (names map to HF's config.json by `configToHf`). */
export interface LlamaConfig {
  vocabSize: number;
  /** Model width (HF `hidden_size`). */
  dim: number;
  nLayers: number;
  nHeads: number;
  /** Key/value heads for grouped-query attention (HF `num_key_value_heads`). */
  nKvHeads: number;
  /** SwiGLU hidden width (HF `intermediate_size`). */
  hiddenDim: number;
  /** Longest sequence the KV cache and RoPE tables are sized for (HF `max_position_embeddings`). */
  maxSeqLen: number;
  /** Per-head width (default dim / nHeads; HF `head_dim`). */
  headDim?: number;
  normEps: number;
  ropeTheta: number;
  /** Share the output head with the token embedding (HF `tie_word_embeddings`). */
  tieWordEmbeddings: boolean;
  /** Biases on q/k/v/o (HF `attention_bias`) and on the MLP (HF `mlp_bias`); default false. */
  attentionBias?: boolean;
  mlpBias?: boolean;
}

/** The reference tiny config: a byte-level model of about 0.9 M parameters. */
export const tinyLlamaConfig: LlamaConfig = {
  vocabSize: 256, dim: 128, nLayers: 4, nHeads: 4, nKvHeads: 2, hiddenDim: 384, maxSeqLen: 128,
  normEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false,
};

/** Options of the zoo models' constructors: parameter dtype and the generator of the initial weights. */
export interface ModelInitOptions {
  dtype?: DType;
  /** Random source for the initial weights (default: core's default generator). */
  generator?: Generator;
}

// Submodules and parameters are named as in Hugging Face's modeling_llama.py (snake_case, so
// `stateDict()` keys are HF checkpoint keys and HF weights load with no renaming table).

/**
 * Grouped-query self-attention with RoPE: q_proj, k_proj, v_proj, o_proj (HF `LlamaAttention`).
 * @example prepareQAT(llama, { rules: [{ match: '**.self_attn.*', weight: { grid: 'int', bits: 8 } }] }); // its four projections
 */
export class LlamaAttention extends Module {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  readonly headDim: number;
  constructor(readonly cfg: LlamaConfig, opts: ModelInitOptions = {}) {
    super();
    const hd = (this.headDim = cfg.headDim ?? cfg.dim / cfg.nHeads);
    if (!Number.isInteger(hd)) throw new Error(`LlamaAttention: dim ${cfg.dim} is not divisible by nHeads ${cfg.nHeads}; set headDim`);
    if (cfg.nHeads % cfg.nKvHeads) throw new Error(`LlamaAttention: nHeads ${cfg.nHeads} must be divisible by nKvHeads ${cfg.nKvHeads}`);
    const l = { bias: cfg.attentionBias ?? false, ...opts };
    this.q_proj = this.registerModule('q_proj', new Linear(cfg.dim, cfg.nHeads * hd, l));
    this.k_proj = this.registerModule('k_proj', new Linear(cfg.dim, cfg.nKvHeads * hd, l));
    this.v_proj = this.registerModule('v_proj', new Linear(cfg.dim, cfg.nKvHeads * hd, l));
    this.o_proj = this.registerModule('o_proj', new Linear(cfg.nHeads * hd, cfg.dim, l));
  }
  /** x [B, T, dim] → [B, T, dim]; with a cache, positions start at its length. */
  forward(x: Tensor, rope: RotaryEmbedding, cache?: KVCache): Tensor {
    const [b, t] = x.shape as [number, number];
    const { nHeads: h, nKvHeads: hkv } = this.cfg;
    const hd = this.headDim;
    const start = cache?.length ?? 0;
    let q = this.q_proj.forward(x).view(b, t, h, hd).transpose(1, 2); // [B, H, T, hd]
    let k = this.k_proj.forward(x).view(b, t, hkv, hd).transpose(1, 2); // [B, Hkv, T, hd]
    let v = this.v_proj.forward(x).view(b, t, hkv, hd).transpose(1, 2); // [B, Hkv, T, hd]
    // attention's 1/√hd applied in q's rotation (the bits of sdpa's mul after it, without its pass)
    q = rope.forward(q, start, 1 / Math.sqrt(hd));
    k = rope.forward(k, start);
    if (cache) [k, v] = cache.update(k, v); // [B, Hkv, start + T, hd]
    const tk = k.shape[2]!;
    // a single new token may see every cached position: no mask needed
    const mask = t === 1 ? null : sharedCausalBias(t, tk, start, x.dtype === 'float64' ? 'float64' : 'float32');
    // grouped queries: each KV head serves h/hkv query heads (no copies of keys and values)
    const y = scaledDotProductAttention(q, k, v, { attnMask: mask, enableGqa: true, scale: 1 }); // [B, H, T, hd]
    return this.o_proj.forward(y.transpose(1, 2).reshape(b, t, h * hd)); // [B, T, dim]
  }
}

/**
 * down_proj(silu(gate_proj(x)) ⊙ up_proj(x)) (HF `LlamaMLP`).
 * @example loraQuant(llama, { method: 'qlora', rank: 8, alpha: 16, targets: ['**.mlp.*'] }); // gate, up and down projections
 */
export class LlamaMLP extends Module {
  gate_proj: Linear;
  up_proj: Linear;
  down_proj: Linear;
  constructor(cfg: LlamaConfig, opts: ModelInitOptions = {}) {
    super();
    const l = { bias: cfg.mlpBias ?? false, ...opts };
    this.gate_proj = this.registerModule('gate_proj', new Linear(cfg.dim, cfg.hiddenDim, l));
    this.up_proj = this.registerModule('up_proj', new Linear(cfg.dim, cfg.hiddenDim, l));
    this.down_proj = this.registerModule('down_proj', new Linear(cfg.hiddenDim, cfg.dim, l));
  }
  forward(x: Tensor): Tensor {
    return this.down_proj.forward(swiglu(this.gate_proj.forward(x), this.up_proj.forward(x)));
  }
}

/**
 * Pre-norm block: x + attn(norm(x)), then + mlp(norm(·)) (HF `LlamaDecoderLayer`).
 * @example llama.getSubmodule('model.layers.0'); // the first LlamaDecoderLayer
 */
export class LlamaDecoderLayer extends Module {
  self_attn: LlamaAttention;
  mlp: LlamaMLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
  constructor(cfg: LlamaConfig, opts: ModelInitOptions = {}) {
    super();
    this.self_attn = this.registerModule('self_attn', new LlamaAttention(cfg, opts));
    this.mlp = this.registerModule('mlp', new LlamaMLP(cfg, opts));
    this.input_layernorm = this.registerModule('input_layernorm', new RMSNorm(cfg.dim, { eps: cfg.normEps, dtype: opts.dtype }));
    this.post_attention_layernorm = this.registerModule('post_attention_layernorm', new RMSNorm(cfg.dim, { eps: cfg.normEps, dtype: opts.dtype }));
  }
  forward(x: Tensor, rope: RotaryEmbedding, cache?: KVCache): Tensor {
    const h = x.add(this.self_attn.forward(this.input_layernorm.forward(x), rope, cache));
    return h.add(this.mlp.forward(this.post_attention_layernorm.forward(h)));
  }
}

/**
 * The trunk: embed_tokens, layers, norm, and the shared RoPE tables (HF `LlamaModel`).
 * @example const hidden = new Llama(cfg).model.forward(ids); // [B, T, dim], before lm_head
 */
export class LlamaModel extends Module {
  embed_tokens: Embedding;
  layers: ModuleList<LlamaDecoderLayer>;
  norm: RMSNorm;
  rotary_emb: RotaryEmbedding;
  constructor(cfg: LlamaConfig, opts: ModelInitOptions = {}) {
    super();
    this.embed_tokens = this.registerModule('embed_tokens', new Embedding(cfg.vocabSize, cfg.dim, opts));
    this.layers = this.registerModule('layers', new ModuleList(Array.from({ length: cfg.nLayers }, () => new LlamaDecoderLayer(cfg, opts))));
    this.norm = this.registerModule('norm', new RMSNorm(cfg.dim, { eps: cfg.normEps, dtype: opts.dtype }));
    const headDim = cfg.headDim ?? cfg.dim / cfg.nHeads;
    // non-persistent tables, as HF's inv_freq buffer: not in the state dict
    this.rotary_emb = this.registerModule('rotary_emb', new RotaryEmbedding(headDim, { theta: cfg.ropeTheta, maxSeqLen: cfg.maxSeqLen }));
  }
  /** idx [B, T] int32 → hidden states [B, T, dim] after the final norm. */
  forward(idx: Tensor, caches?: KVCache[]): Tensor {
    let x = this.embed_tokens.forward(idx); // [B, T, dim]
    let i = 0;
    for (const layer of this.layers) x = layer.forward(x, this.rotary_emb, caches?.[i++]);
    return this.norm.forward(x);
  }
}

/** Options of `Llama.generate`: temperature, top-k and the generator to sample with. */
export interface GenerateOptions {
  /** Softmax temperature; 0 picks the most likely token (default 1). */
  temperature?: number;
  /** Sample only among the k most likely tokens (default: all). */
  topK?: number;
  generator?: Generator;
}

/**
 * Llama for causal language modelling (HF `LlamaForCausalLM`): `model` and `lm_head`.
 * @example
 * const llama = new Llama(tinyLlamaConfig);
 * const logits = llama.forward(tensor([[72, 105]], { dtype: 'int32' })); // [1, 2, 256]
 * const out = llama.generate(tensor([[72]], { dtype: 'int32' }), 20, { temperature: 0.8, topK: 40 });
 */
export class Llama extends Module {
  model: LlamaModel;
  lm_head: Linear;
  constructor(readonly config: LlamaConfig, opts: ModelInitOptions = {}) {
    super();
    this.model = this.registerModule('model', new LlamaModel(config, opts));
    this.lm_head = this.registerModule('lm_head', new Linear(config.dim, config.vocabSize, { bias: false, ...opts }));
    this.initWeights(opts.generator);
    if (config.tieWordEmbeddings) this.lm_head.weight = this.model.embed_tokens.weight;
  }
  /** HF's init: every Linear and Embedding weight N(0, 0.02²), biases zero; norms stay at one. */
  initWeights(generator?: Generator): void {
    for (const m of this.modules()) {
      if (m instanceof Linear || m instanceof Embedding) normal_(m.weight, 0, 0.02, { generator });
      if (m instanceof Linear && m.bias) zeros_(m.bias);
    }
  }
  /** idx [B, T] int32 → logits [B, T, vocab]; `caches` (one per layer) for incremental decoding. */
  forward(idx: Tensor, caches?: KVCache[]): Tensor {
    if (idx.ndim !== 2) throw new Error(`Llama: expected token ids [B, T], got shape [${idx.shape.join(', ')}]`);
    const start = caches?.[0]?.length ?? 0;
    if (start + idx.shape[1]! > this.config.maxSeqLen && caches) throw new Error(`Llama: ${start} cached + ${idx.shape[1]} new positions exceed maxSeqLen ${this.config.maxSeqLen}`);
    return this.lm_head.forward(this.model.forward(idx, caches)); // [B, T, vocab]
  }
  /** Mean next-token cross entropy of idx [B, T] against targets [B, T] (nats per token). */
  loss(idx: Tensor, targets: Tensor): Tensor {
    const logits = this.forward(idx); // [B, T, V]
    const [b, t, v] = logits.shape as [number, number, number];
    return crossEntropy(logits.view(b * t, v), targets.reshape(b * t)); // [B·T, V] vs [B·T]
  }
  /** One empty KV cache per layer, sized to maxSeqLen. */
  newCaches(): KVCache[] {
    return Array.from({ length: this.config.nLayers }, () => new KVCache(this.config.maxSeqLen));
  }

  /**
   * Extends `prompt` [B, T0] by `maxNewTokens` sampled tokens using the KV cache: the prompt is
   * run once, then each step feeds only the newest token. Returns [B, T0 + maxNewTokens] int32.
   * Past maxSeqLen the cache is rebuilt from the last maxSeqLen − 1 tokens (a sliding window).
   */
  generate(prompt: Tensor, maxNewTokens: number, opts: GenerateOptions = {}): Tensor {
    const wasTraining = this.training;
    this.eval();
    try {
      return noGrad(() => {
        const b = prompt.shape[0]!;
        const rows: number[][] = Array.from({ length: b }, (_, i) => Array.from(prompt.select(0, i).dataSync(), Number));
        const max = this.config.maxSeqLen;
        let caches = this.newCaches();
        let next = prompt.shape[1]! > max ? prompt.narrow(1, prompt.shape[1]! - max, max) : prompt;
        for (let n = 0; n < maxNewTokens; n++) {
          if (caches[0]!.length + next.shape[1]! > max) {
            caches = this.newCaches();
            next = tensor(rows.map((r) => r.slice(-(max - 1))), { dtype: 'int32' }); // [B, max − 1]
          }
          const logits = this.forward(next, caches); // [B, Tn, V]
          const last = logits.select(1, logits.shape[1]! - 1); // [B, V]
          const tok = sampleLogits(last, opts);
          tok.forEach((t, i) => rows[i]!.push(t));
          next = tensor(tok.map((t) => [t]), { dtype: 'int32' }); // [B, 1]
        }
        return tensor(rows, { dtype: 'int32' });
      });
    } finally {
      this.train(wasTraining);
    }
  }

  /**
   * Builds a model from a Hugging Face directory holding `config.json` (LlamaConfig keys) and
   * `model.safetensors` (F32, F16 or BF16; loaded as float32). A tied head may be absent.
   * @example const llama = Llama.fromPretrained('checkpoints/tiny-llama');
   */
  static fromPretrained(dir: string): Llama {
    const fs = nodeFs();
    const raw = JSON.parse(new TextDecoder().decode(fs.readFileSync(`${dir}/config.json`))) as Record<string, unknown>;
    const config = configFromHf(raw);
    const weights = loadSafetensors(`${dir}/model.safetensors`);
    if (config.tieWordEmbeddings && !weights['lm_head.weight'] && weights['model.embed_tokens.weight']) weights['lm_head.weight'] = weights['model.embed_tokens.weight'];
    const llama = new Llama(config);
    llama.loadStateDict(weights);
    return llama;
  }
}

/**
 * Maps a Hugging Face Llama `config.json` object to a LlamaConfig (HF defaults where absent).
 * @example const cfg = configFromHf(JSON.parse(readFileSync('hf/config.json', 'utf8')));
 */
export function configFromHf(c: Record<string, unknown>): LlamaConfig {
  const num = (k: string, dflt?: number): number => {
    const v = c[k] ?? dflt;
    if (typeof v !== 'number') throw new Error(`Llama.fromPretrained: config.json needs a number '${k}'`);
    return v;
  };
  if (c.rope_scaling != null) throw new Error(`Llama.fromPretrained: rope_scaling ${JSON.stringify(c.rope_scaling)} is not supported`);
  if (c.hidden_act !== undefined && c.hidden_act !== 'silu') throw new Error(`Llama.fromPretrained: hidden_act '${String(c.hidden_act)}' is not supported (only 'silu')`);
  const nHeads = num('num_attention_heads');
  return {
    vocabSize: num('vocab_size'),
    dim: num('hidden_size'),
    nLayers: num('num_hidden_layers'),
    nHeads,
    nKvHeads: num('num_key_value_heads', nHeads),
    hiddenDim: num('intermediate_size'),
    maxSeqLen: num('max_position_embeddings', 2048),
    headDim: typeof c.head_dim === 'number' ? c.head_dim : undefined,
    normEps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    tieWordEmbeddings: c.tie_word_embeddings === undefined ? false : Boolean(c.tie_word_embeddings),
    attentionBias: Boolean(c.attention_bias ?? false),
    mlpBias: Boolean(c.mlp_bias ?? false),
  };
}

/**
 * The HF `config.json` object for a LlamaConfig (what `fromPretrained` reads back).
 * @example writeFileSync('hf/config.json', JSON.stringify(configToHf(llama.config)));
 */
export function configToHf(cfg: LlamaConfig): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu',
    vocab_size: cfg.vocabSize, hidden_size: cfg.dim, num_hidden_layers: cfg.nLayers, num_attention_heads: cfg.nHeads,
    num_key_value_heads: cfg.nKvHeads, intermediate_size: cfg.hiddenDim, max_position_embeddings: cfg.maxSeqLen,
    ...(cfg.headDim !== undefined ? { head_dim: cfg.headDim } : {}),
    rms_norm_eps: cfg.normEps, rope_theta: cfg.ropeTheta, tie_word_embeddings: cfg.tieWordEmbeddings,
    attention_bias: cfg.attentionBias ?? false, mlp_bias: cfg.mlpBias ?? false, torch_dtype: 'float32',
  };
}

function nodeFs(): { readFileSync(path: string): Uint8Array } {
  const proc = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process;
  const fs = proc?.getBuiltinModule?.('node:fs') as { readFileSync(path: string): Uint8Array } | undefined;
  if (!fs) throw new Error('Llama.fromPretrained: reading a directory needs Node.js ≥ 20.16');
  return fs;
}
