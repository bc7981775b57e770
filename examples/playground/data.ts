/**
 * @file The playground's MNIST slice as bytes: made in Node from @qgrad/nn's `loadMnist` (by the
 * Vite config, which serves it, and by the playground test), decoded in the page and in Node alike,
 * so both train on the same float32 pixels.
 */
import { loadMnist } from '@qgrad/nn';

/** Normalised images [n, 784] and their digits. */
export interface Digits {
  images: Float32Array;
  labels: Int32Array;
}

/** A training part and a held-out part of MNIST. */
export interface MnistSlice {
  train: Digits;
  test: Digits;
}

/** Digits in the slice the page fetches: ~2 MB, enough for 200 steps of 64 without seeing a digit more than seven times. */
export const SLICE = { train: 2000, test: 500 } as const;
/** Where the page fetches it from (Vite serves it in dev and writes it into the build). */
export const SLICE_FILE = 'mnist-slice.bin';

const MAGIC = 0x514d4e31; // 'QMN1'
// the usual MNIST mean and std, as examples/lib/mnist.ts normalises
const MEAN = 0.1307;
const STD = 0.3081;
const HEADER = 12;
const LEVELS = 256;

/**
 * The first `SLICE.train` training and `SLICE.test` test digits of `loadMnist` as bytes: a header
 * (magic, counts), the 256 normalised pixel values as float32, then one byte per pixel indexing
 * them (the `mnist` package's pixels take at most 256 values, rounded to three decimals, so the
 * table is exact where a byte of value×255 would not be), then one byte per label.
 * @example writeFileSync('public/mnist-slice.bin', mnistSliceBytes());
 */
export function mnistSliceBytes(): Uint8Array {
  const { train, test } = loadMnist({ flatten: true });
  const parts = [
    { px: (train.images.dataSync() as Float32Array).subarray(0, SLICE.train * 784), labels: (train.labels.dataSync() as Int32Array).subarray(0, SLICE.train) },
    { px: (test.images.dataSync() as Float32Array).subarray(0, SLICE.test * 784), labels: (test.labels.dataSync() as Int32Array).subarray(0, SLICE.test) },
  ];
  const values = [...new Set(parts.flatMap((p) => Array.from(p.px)))].sort((a, b) => a - b);
  if (values.length > LEVELS) throw new Error(`mnistSliceBytes: ${values.length} distinct pixel values, a byte indexes ${LEVELS}`);
  const index = new Map(values.map((v, i) => [v, i]));
  const n = SLICE.train + SLICE.test;
  const out = new Uint8Array(HEADER + 4 * LEVELS + n * 785);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint32(4, SLICE.train, true);
  view.setUint32(8, SLICE.test, true);
  values.forEach((v, i) => view.setFloat32(HEADER + 4 * i, (v - MEAN) / STD, true));
  let at = HEADER + 4 * LEVELS;
  for (const p of parts) for (const v of p.px) out[at++] = index.get(v)!;
  for (const p of parts) for (const d of p.labels) out[at++] = d;
  return out;
}

/**
 * The slice `mnistSliceBytes` wrote, as float32 images and int32 labels; a wrong file is named by what is wrong.
 * @example const { train, test } = decodeSlice(new Uint8Array(await (await fetch('mnist-slice.bin')).arrayBuffer()));
 */
export function decodeSlice(bytes: Uint8Array): MnistSlice {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < HEADER + 4 * LEVELS || view.getUint32(0, true) !== MAGIC) throw new Error(`decodeSlice: not an MNIST slice (${bytes.byteLength} bytes, no 'QMN1' header)`);
  const counts = [view.getUint32(4, true), view.getUint32(8, true)] as const;
  const expected = HEADER + 4 * LEVELS + (counts[0] + counts[1]) * 785;
  if (bytes.byteLength !== expected) throw new Error(`decodeSlice: ${counts[0]} + ${counts[1]} digits need ${expected} bytes, got ${bytes.byteLength}`);
  const table = Float32Array.from({ length: LEVELS }, (_, i) => view.getFloat32(HEADER + 4 * i, true));
  let px = HEADER + 4 * LEVELS;
  let lb = px + (counts[0] + counts[1]) * 784;
  const part = (n: number): Digits => {
    const images = Float32Array.from(bytes.subarray(px, px + n * 784), (i) => table[i]!);
    const labels = Int32Array.from(bytes.subarray(lb, lb + n));
    px += n * 784;
    lb += n;
    return { images, labels };
  };
  return { train: part(counts[0]), test: part(counts[1]) };
}
