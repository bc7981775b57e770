/**
 * @file Attention: scaled dot-product attention (composite, PyTorch semantics), rotary position
 * embeddings in Hugging Face Llama's rotate-half convention, a KV cache for incremental
 * decoding, and MultiHeadAttention with grouped-query KV heads and a causal mask.
 */
import { add, applyRotary, cat, dropout, getBackend, keep, matmul, softmax, tensor, zeros, type Generator, type Tensor } from '@qgrad/core';
import { Module } from '../module.js';
import { Linear, type LayerOptions } from './linear.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * A uint8 mask [tq, tk] with 1 where query i may attend key j, i.e. j ≤ i + offset. With
 * `offset = tk − tq` the queries are the last tq positions (decoding with a KV cache); offset 0
 * is PyTorch's `is_causal` (top-left aligned).
 * @example causalMask(2, 3, 1).toArray(); // [[1, 1, 0], [1, 1, 1]]
 */
export function causalMask(tq: number, tk: number, offset = 0): Tensor {
  const m = new Uint8Array(tq * tk);
  for (let i = 0; i < tq; i++) for (let j = 0; j <= Math.min(tk - 1, i + offset); j++) m[i * tk + j] = 1;
  return tensor(m, { shape: [tq, tk] });
}

/**
 * The additive form of `causalMask`: 0 where query i may attend key j, −∞ elsewhere ([tq, tk]).
 * @example causalBias(2, 2).toArray(); // [[0, -Infinity], [0, 0]]
 */
export function causalBias(tq: number, tk: number, offset = 0, dtype: 'float32' | 'float64' = 'float32'): Tensor {
  const b = (dtype === 'float32' ? new Float32Array(tq * tk) : new Float64Array(tq * tk)).fill(-Infinity);
  for (let i = 0; i < tq; i++) b.fill(0, i * tk, i * tk + Math.min(tk, i + offset + 1));
  return tensor(b, { shape: [tq, tk], dtype });
}

/** Biases handed out by `sharedCausalBias`, by backend, dtype, tq, tk and offset. */
const sharedBiases = new Map<string, Tensor>();

/**
 * `causalBias` made once per backend, dtype, shape and offset and kept (no scope releases it),
 * for the masks attention builds internally: a training step asks for the same [T, T] mask in
 * every layer of every step. Callers must not write into it.
 * @example softmax(scores, -1, { bias: sharedCausalBias(t, t, 0, 'float32') }); // scores [B, H, t, t]
 */
export function sharedCausalBias(tq: number, tk: number, offset: number, dtype: 'float32' | 'float64'): Tensor {
  const key = `${getBackend()}|${dtype}|${tq}|${tk}|${offset}`;
  const hit = sharedBiases.get(key);
  // a user's dispose() of everything reachable may have released it: make it again
  if (hit && !hit.storage.released) return hit;
  // decoding with a cache moves the offset each call: bound the map (evicted masks are left to
  // the garbage collector, as a step's graph may still hold one)
  if (sharedBiases.size >= 16) sharedBiases.clear();
  const b = keep(causalBias(tq, tk, offset, dtype));
  sharedBiases.set(key, b);
  return b;
}

/** Options of `scaledDotProductAttention`, as PyTorch `F.scaled_dot_product_attention`: a mask or causal masking, dropout and the scale. */
export interface SdpaOptions {
  /** uint8 mask (nonzero = may attend, as PyTorch's boolean mask) or a float mask added to the scores; broadcast to [..., tq, tk]. */
  attnMask?: Tensor | null;
  /** Lower-triangular mask aligned top-left, as PyTorch (cannot be combined with attnMask). */
  isCausal?: boolean;
  /** Dropout on the attention weights (only when `training`, default true as in F.sdpa). */
  dropoutP?: number;
  training?: boolean;
  generator?: Generator;
  /** Score scale (default 1/√headDim). */
  scale?: number;
  /**
   * Grouped-query attention, as PyTorch's `enable_gqa`: k and v have fewer heads (dim −3) than q,
   * each serving a group of q heads. Done through a broadcast dim of the matmuls, without copying
   * keys and values per head.
   */
  enableGqa?: boolean;
}

/**
 * softmax(q·kᵀ·scale + mask)·v over [..., tq, d] queries and [..., tk, d] keys/values, as
 * `F.scaled_dot_product_attention` (written from matmul and softmax, so no backward of its own).
 * @example scaledDotProductAttention(q, k, v, { isCausal: true }).shape; // q.shape
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: SdpaOptions = {}): Tensor {
  const d = q.shape[q.ndim - 1]!;
  if (q.ndim < 2 || k.ndim !== q.ndim || v.ndim !== q.ndim || k.shape[k.ndim - 1] !== d || k.shape[k.ndim - 2] !== v.shape[v.ndim - 2]) {
    throw new Error(`scaledDotProductAttention: expected q [..., tq, d], k [..., tk, d], v [..., tk, dv]; got q ${fmt(q.shape)}, k ${fmt(k.shape)}, v ${fmt(v.shape)}`);
  }
  if (opts.isCausal && opts.attnMask) throw new Error('scaledDotProductAttention: pass either attnMask or isCausal, not both');
  if (opts.enableGqa && q.ndim >= 3 && k.shape[k.ndim - 3] !== q.shape[q.ndim - 3]) return groupedQueryAttention(q, k, v, opts);
  const tq = q.shape[q.ndim - 2]!;
  const tk = k.shape[k.ndim - 2]!;
  // scaling q rather than the scores touches d·tq elements instead of tq·tk; scale 1 (a q scaled
  // already, as by RotaryEmbedding's scale) needs no pass: x·1 is x
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  let scores = matmul(scale === 1 ? q : q.mul(scale), k.transpose(-2, -1)); // [..., tq, tk]
  const mask = opts.isCausal ? sharedCausalBias(tq, tk, 0, scores.dtype === 'float64' ? 'float64' : 'float32') : opts.attnMask;
  // a boolean mask becomes an additive 0/−∞ bias of the mask's (small) shape
  const bias = !mask ? null : mask.dtype === 'uint8' ? zeros(mask.shape, { dtype: scores.dtype }).maskedFill(mask.logicalNot(), -Infinity) : mask;
  let w = softmax(scores, -1, { bias }); // the mask is added inside the softmax pass
  if (opts.dropoutP) w = dropout(w, opts.dropoutP, opts.training ?? true, { generator: opts.generator });
  return matmul(w, v); // [..., tq, dv]
}

/**
 * sdpa with q [..., hq, tq, d] and k, v [..., hkv, tk, d], hkv dividing hq: q is seen as
 * [..., hkv, hq/hkv, tq, d] and k, v as [..., hkv, 1, tk, d], so each KV head broadcasts over its group.
 */
function groupedQueryAttention(q: Tensor, k: Tensor, v: Tensor, opts: SdpaOptions): Tensor {
  const r = q.ndim;
  const hq = q.shape[r - 3]!;
  const hkv = k.shape[r - 3]!;
  if (hq % hkv !== 0 || v.shape[r - 3] !== hkv) {
    throw new Error(`scaledDotProductAttention: with enableGqa the key/value heads (${hkv}, ${v.shape[r - 3]}) must be equal and divide the query heads (${hq}); got q ${fmt(q.shape)}, k ${fmt(k.shape)}, v ${fmt(v.shape)}`);
  }
  const lead = q.shape.slice(0, r - 3);
  const [tq, d] = q.shape.slice(r - 2) as [number, number];
  const group = (t: Tensor) => t.reshape([...t.shape.slice(0, t.ndim - 3), hkv, hq / hkv, ...t.shape.slice(t.ndim - 2)]);
  // a mask with a head dim follows q's grouping; one without gets a unit dim for the group
  const m = opts.attnMask;
  const mask = !m || m.ndim < 3 ? m : m.shape[m.ndim - 3] === hq ? group(m) : m.unsqueeze(m.ndim - 2);
  const y = scaledDotProductAttention(group(q), k.unsqueeze(r - 2), v.unsqueeze(r - 2), { ...opts, attnMask: mask, enableGqa: false });
  return y.reshape([...lead, hq, tq, y.shape[y.ndim - 1]!]);
}

// ---------------------------------------------------------------- rotary embeddings
/**
 * Swaps and negates the two halves of the last dim: [x1, x2] → [−x2, x1].
 * @example rotateHalf(tensor([1, 2, 3, 4])); // [-3, -4, 1, 2]
 */
export function rotateHalf(x: Tensor): Tensor {
  const h = x.shape[x.ndim - 1]! / 2;
  return cat([x.narrow(-1, h, h).neg(), x.narrow(-1, 0, h)], -1);
}

/**
 * x·cos + rotateHalf(x)·sin with tables [T, D] broadcast over x [..., T, D] (core's fused `applyRotary`),
 * times `scale` in the same pass (default 1).
 * @example const qRot = applyRotaryEmb(q, cos, sin); // q [B, H, T, D], tables [T, D]
 */
export function applyRotaryEmb(x: Tensor, cos: Tensor, sin: Tensor, scale = 1): Tensor {
  return applyRotary(x, cos, sin, { scale });
}

/**
 * Rotary position embeddings as Hugging Face Llama computes them: inverse frequencies
 * θ^(−2i/D) for i < D/2, angles pos·invFreq duplicated to D ([f, f], the rotate-half layout),
 * in float32 arithmetic. The cos/sin tables are non-persistent buffers grown on demand.
 * @example new RotaryEmbedding(64, { theta: 500000 }).forward(q, startPos);
 */
export class RotaryEmbedding extends Module {
  readonly theta: number;
  cos: Tensor;
  sin: Tensor;
  constructor(readonly headDim: number, opts: { theta?: number; maxSeqLen?: number } = {}) {
    super();
    if (headDim % 2) throw new Error(`RotaryEmbedding: headDim ${headDim} must be even`);
    this.theta = opts.theta ?? 10000;
    const [cos, sin] = this.#tables(opts.maxSeqLen ?? 2048);
    this.cos = this.registerBuffer('cos', cos, false);
    this.sin = this.registerBuffer('sin', sin, false);
  }
  #tables(n: number): [Tensor, Tensor] {
    const d = this.headDim;
    const f = Math.fround;
    const cos = new Float32Array(n * d);
    const sin = new Float32Array(n * d);
    for (let i = 0; i < d / 2; i++) {
      const inv = f(1 / f(this.theta ** f((2 * i) / d)));
      for (let p = 0; p < n; p++) {
        const a = f(p * inv);
        cos[p * d + i] = cos[p * d + i + d / 2] = Math.cos(a);
        sin[p * d + i] = sin[p * d + i + d / 2] = Math.sin(a);
      }
    }
    const dtype = this.cos?.dtype ?? 'float32';
    return [tensor(cos, { shape: [n, d] }).to(dtype), tensor(sin, { shape: [n, d] }).to(dtype)];
  }
  /**
   * Rotates x [..., T, headDim] whose first position is `startPos`, times `scale` (default 1): the
   * attention scale folded into q's rotation, with the bits of a mul after it.
   */
  forward(x: Tensor, startPos = 0, scale = 1): Tensor {
    const t = x.shape[x.ndim - 2]!;
    if (x.shape[x.ndim - 1] !== this.headDim) throw new Error(`RotaryEmbedding: input of shape ${fmt(x.shape)} does not end in headDim ${this.headDim}`);
    if (startPos + t > this.cos.shape[0]!) {
      const [cos, sin] = this.#tables(Math.max(startPos + t, 2 * this.cos.shape[0]!));
      this.cos = cos;
      this.sin = sin;
    }
    return applyRotaryEmb(x, this.cos.narrow(0, startPos, t), this.sin.narrow(0, startPos, t), scale);
  }
  override extraRepr(): string {
    return `headDim=${this.headDim}, theta=${this.theta}`;
  }
}

// ---------------------------------------------------------------- KV cache
/**
 * Keys and values of the positions seen so far, for one attention layer, preallocated to
 * `maxSeqLen` on first use. Writes are in place, so no gradient flows through the cache: it is
 * for inference (run decoding under `noGrad`).
 * @example const caches = Array.from({ length: nLayers }, () => new KVCache(256));
 */
export class KVCache {
  k: Tensor | null = null;
  v: Tensor | null = null;
  /** Number of positions stored. */
  length = 0;
  constructor(readonly maxSeqLen: number) {}
  /** Appends k, v [B, Hkv, T, D] and returns all stored keys and values [B, Hkv, length, D]. */
  update(k: Tensor, v: Tensor): [Tensor, Tensor] {
    const t = k.shape[2]!;
    if (!this.k || !this.v) {
      this.k = zeros([k.shape[0]!, k.shape[1]!, this.maxSeqLen, k.shape[3]!], { dtype: k.dtype });
      this.v = zeros([v.shape[0]!, v.shape[1]!, this.maxSeqLen, v.shape[3]!], { dtype: v.dtype });
    }
    const want = [this.k.shape[0], this.k.shape[1], t, this.k.shape[3]];
    if (k.shape.join() !== want.join() || v.shape.join() !== k.shape.join()) {
      throw new Error(`KVCache.update: keys ${fmt(k.shape)} and values ${fmt(v.shape)} must both be ${fmt(want as number[])} to match the cache`);
    }
    if (this.length + t > this.maxSeqLen) throw new Error(`KVCache.update: ${this.length} cached + ${t} new positions exceed maxSeqLen ${this.maxSeqLen}`);
    this.k.narrow(2, this.length, t).copy_(k.detach());
    this.v.narrow(2, this.length, t).copy_(v.detach());
    this.length += t;
    return [this.k.narrow(2, 0, this.length), this.v.narrow(2, 0, this.length)];
  }
  reset(): void {
    this.length = 0;
  }
}

// ---------------------------------------------------------------- multi-head attention
/** Options of the attention layer: grouped-query heads, biases, causal masking, RoPE and dropout. */
export interface AttentionOptions extends LayerOptions {
  /** Key/value heads for grouped-query attention (default numHeads; must divide numHeads). */
  numKvHeads?: number;
  /** Biases on the q/k/v/o projections (default false, as Llama). */
  bias?: boolean;
  /** Mask future positions (default false). */
  causal?: boolean;
  /** Rotary embeddings on q and k: true, or the base θ and table length (default off). */
  rope?: boolean | { theta?: number; maxSeqLen?: number };
  /** Dropout on the attention weights in training (default 0). */
  dropout?: number;
}

/**
 * Multi-head self-attention over x [B, T, dim] with Llama's layout: qProj, kProj, vProj, oProj
 * (`[out, in]` weights), optional RoPE on q and k, grouped-query KV heads repeated to the query
 * heads, and an optional KV cache for incremental decoding.
 * @example
 * const attn = new MultiHeadAttention(64, 8, { numKvHeads: 2, causal: true, rope: { theta: 10000 } });
 * attn.forward(randn([2, 16, 64])).shape; // [2, 16, 64]
 */
export class MultiHeadAttention extends Module {
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly causal: boolean;
  readonly dropoutP: number;
  qProj: Linear;
  kProj: Linear;
  vProj: Linear;
  oProj: Linear;
  rope: RotaryEmbedding | null;
  constructor(readonly dim: number, readonly numHeads: number, opts: AttentionOptions = {}) {
    super();
    this.numKvHeads = opts.numKvHeads ?? numHeads;
    if (dim % numHeads) throw new Error(`MultiHeadAttention: dim ${dim} must be divisible by numHeads ${numHeads}`);
    if (numHeads % this.numKvHeads) throw new Error(`MultiHeadAttention: numHeads ${numHeads} must be divisible by numKvHeads ${this.numKvHeads}`);
    this.headDim = dim / numHeads;
    this.causal = opts.causal ?? false;
    this.dropoutP = opts.dropout ?? 0;
    const layer = { bias: opts.bias ?? false, dtype: opts.dtype, generator: opts.generator };
    const kv = this.numKvHeads * this.headDim;
    this.qProj = this.registerModule('qProj', new Linear(dim, dim, layer));
    this.kProj = this.registerModule('kProj', new Linear(dim, kv, layer));
    this.vProj = this.registerModule('vProj', new Linear(dim, kv, layer));
    this.oProj = this.registerModule('oProj', new Linear(dim, dim, layer));
    const rope = opts.rope === true ? {} : opts.rope || null;
    this.rope = this.registerModule('rope', rope ? new RotaryEmbedding(this.headDim, rope) : null);
  }

  /**
   * @param x [B, T, dim]
   * @param opts.cache this layer's KV cache: new keys/values are appended and positions start
   *   at the cache's length (RoPE and the causal mask use them)
   * @param opts.attnMask an extra mask, as in `scaledDotProductAttention`, broadcast to [B, H, T, Tk]
   */
  forward(x: Tensor, opts: { cache?: KVCache; attnMask?: Tensor } = {}): Tensor {
    if (x.ndim !== 3 || x.shape[2] !== this.dim) throw new Error(`MultiHeadAttention: expected input [B, T, ${this.dim}], got ${fmt(x.shape)}`);
    const [b, t] = x.shape as [number, number];
    const h = this.numHeads;
    const hd = this.headDim;
    const heads = (y: Tensor, n: number) => y.view(b, t, n, hd).transpose(1, 2); // [B, n, T, hd]
    let q = heads(this.qProj.forward(x), h);
    let k = heads(this.kProj.forward(x), this.numKvHeads);
    let v = heads(this.vProj.forward(x), this.numKvHeads);
    const start = opts.cache?.length ?? 0;
    // with RoPE, q's rotation also applies attention's 1/√hd (the same bits as sdpa's mul after it)
    let scale: number | undefined;
    if (this.rope) {
      q = this.rope.forward(q, start, 1 / Math.sqrt(hd));
      k = this.rope.forward(k, start);
      scale = 1;
    }
    if (opts.cache) [k, v] = opts.cache.update(k, v);
    const tk = k.shape[2]!;
    let mask = opts.attnMask ?? null;
    if (this.causal) {
      const dtype = x.dtype === 'float64' ? 'float64' : 'float32';
      mask = mask?.dtype === 'uint8' ? mask.mul(causalMask(t, tk, start)) : mask ? add(mask, sharedCausalBias(t, tk, start, dtype)) : sharedCausalBias(t, tk, start, dtype);
    }
    const y = scaledDotProductAttention(q, k, v, { attnMask: mask, dropoutP: this.dropoutP, training: this.training, enableGqa: true, scale }); // [B, H, T, hd]
    return this.oProj.forward(y.transpose(1, 2).reshape(b, t, this.dim)); // [B, T, dim]
  }
  override extraRepr(): string {
    return `dim=${this.dim}, numHeads=${this.numHeads}, numKvHeads=${this.numKvHeads}, causal=${this.causal}`;
  }
}

/**
 * Repeats each KV head `nRep` times along dim 1: [B, Hkv, T, D] → [B, Hkv·nRep, T, D] (HF repeat_kv).
 * @example repeatKv(zeros([1, 2, 5, 16]), 4).shape; // [1, 8, 5, 16]
 */
export function repeatKv(x: Tensor, nRep: number): Tensor {
  if (nRep === 1) return x;
  const [b, hkv, t, d] = x.shape as [number, number, number, number];
  return x.unsqueeze(2).expand(b, hkv, nRep, t, d).reshape(b, hkv * nRep, t, d);
}
