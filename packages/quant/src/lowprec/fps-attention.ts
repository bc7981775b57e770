/**
 * @file FPSAttention (methods-2.md §9): attention over a token grid cut into tiles, with Q, K, V and
 * the probabilities P rounded to FP8 E4M3 (straight-through in backward, so it trains) and a
 * block-sparse pattern of key tiles per query tile, chosen per head; `FpsAttention`, a drop-in
 * MultiHeadAttention (the DiT's blocks take it unchanged), optionally with a denoising-step schedule
 * (options by timestep), and `prepareFpsAttention`, which swaps it in.
 *
 * Choices where the notes (an AI-generated summary of the paper; no public code) are silent or open:
 * - The format is E4M3 "fn" (±448) for all four tensors; each tensor is scaled so its absmax lands
 *   on 448 (HALO's convention): Q and K one scale per (batch, head, tile) — the tile is the unit of
 *   quantization as well as of sparsity —, V one per (batch, head, channel) over all tokens, and P the fixed
 *   scale 1/448 (P ∈ [0, 1], as SageAttention2), so P̂ = E4M3(448·P)/448.
 * - The softmax scale multiplies Q before it is rounded (as scaledDotProductAttention does): with
 *   per-tile absmax scaling this changes nothing but float rounding, and rounding off the ops are
 *   scaledDotProductAttention's, bit for bit.
 * - The products run on the dequantized operands in the tensor's dtype: an emulation of FP8 GEMMs
 *   with wide accumulation. Backward is float (the notes assume BF16) and treats every FP8 cast as
 *   the identity; the scales get no gradient. The sparsity is a 0/−∞ bias on the dense [T, T]
 *   scores: it reproduces the numerics and the pattern of a block-sparse kernel, not its speed.
 * - Sparsity 'window' is Sliding Tile Attention's pattern: key tile v is attended from query tile u
 *   iff |v_d − u_d| ≤ reach_d in every grid dim. Near the grid's edge the window is clipped rather
 *   than shifted inward (STA shifts it to keep its size), so the pattern is symmetric in tile
 *   distance. 'topk' (the issue's alternative) keeps, per (batch, head, query tile), the k key tiles
 *   with the largest pooled score mean(Q tile)·mean(K tile) — read back to the host, not differentiated.
 */
import { abs, amax, cat, defineFunction, div, eq, indexSelect, matmul, noGrad, softmax, tensor, where, Generator, type Tensor } from '@qgrad/core';
import { MultiHeadAttention, repeatKv, type KVCache, type Module } from '@qgrad/nn';
import { roundToFp } from '../grids/fp.js';
import { matchesName, replaceSubmodule, type NamePattern } from '../qat/prepare.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** E4M3's largest finite magnitude: every scale maps its absmax here. */
const E4M3_MAX = 448;

/** Which key tiles each query tile attends (null: all). */
export type FpsSparsity =
  /** Key tiles within `reach` tiles of the query tile in every grid dim: one reach per grid dim for all heads, or one such array per head. */
  | { kind: 'window'; reach: readonly number[] | readonly (readonly number[])[] }
  /** The k key tiles with the largest pooled score per query tile: one k for all heads, or one per head. */
  | { kind: 'topk'; k: number | readonly number[] };

/** Options of `fpsAttention`, `FpsAttention` and `prepareFpsAttention`. */
export interface FpsAttentionOptions {
  /** The token grid, row-major (a DiT's [rows, cols] of patches; [frames, rows, cols] for video): its product is the token count. */
  grid: readonly number[];
  /** The tile, one extent per grid dim, each dividing the grid's: the unit of Q/K scales and of sparsity. */
  tile: readonly number[];
  /** false skips every FP8 cast (then, dense, the ops are scaledDotProductAttention's). Default true. */
  round?: boolean;
  /** The block-sparse pattern (default null: dense). */
  sparsity?: FpsSparsity | null;
  /** Score scale (default 1/√headDim). */
  scale?: number;
}

const OPTION_NAMES = ['grid', 'tile', 'round', 'sparsity', 'scale'] as const;

const isPositiveInt = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 1;

/** The options with defaults filled in (the score scale's depends on the head dim). */
type ResolvedOptions = Required<Omit<FpsAttentionOptions, 'scale'>> & { scale?: number };

/** The options checked and with defaults; throws naming the bad option (plain-JS callers pass anything). */
function resolveOptions(opts: FpsAttentionOptions, who: string): ResolvedOptions {
  if (typeof opts !== 'object' || opts === null) throw new Error(`${who}: options with grid and tile are required`);
  for (const k of Object.keys(opts)) if (!(OPTION_NAMES as readonly string[]).includes(k)) throw new Error(`${who}: unknown option '${k}'; known: ${OPTION_NAMES.join(', ')}`);
  const { grid, tile, round = true, sparsity = null, scale } = opts;
  if (!Array.isArray(grid) || grid.length === 0 || !grid.every(isPositiveInt)) throw new Error(`${who}: grid must be a non-empty array of positive integers, got ${JSON.stringify(grid)}`);
  if (!Array.isArray(tile) || tile.length !== grid.length || !tile.every(isPositiveInt)) throw new Error(`${who}: tile must have one positive integer per grid dim (${grid.length}), got ${JSON.stringify(tile)}`);
  const d = tile.findIndex((t, i) => grid[i]! % t !== 0);
  if (d >= 0) throw new Error(`${who}: tile ${fmt(tile)} does not divide grid ${fmt(grid)} (dim ${d}: ${grid[d]} % ${tile[d]} ≠ 0)`);
  if (typeof round !== 'boolean') throw new Error(`${who}: round must be true or false, got ${JSON.stringify(round)}`);
  if (scale !== undefined && !(typeof scale === 'number' && Number.isFinite(scale) && scale > 0)) throw new Error(`${who}: scale must be a positive finite number, got ${JSON.stringify(scale)}`);
  if (sparsity !== null) checkSparsity(sparsity, grid.length, who);
  return { grid: [...grid], tile: [...tile], round, sparsity, ...(scale !== undefined && { scale }) };
}

function checkSparsity(s: FpsSparsity, dims: number, who: string): void {
  const bad = (what: string) => new Error(`${who}: sparsity ${what}, got ${JSON.stringify(s)}`);
  if (typeof s !== 'object' || s === null) throw bad("must be { kind: 'window', reach } or { kind: 'topk', k }");
  if (s.kind === 'window') {
    if (!Array.isArray(s.reach) || s.reach.length === 0) throw bad('window reach must be one integer per grid dim, or one such array per head');
    for (const r of perHeadReach(s.reach)) if (!Array.isArray(r) || r.length !== dims || !r.every((n) => Number.isInteger(n) && n >= 0)) throw bad(`window reach must have ${dims} non-negative integers (one per grid dim)`);
  } else if (s.kind === 'topk') {
    const ks = typeof s.k === 'number' ? [s.k] : s.k;
    if (!Array.isArray(ks) || ks.length === 0 || !ks.every(isPositiveInt)) throw bad('topk k must be a positive integer, or one per head');
  } else throw bad("kind must be 'window' or 'topk'");
}

/** A window's reach as one array per head, or a single entry meaning "every head". */
function perHeadReach(reach: readonly number[] | readonly (readonly number[])[]): (readonly number[])[] {
  return Array.isArray(reach[0]) ? [...(reach as readonly (readonly number[])[])] : [reach as readonly number[]];
}

/** How the token grid is cut into tiles, and which tile each token and tile coordinate is. */
class TileLayout {
  readonly tiles: number[]; // tiles per grid dim
  readonly count: number; // number of tiles
  readonly tokens: number;
  readonly tileOf: Int32Array; // token (row-major in grid) → tile (row-major in tiles)
  readonly coords: number[][]; // tile → its coordinate per dim
  constructor(readonly grid: readonly number[], readonly tile: readonly number[]) {
    this.tiles = grid.map((g, d) => g / tile[d]!);
    this.count = this.tiles.reduce((a, b) => a * b, 1);
    this.tokens = grid.reduce((a, b) => a * b, 1);
    this.tileOf = new Int32Array(this.tokens);
    for (let tok = 0; tok < this.tokens; tok++) {
      let [rest, idx] = [tok, 0];
      const c = grid.map(() => 0);
      for (let d = grid.length - 1; d >= 0; d--) [c[d], rest] = [rest % grid[d]!, Math.floor(rest / grid[d]!)];
      for (let d = 0; d < grid.length; d++) idx = idx * this.tiles[d]! + Math.floor(c[d]! / tile[d]!);
      this.tileOf[tok] = idx;
    }
    this.coords = Array.from({ length: this.count }, (_, u) => {
      const c = this.tiles.map(() => 0);
      for (let d = this.tiles.length - 1; d >= 0; d--) [c[d], u] = [u % this.tiles[d]!, Math.floor(u / this.tiles[d]!)];
      return c;
    });
  }
  /** x [B, H, T, d] seen as [B, H, n₁, t₁, n₂, t₂, …, d], so a reduction over the t's and d is one per tile. */
  tiled(x: Tensor): Tensor {
    const [b, h, , d] = x.shape as [number, number, number, number];
    return x.reshape([b, h, ...this.grid.flatMap((g, i) => [this.tiles[i]!, this.tile[i]!]), d]);
  }
  /** The dims of `tiled` inside one tile (the t's and d). */
  get tileDims(): number[] {
    return [...this.grid.map((_, i) => 3 + 2 * i), 2 + 2 * this.grid.length];
  }
}

/** One absmax/448 scale per slice that `dims` reduce over (1 for an all-zero slice), keeping dims for broadcasting. */
function e4m3Scales(x: Tensor, dims: number[]): Tensor {
  return noGrad(() => {
    const m = amax(abs(x), dims, true);
    return where(eq(m, 0), 1, div(m, E4M3_MAX));
  });
}

/** x rounded half-even onto the E4M3 grid times `scale` (broadcast); backward passes the gradient straight through. */
const e4m3Cast = defineFunction({
  name: 'e4m3Cast',
  forward(_ctx, x: Tensor, scale: Tensor | number) {
    return roundToFp(div(x, scale), 'e4m3fn').mul(scale);
  },
  // d/dx ≈ 1 (straight-through past the FP8 rounding); the scale is a constant of the cast
  backward(_ctx, g) {
    return [g, null];
  },
});

/**
 * Q's or K's FP8 form as FPSAttention rounds it: x [B, H, T, d] over `grid` cut into `tile`s, each
 * (batch, head, tile) scaled by its absmax/448 and rounded half-even onto E4M3 (x ≈ values·scales).
 * `scales` [B, H, T, 1] repeats each tile's scale on its tokens. No gradient.
 * @example
 * const { values, scales } = e4m3Tiles(randn([1, 2, 16, 8]), [4, 4], [2, 2]);
 * values.abs().max().item(); // 448: each tile's largest magnitude lands on E4M3's top value
 */
export function e4m3Tiles(x: Tensor, grid: readonly number[], tile: readonly number[]): { values: Tensor; scales: Tensor } {
  const o = resolveOptions({ grid, tile }, 'e4m3Tiles');
  const layout = checkInputs(x, x, x, o, 'e4m3Tiles');
  const xt = layout.tiled(x);
  const s = e4m3Scales(xt, layout.tileDims);
  const [b, h, t] = x.shape as [number, number, number];
  return noGrad(() => ({
    values: roundToFp(div(xt, s), 'e4m3fn').reshape(x.shape),
    scales: s.expand([...xt.shape.slice(0, -1), 1]).reshape([b, h, t, 1]),
  }));
}

/** The tiles each (batch or 1, head, query tile) attends, as 0/1 bytes [Bm, H, n, n] (Bm = 1 unless topk). */
function tileMask(sp: FpsSparsity, layout: TileLayout, q: Tensor, k: Tensor, who: string): { mask: Uint8Array; batch: number } {
  const [b, h] = q.shape as [number, number];
  const n = layout.count;
  if (sp.kind === 'window') {
    const reaches = perHeadReach(sp.reach);
    if (reaches.length !== 1 && reaches.length !== h) throw new Error(`${who}: window reach has ${reaches.length} entries but there are ${h} heads`);
    const mask = new Uint8Array(h * n * n);
    for (let hh = 0; hh < h; hh++) {
      const r = reaches[reaches.length === 1 ? 0 : hh]!;
      for (let u = 0; u < n; u++) for (let v = 0; v < n; v++) {
        const [cu, cv] = [layout.coords[u]!, layout.coords[v]!];
        mask[(hh * n + u) * n + v] = cu.every((c, d) => Math.abs(c - cv[d]!) <= r[d]!) ? 1 : 0;
      }
    }
    return { mask, batch: 1 };
  }
  const ks = typeof sp.k === 'number' ? [sp.k] : [...sp.k];
  if (ks.length !== 1 && ks.length !== h) throw new Error(`${who}: topk k has ${ks.length} entries but there are ${h} heads`);
  const kMax = Math.max(...ks);
  if (kMax > n) throw new Error(`${who}: topk k = ${kMax} exceeds the ${n} tiles of grid ${fmt(layout.grid)} with tile ${fmt(layout.tile)}`);
  const scores = noGrad(() => {
    // mean over each tile's tokens: [B, H, n, d]
    const pool = (x: Tensor) => layout.tiled(x).mean(layout.tileDims.slice(0, -1), true).reshape([b, h, n, x.shape[3]!]);
    return Float64Array.from(matmul(pool(q), pool(k).transpose(-2, -1)).dataSync()); // [B, H, n, n]
  });
  const mask = new Uint8Array(b * h * n * n);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let bh = 0; bh < b * h; bh++) {
    const kk = ks[ks.length === 1 ? 0 : bh % h]!;
    for (let u = 0; u < n; u++) {
      const row = (bh * n + u) * n;
      // ties go to the lower tile index (a stable sort), so the choice is deterministic
      const best = [...order].sort((x, y) => scores[row + y]! - scores[row + x]! || x - y);
      for (let i = 0; i < kk; i++) mask[row + best[i]!] = 1;
    }
  }
  return { mask, batch: b };
}

/** Checks q, k, v [B, H, T, d] against each other and the grid; returns the layout. */
function checkInputs(q: Tensor, k: Tensor, v: Tensor, o: ResolvedOptions, who: string): TileLayout {
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4 || k.shape.join() !== q.shape.join() || v.shape.slice(0, 3).join() !== q.shape.slice(0, 3).join()) {
    throw new Error(`${who}: expected q, k [B, H, T, d] and v [B, H, T, dv] (repeat grouped KV heads first); got q ${fmt(q.shape)}, k ${fmt(k.shape)}, v ${fmt(v.shape)}`);
  }
  if (q.dtype !== 'float32' && q.dtype !== 'float64') throw new Error(`${who}: q is ${q.dtype}; float32 or float64 expected`);
  if (k.dtype !== q.dtype || v.dtype !== q.dtype) throw new Error(`${who}: q, k, v dtypes differ (${q.dtype}, ${k.dtype}, ${v.dtype})`);
  const layout = new TileLayout(o.grid, o.tile);
  if (q.shape[2] !== layout.tokens) throw new Error(`${who}: ${q.shape[2]} tokens do not fill grid ${fmt(o.grid)} (${layout.tokens} tokens)`);
  return layout;
}

/**
 * The key tiles each query tile attends under `opts.sparsity`, as a uint8 tensor [Bm, H, n, n]
 * (n tiles, row-major over the tile grid; Bm = 1 for 'window', the batch for 'topk'; 1 = attended).
 * Dense (no sparsity) is all ones.
 * @example
 * const q = randn([1, 2, 16, 8]);
 * fpsBlockMask(q, q, { grid: [4, 4], tile: [2, 2], sparsity: { kind: 'window', reach: [[0, 0], [1, 1]] } });
 * // head 0: each of the 4 tiles attends only itself; head 1: all 4
 */
export function fpsBlockMask(q: Tensor, k: Tensor, opts: FpsAttentionOptions): Tensor {
  const o = resolveOptions(opts, 'fpsBlockMask');
  const layout = checkInputs(q, k, k, o, 'fpsBlockMask');
  const h = q.shape[1]!;
  const n = layout.count;
  if (!o.sparsity) return tensor(new Uint8Array(h * n * n).fill(1), { shape: [1, h, n, n] });
  const { mask, batch } = tileMask(o.sparsity, layout, q, k, 'fpsBlockMask');
  return tensor(mask, { shape: [batch, h, n, n] });
}

/**
 * FPSAttention: softmax(Q̂·K̂ᵀ·scale + M)·V̂ with P rounded too, over q, k [B, H, T, d] and
 * v [B, H, T, dv] whose T tokens fill `opts.grid` row-major. Q̂, K̂: E4M3 with one absmax/448
 * scale per (batch, head, tile); V̂: one per (batch, head, channel); P̂ = E4M3(448·P)/448. M is 0
 * on the key tiles `opts.sparsity` keeps for the query's tile and −∞ elsewhere. Backward is the
 * float attention's, straight through the casts. Design choices: the file's header.
 * @example
 * const [q, k, v] = [0, 1, 2].map(() => randn([2, 4, 16, 16], { requiresGrad: true }));
 * const y = fpsAttention(q, k, v, { grid: [4, 4], tile: [2, 2], sparsity: { kind: 'topk', k: 2 } });
 * y.sum().backward(); // gradients for q, k, v
 * fpsAttention(q, k, v, { grid: [4, 4], tile: [2, 2], round: false }); // = scaledDotProductAttention(q, k, v)
 */
export function fpsAttention(q: Tensor, k: Tensor, v: Tensor, opts: FpsAttentionOptions): Tensor {
  const o = resolveOptions(opts, 'fpsAttention');
  const layout = checkInputs(q, k, v, o, 'fpsAttention');
  const [b, h, t, d] = q.shape as [number, number, number, number];
  let qs = q.mul(o.scale ?? 1 / Math.sqrt(d));
  let [kk, vv] = [k, v];
  if (o.round) {
    const perTile = (x: Tensor) => {
      const xt = layout.tiled(x);
      return e4m3Cast(xt, e4m3Scales(xt, layout.tileDims)).reshape([b, h, t, x.shape[3]!]);
    };
    [qs, kk] = [perTile(qs), perTile(k)];
    vv = e4m3Cast(v, e4m3Scales(v, [2]));
  }
  let bias: Tensor | null = null;
  if (o.sparsity) {
    const { mask, batch } = tileMask(o.sparsity, layout, q, k, 'fpsAttention');
    const n = layout.count;
    const m = (q.dtype === 'float64' ? new Float64Array(batch * h * t * t) : new Float32Array(batch * h * t * t)).fill(-Infinity);
    for (let bh = 0; bh < batch * h; bh++) for (let i = 0; i < t; i++) for (let j = 0; j < t; j++) {
      if (mask[(bh * n + layout.tileOf[i]!) * n + layout.tileOf[j]!]) m[(bh * t + i) * t + j] = 0;
    }
    bias = tensor(m, { shape: [batch, h, t, t], dtype: q.dtype });
  }
  let p = softmax(matmul(qs, kk.transpose(-2, -1)), -1, { bias }); // [B, H, T, T]
  if (o.round) p = e4m3Cast(p, 1 / E4M3_MAX);
  return matmul(p, vv); // [B, H, T, dv]
}

/** What a schedule phase may change: the tile, the sparsity and whether to round (the grid is fixed). */
export type FpsPhaseOptions = Partial<Pick<FpsAttentionOptions, 'tile' | 'sparsity' | 'round'>>;

/**
 * FPSAttention's denoising-step-aware schedule: phase i holds for timesteps t ∈ [from_i, from_{i+1})
 * and overrides the layer's options with its own. The paper's ordering (sampling runs from t = T
 * down to 0): early, noisy steps coarse and sparsest, middle steps fine and densest, late steps in
 * between; its thresholds α₁D, α₂D and granularities are not confirmed (methods-2.md §9), so the
 * phases are the caller's. Each sample of a batch uses its own t's phase.
 */
export interface FpsSchedule {
  /** Where the running forward's timesteps are read: quant's `TimestepModule.context` (one t per sample). */
  context: { readonly current: readonly number[] | null };
  /** Phases in increasing `from`, the first from 0. */
  phases: readonly { from: number; options: FpsPhaseOptions }[];
}

/** The options of `FpsAttention` and `prepareFpsAttention`: fpsAttention's, plus an optional schedule over timesteps. */
export interface FpsLayerOptions extends FpsAttentionOptions {
  schedule?: FpsSchedule | null;
}

/** The layer options split into the base attention options and the schedule's resolved phases. */
function resolveLayerOptions(opts: FpsLayerOptions, who: string): { base: FpsAttentionOptions; schedule: FpsSchedule | null; phases: { from: number; options: FpsAttentionOptions }[] } {
  const { schedule = null, ...rest } = opts ?? ({} as FpsLayerOptions);
  const base = resolveOptions(rest, who);
  if (schedule === null) return { base, schedule, phases: [] };
  const ctx = schedule?.context as { current?: unknown } | undefined;
  if (typeof ctx !== 'object' || ctx === null || !('current' in ctx)) throw new Error(`${who}: schedule.context must be a timestep context (TimestepModule's context), got ${String(schedule?.context)}`);
  const list = schedule.phases;
  if (!Array.isArray(list) || list.length === 0) throw new Error(`${who}: schedule.phases must be a non-empty array of { from, options }`);
  const phases = list.map((ph, i) => {
    const prev = i === 0 ? -1 : list[i - 1]!.from;
    if (!(Number.isInteger(ph?.from) && ph.from > prev && (i > 0 || ph.from === 0))) throw new Error(`${who}: schedule phase ${i} starts at ${ph?.from}; phases start at 0 and increase (integer timesteps)`);
    const extra = Object.keys(ph.options ?? {}).filter((k) => !['tile', 'sparsity', 'round'].includes(k));
    if (extra.length) throw new Error(`${who}: schedule phase ${i} may set tile, sparsity and round, not ${extra.join(', ')}`);
    return { from: ph.from, options: resolveOptions({ ...base, ...ph.options }, `${who} (schedule phase ${i})`) };
  });
  return { base, schedule, phases };
}

/**
 * A MultiHeadAttention whose attention is `fpsAttention`: it shares the source layer's projections
 * (and RoPE, and its state-dict names), so swapping it into a DiT block keeps the weights and
 * trains them through the FP8, block-sparse attention. `enabled = false` gives the float layer back.
 * @example
 * const dit = new DiT(mnistDiTConfig); // 7×7 patches of 4×4 pixels
 * dit.blocks.at(0).attn = FpsAttention.from(dit.blocks.at(0).attn, { grid: [7, 7], tile: [7, 1] });
 * // by denoising step: t ≥ 700 row tiles with a 1-tile window, below that dense
 * const model = new TimestepModule(dit);
 * const schedule = { context: model.context, phases: [{ from: 0, options: {} }, { from: 700, options: { sparsity: { kind: 'window', reach: [1, 0] } } }] };
 * dit.blocks.at(1).attn = FpsAttention.from(dit.blocks.at(1).attn, { grid: [7, 7], tile: [1, 7], schedule });
 */
export class FpsAttention extends MultiHeadAttention {
  /** The options used outside the schedule's phases (all of them without a schedule). */
  readonly options: FpsAttentionOptions;
  readonly schedule: FpsSchedule | null;
  readonly #phases: { from: number; options: FpsAttentionOptions }[];
  /** FP8 and sparsity on/off (off: the source layer's float attention). */
  enabled = true;

  constructor(src: MultiHeadAttention, opts: FpsLayerOptions) {
    // the base class builds throwaway projections (replaced below; the source's may be quantized
    // modules): a private generator leaves the global one untouched
    super(src.dim, src.numHeads, { numKvHeads: src.numKvHeads, generator: new Generator(0) });
    if (src.causal || src.dropoutP) throw new Error(`FpsAttention: the source attention is ${src.causal ? 'causal' : `dropout ${src.dropoutP}`}; FPSAttention is bidirectional and without dropout`);
    const { base, schedule, phases } = resolveLayerOptions(opts, 'FpsAttention');
    [this.options, this.schedule, this.#phases] = [base, schedule, phases];
    for (const o of [base, ...phases.map((p) => p.options)]) {
      const r = o.sparsity?.kind === 'window' ? perHeadReach(o.sparsity.reach).length : 1;
      if (r !== 1 && r !== src.numHeads) throw new Error(`FpsAttention: window reach has ${r} entries but the layer has ${src.numHeads} heads`);
    }
    // the registry reads the fields: the source's modules take the slots the base class registered
    this.qProj = src.qProj;
    this.kProj = src.kProj;
    this.vProj = src.vProj;
    this.oProj = src.oProj;
    this.rope = src.rope;
    this.train(src.training);
  }
  static from(src: MultiHeadAttention, opts: FpsLayerOptions): FpsAttention {
    return new FpsAttention(src, opts);
  }
  override forward(x: Tensor, opts: { cache?: KVCache; attnMask?: Tensor } = {}): Tensor {
    if (!this.enabled) return super.forward(x, opts);
    if (opts.cache || opts.attnMask) throw new Error('FpsAttention: a KV cache or an extra mask is not supported (the tiles cover the whole token grid)');
    if (x.ndim !== 3 || x.shape[2] !== this.dim) throw new Error(`FpsAttention: expected input [B, T, ${this.dim}], got ${fmt(x.shape)}`);
    const [b, t] = x.shape as [number, number];
    const heads = (y: Tensor, n: number) => y.view(b, t, n, this.headDim).transpose(1, 2); // [B, n, T, hd]
    let q = heads(this.qProj.forward(x), this.numHeads);
    let k = heads(this.kProj.forward(x), this.numKvHeads);
    const rep = this.numHeads / this.numKvHeads;
    const v = repeatKv(heads(this.vProj.forward(x), this.numKvHeads), rep);
    if (this.rope) [q, k] = [this.rope.forward(q), this.rope.forward(k)];
    const y = this.#attend(q, repeatKv(k, rep), v); // [B, H, T, hd]
    return this.oProj.forward(y.transpose(1, 2).reshape(b, t, this.dim)); // [B, T, dim]
  }
  /** fpsAttention with each sample's options: the layer's, or its timestep's phase under a schedule. */
  #attend(q: Tensor, k: Tensor, v: Tensor): Tensor {
    if (!this.schedule) return fpsAttention(q, k, v, this.options);
    const ts = this.schedule.context.current;
    const b = q.shape[0]!;
    if (!ts || ts.length !== b) throw new Error(`FpsAttention: the schedule needs one timestep per sample from its context (run the model through TimestepModule); got ${ts ? `${ts.length} for ${b} samples` : 'none'}`);
    const phaseOf = (t: number) => {
      let i = 0;
      while (i + 1 < this.#phases.length && this.#phases[i + 1]!.from <= t) i++;
      return i;
    };
    const groups = new Map<number, number[]>(); // phase → its samples
    ts.forEach((t, i) => {
      const ph = phaseOf(t);
      groups.set(ph, [...(groups.get(ph) ?? []), i]);
    });
    if (groups.size === 1) return fpsAttention(q, k, v, this.#phases[phaseOf(ts[0]!)]!.options);
    // one attention call per phase on its samples, then the batch back in its order
    const order: number[] = [];
    const parts = [...groups].map(([ph, rows]) => {
      order.push(...rows);
      const idx = tensor(Int32Array.from(rows), { dtype: 'int32' });
      return fpsAttention(indexSelect(q, 0, idx), indexSelect(k, 0, idx), indexSelect(v, 0, idx), this.#phases[ph]!.options);
    });
    const back = new Int32Array(b);
    order.forEach((row, pos) => (back[row] = pos));
    return indexSelect(cat(parts, 0), 0, tensor(back, { dtype: 'int32' }));
  }
  override extraRepr(): string {
    const { grid, tile, round, sparsity } = this.options;
    const sp = !sparsity ? 'dense' : sparsity.kind === 'window' ? `window reach ${JSON.stringify(sparsity.reach)}` : `topk ${JSON.stringify(sparsity.k)}`;
    return `${super.extraRepr()}, grid=${fmt(grid)}, tile=${fmt(tile)}, ${round ? 'e4m3' : 'unrounded'}, ${sp}${this.schedule ? `, ${this.#phases.length} phases by t` : ''}`;
  }
}

/**
 * Replaces every MultiHeadAttention of `model` whose dotted name matches `match` (default all) and
 * not `skip` with an FpsAttention, in place; returns the replaced names. Every replaced layer must
 * see `opts.grid`'s tokens (a DiT: its [grid, grid] patches).
 * @example
 * const dit = new DiT(mnistDiTConfig);
 * prepareFpsAttention(dit, { grid: [dit.grid, dit.grid], tile: [1, 7], sparsity: { kind: 'topk', k: 4 } }); // ['blocks.0.attn', …]
 */
export function prepareFpsAttention(model: Module, opts: FpsLayerOptions, select: { match?: NamePattern | NamePattern[]; skip?: NamePattern[] } = {}): string[] {
  resolveLayerOptions(opts, 'prepareFpsAttention'); // before any layer is swapped
  const targets = [...model.namedModules()].filter(([n, m]) => n !== '' && m instanceof MultiHeadAttention && !(m instanceof FpsAttention) && (select.match === undefined || matchesName(n, select.match)) && !(select.skip && matchesName(n, select.skip)));
  const swapped = targets.map(([name, m]) => [name, FpsAttention.from(m as MultiHeadAttention, opts)] as const); // all built (and checked) before any is swapped
  for (const [name, f] of swapped) replaceSubmodule(model, name, f);
  return swapped.map(([n]) => n);
}
