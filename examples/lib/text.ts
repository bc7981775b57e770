/**
 * @file Moby-Dick in byte windows for the Llama examples (llama-mobydick, qat-llama), with the
 * checks of the flags that only the text can answer (--seq-len, --batch-size).
 */
import { loadMobyDick } from '@qgrad/nn';
import { CliError, checkFlag } from './args.js';

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
