/**
 * @file What the Llama examples (llama-mobydick, qat-llama) share: the model-shape flags and their
 * check, and Moby-Dick in byte windows with the checks of the flags that only the text can answer
 * (--seq-len, --batch-size).
 */
import { loadMobyDick, tinyLlamaConfig } from '@qgrad/nn';
import { CliError, checkFlag } from './args.js';

/** The model-shape flags of both Llama examples (defaults: the tiny reference Llama). */
export const llamaShapeOptions = {
  dim: { type: 'int', default: tinyLlamaConfig.dim, min: 1, help: 'model width (--heads × an even head width)' },
  layers: { type: 'int', default: tinyLlamaConfig.nLayers, min: 1, help: 'decoder layers' },
  heads: { type: 'int', default: tinyLlamaConfig.nHeads, min: 1, help: 'query heads (a multiple of --kv-heads)' },
  kvHeads: { type: 'int', default: tinyLlamaConfig.nKvHeads, min: 1, help: 'key/value heads (grouped-query attention)' },
} as const;

/** A CliError unless --dim splits into --heads even head widths and --heads into --kv-heads groups. */
export function checkLlamaShape(args: { dim: number; heads: number; kvHeads: number }): void {
  if (args.dim % args.heads || (args.dim / args.heads) % 2) throw new CliError(`--dim must be --heads (${args.heads}) × an even head width (rotary embeddings rotate pairs), got ${args.dim}`);
  if (args.heads % args.kvHeads) throw new CliError(`--heads must be a multiple of --kv-heads (${args.kvHeads}), got ${args.heads}`);
}

/**
 * Moby-Dick cut into `seqLen`-byte windows (90 % train / 10 % validation), checking the flags
 * that depend on the text: a window too long for the validation text, or more windows per batch
 * than the training text has, is a CliError naming --seq-len or --batch-size.
 */
export function mobyDickWindows(seqLen: number, batchSize: number): ReturnType<typeof loadMobyDick> {
  let data: ReturnType<typeof loadMobyDick>;
  try {
    data = loadMobyDick({ blockSize: seqLen });
  } catch (e) {
    if (e instanceof RangeError) throw new CliError(`--seq-len ${seqLen} is too long for the text: ${e.message}`);
    throw e;
  }
  checkFlag('batchSize', batchSize, { type: 'int', min: 1, max: data.train.length }, `there are ${data.train.length} training windows`);
  return data;
}
