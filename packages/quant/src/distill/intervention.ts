/**
 * @file Teacher Intervention (Kim et al., EACL 2023; methods-2.md §12): the modes (TI-M map,
 * TI-C context, TI-O output), their step schedules (gradual O→C→M, inverted, stochastic), and an
 * instrumented forward of nn's LlamaAttention that exposes the scores, probabilities, context and
 * output and substitutes the teacher's. Wiring it into a model is distill.ts's job.
 */
import { softmax, type Tensor } from '@qgrad/core';
import { causalBias, causalMask, stepGenerator, type KVCache, type LlamaAttention, type RotaryEmbedding } from '@qgrad/nn';

/**
 * Which of the student's attention signals the teacher's replaces in the forward: 'map' (the
 * softmax probabilities, TI-M), 'context' (probabilities·V, TI-C), 'output' (the attention
 * module's output, TI-O), or 'none' (plain KD, TI's step 2).
 */
export type TiMode = 'map' | 'context' | 'output' | 'none';

/** A mode per 0-based optimizer step. */
export type TiSchedule = (step: number) => TiMode;

/**
 * TI's schedules over the `steps` = s intervention steps (step 1), 'none' afterwards (step 2,
 * plain QAT+KD): 'gradual' (TI-G: TI-O for step < s/6, TI-C for step < s/3, TI-M up to s, as the
 * reference's `global_step < N/6` tests), 'inverted' (M, C, O in thirds), 'stochastic' (a uniform
 * draw per step, seeded by (seed, step) so a resumed run repeats it), or one mode for all s steps.
 * @example const mode = tiSchedule('gradual', 60); [mode(0), mode(10), mode(20), mode(60)]; // ['output', 'context', 'map', 'none']
 */
export function tiSchedule(kind: 'gradual' | 'inverted' | 'stochastic' | Exclude<TiMode, 'none'>, steps: number, seed = 0): TiSchedule {
  if (!(Number.isInteger(steps) && steps >= 0)) throw new RangeError(`tiSchedule: steps must be a non-negative integer, got ${steps}`);
  const s = steps;
  switch (kind) {
    case 'gradual': return (i) => (i >= s ? 'none' : i < s / 6 ? 'output' : i < s / 3 ? 'context' : 'map');
    case 'inverted': return (i) => (i >= s ? 'none' : i < s / 3 ? 'map' : i < (2 * s) / 3 ? 'context' : 'output');
    case 'stochastic': return (i) => (i >= s ? 'none' : (['output', 'context', 'map'] as const)[stepGenerator(seed, i, 7).randint(0, 3)]!);
    case 'map': case 'context': case 'output': return (i) => (i >= s ? 'none' : kind);
    default: {
      const never: never = kind;
      throw new Error(`tiSchedule: unknown schedule ${JSON.stringify(never)}; gradual, inverted, stochastic, map, context or output`);
    }
  }
}

/** What one attention call exposes: scores with masked entries set to 0 (TernaryBERT's score loss), probabilities, context [B, T, H·hd], output. */
export interface AttentionRecord {
  scores: Tensor;
  probs: Tensor;
  context: Tensor;
  output: Tensor;
}

/**
 * nn's LlamaAttention forward, written out so that its inner signals can be recorded and replaced
 * (the same arithmetic as `scaledDotProductAttention` with grouped queries). Under an intervention
 * the inputs of Q and K are detached (and of V too under TI-C/TI-O), as the reference does, so
 * the replaced path sends no gradient into earlier layers through them.
 * @example
 * const { record } = llamaAttentionForward(attn, x, rope, undefined, 'none', null); // the teacher's signals
 * const { y } = llamaAttentionForward(studentAttn, x, rope, undefined, 'map', record); // TI-M
 */
export function llamaAttentionForward(a: LlamaAttention, x: Tensor, rope: RotaryEmbedding, cache: KVCache | undefined, mode: TiMode, teacher: AttentionRecord | null): { y: Tensor; record: AttentionRecord } {
  const [b, t] = x.shape as [number, number];
  const { nHeads: h, nKvHeads: hkv } = a.cfg;
  const hd = a.headDim;
  const start = cache?.length ?? 0;
  const xd = mode === 'none' ? x : x.detach();
  const xv = mode === 'context' || mode === 'output' ? xd : x;
  let q = a.q_proj.forward(xd).view(b, t, h, hd).transpose(1, 2); // [B, H, T, hd]
  let k = a.k_proj.forward(xd).view(b, t, hkv, hd).transpose(1, 2); // [B, Hkv, T, hd]
  let v = a.v_proj.forward(xv).view(b, t, hkv, hd).transpose(1, 2); // [B, Hkv, T, hd]
  q = rope.forward(q, start);
  k = rope.forward(k, start);
  if (cache) [k, v] = cache.update(k, v);
  const tk = k.shape[2]!;
  const g = h / hkv;
  // each KV head serves g query heads through a broadcast dim, as sdpa's enableGqa does
  const qg = q.mul(1 / Math.sqrt(hd)).reshape([b, hkv, g, t, hd]); // [B, Hkv, g, T, hd]
  const scores = qg.matmul(k.unsqueeze(2).transpose(-2, -1)); // [B, Hkv, g, T, Tk]
  const dtype = x.dtype === 'float64' ? 'float64' : 'float32';
  const bias = t === 1 ? null : causalBias(t, tk, start, dtype);
  const probs = softmax(scores, -1, { bias }); // [B, Hkv, g, T, Tk]
  const used = mode === 'map' ? teacher!.probs : probs;
  const ctx = used.matmul(v.unsqueeze(2)).reshape([b, h, t, hd]).transpose(1, 2).reshape([b, t, h * hd]); // [B, T, H·hd]
  const out = a.o_proj.forward(mode === 'context' ? teacher!.context : ctx); // [B, T, dim]
  const kept = t === 1 ? scores : scores.mul(causalMask(t, tk, start).to(dtype)); // masked scores → 0, as the reference's `≤ −100 → 0`
  return { y: mode === 'output' ? teacher!.output : out, record: { scores: kept.reshape([b, h, t, tk]), probs, context: ctx, output: out } };
}
