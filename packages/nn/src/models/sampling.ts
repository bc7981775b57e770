/**
 * @file Next-token sampling from logits (temperature, top-k, greedy), shared by the language
 * models. Runs on the read-back values: one draw per row from the given generator.
 */
import { defaultGenerator, type Generator, type Tensor } from '@qgrad/core';

/** How a next token is drawn from logits: temperature, top-k and the generator. */
export interface SampleOptions {
  /** Softmax temperature; 0 picks the argmax (default 1). */
  temperature?: number;
  /** Keep only the k largest logits (ties at the k-th value are kept, as PyTorch's topk mask). */
  topK?: number;
  generator?: Generator;
}

/**
 * One token id per row of logits [B, V]: softmax(logits / temperature) restricted to the top k,
 * sampled by inverse CDF with one uniform draw per row.
 * @example sampleLogits(tensor([[0, 5, 1]]), { temperature: 0 }); // [1]
 */
export function sampleLogits(logits: Tensor, opts: SampleOptions = {}): number[] {
  if (logits.ndim !== 2) throw new Error(`sampleLogits: expected logits [B, V], got shape [${logits.shape.join(', ')}]`);
  const [b, v] = logits.shape as [number, number];
  const temperature = opts.temperature ?? 1;
  if (!(temperature >= 0)) throw new RangeError(`sampleLogits: temperature must be ≥ 0, got ${temperature}`);
  const k = Math.min(opts.topK ?? v, v);
  if (!(k >= 1)) throw new RangeError(`sampleLogits: topK must be ≥ 1, got ${opts.topK}`);
  const g = opts.generator ?? defaultGenerator;
  const data = logits.dataSync();
  const out: number[] = [];
  for (let r = 0; r < b; r++) {
    const row = Array.from(data.subarray(r * v, (r + 1) * v), Number);
    if (temperature === 0) {
      out.push(row.indexOf(Math.max(...row)));
      continue;
    }
    const kth = k < v ? [...row].sort((x, y) => y - x)[k - 1]! : -Infinity;
    const max = Math.max(...row);
    const w = row.map((x) => (x >= kth ? Math.exp((x - max) / temperature) : 0));
    let u = g.random() * w.reduce((s, x) => s + x, 0);
    let pick = v - 1;
    for (let i = 0; i < v; i++) {
      u -= w[i]!;
      if (u < 0) {
        pick = i;
        break;
      }
    }
    while (w[pick] === 0) pick--; // rounding at the very end of the CDF
    out.push(pick);
  }
  return out;
}
