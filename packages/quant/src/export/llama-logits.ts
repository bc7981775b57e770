/**
 * @file llama.cpp's reference-logits file, the one `llama-perplexity --kl-divergence-base F
 * --kl-divergence` reads: qgrad writes it from its own forward, so llama.cpp reports the KL
 * divergence, top-1 agreement and PPL ratio of a GGUF against qgrad. No model code lives here.
 */

/** Options of `llamaCppLogits`: the token stream, the context, the vocabulary and the logits of each chunk. */
export interface LlamaCppLogitsOptions {
  /** nChunks · nCtx ids, stored as given (llama.cpp puts BOS back itself, see `bos`). */
  tokens: ArrayLike<number>;
  /** Positions per chunk: llama-perplexity's `-c` (its `-b` should be at least this). */
  nCtx: number;
  /** The GGUF's vocabulary size; llama.cpp only warns on a mismatch and then reads garbage. */
  nVocab: number;
  /** Logits [nCtx, nVocab], row-major, of one chunk's ids exactly as the model under test sees them. */
  logits: (ids: Int32Array, chunk: number) => ArrayLike<number>;
  /**
   * The BOS id when the GGUF's vocab adds BOS (the SPM byte vocab: 1): llama.cpp then replaces
   * every chunk's first id with it before decoding, so `logits` gets the replaced ids too.
   */
  bos?: number;
}

// llama.cpp's nearest_int adds 1.5·2²³ in float: round half to even
function nearestInt(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The bytes of a `_logits_` base file: "_logits_", u32 nCtx, i32 nVocab, i32 nChunks, the i32 ids,
 * then for each chunk and each scored position p = nCtx/2 … nCtx−2 a row of 2·⌈nVocab/2⌉ + 4
 * u16: f32 scale and f32 min log-prob, then each logit as a u16 step above max(min logit, max − 16),
 * in float32 arithmetic as llama.cpp writes its own. llama.cpp prints the summary statistics
 * (Mean/Maximum KLD, Same top p, PPL ratio) only when nChunks · (nCtx − 1 − nCtx/2) ≥ 100.
 * Format checked against llama.cpp c392e50 (examples/perplexity).
 * @example
 * const ids = Int32Array.from(text, (c) => c.charCodeAt(0) + 3).subarray(0, 15 * 32);
 * const bytes = llamaCppLogits({ tokens: ids, nCtx: 32, nVocab: 259, bos: 1,
 *   logits: (chunk) => noGrad(() => llama.forward(tensor([Array.from(chunk)], { dtype: 'int32' }))).dataSync() });
 * writeFileSync('base.kld', bytes); // llama-perplexity -m x.gguf -c 32 -b 32 --kl-divergence-base base.kld --kl-divergence
 */
export function llamaCppLogits(opts: LlamaCppLogitsOptions): Uint8Array {
  const { tokens, nCtx, nVocab } = opts;
  if (!Number.isInteger(nCtx) || nCtx < 4) throw new Error(`llamaCppLogits: nCtx must be an integer ≥ 4, got ${nCtx}`);
  if (tokens.length === 0 || tokens.length % nCtx) throw new Error(`llamaCppLogits: ${tokens.length} tokens do not split into chunks of nCtx ${nCtx}`);
  const nChunks = tokens.length / nCtx;
  const first = Math.floor(nCtx / 2);
  const rows = nCtx - 1 - first;
  const nv = 2 * Math.ceil(nVocab / 2) + 4;
  const head = 20 + 4 * tokens.length;
  const out = new Uint8Array(head + 2 * nChunks * rows * nv);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode('_logits_'));
  view.setUint32(8, nCtx, true);
  view.setInt32(12, nVocab, true);
  view.setInt32(16, nChunks, true);
  for (let i = 0; i < tokens.length; i++) view.setInt32(20 + 4 * i, tokens[i]!, true);
  const f = Math.fround;
  let at = head;
  for (let c = 0; c < nChunks; c++) {
    const ids = Int32Array.from({ length: nCtx }, (_, i) => tokens[c * nCtx + i]!);
    if (opts.bos !== undefined) ids[0] = opts.bos;
    const logits = opts.logits(ids, c);
    if (logits.length !== nCtx * nVocab) throw new Error(`llamaCppLogits: chunk ${c} has ${logits.length} logits, expected nCtx · nVocab = ${nCtx * nVocab}`);
    for (let p = first; p < first + rows; p++, at += 2 * nv) {
      const row = p * nVocab;
      let max = f(logits[row]!);
      let min = max;
      for (let i = 1; i < nVocab; i++) {
        const l = f(logits[row + i]!);
        if (l > max) max = l;
        if (l < min) min = l;
      }
      min = Math.max(min, f(max - 16));
      let sum = 0;
      for (let i = 0; i < nVocab; i++) sum += f(Math.exp(f(f(logits[row + i]!) - max)));
      const scale = f(f(max - min) / 65535);
      view.setFloat32(at, scale, true);
      view.setFloat32(at + 4, f(f(min - max) - f(Math.log(sum))), true);
      if (!scale) continue; // every logit equal: llama.cpp writes zeros, as the fresh buffer holds
      const inv = f(1 / scale);
      for (let i = 0; i < nVocab; i++) {
        const l = f(logits[row + i]!);
        if (l > min) view.setUint16(at + 8 + 2 * i, Math.min(65535, nearestInt(f(inv * f(l - min)))), true);
      }
    }
  }
  return out;
}
