/**
 * @file The playground's parts in Node (the page itself is driven in test/browser/playground.test.ts):
 * the MNIST slice round-trips exactly and names what is wrong with a bad file, the QAT config
 * follows the controls, a run is a pure function of its options, and the charts' ticks are round.
 */
import { describe, expect, it } from 'vitest';
import { loadMnist } from '@qgrad/nn';
import { histogramChart, lossChart, movingAverage, ticks } from './charts.js';
import { decodeSlice, mnistSliceBytes, SLICE } from './data.js';
import { DEFAULTS, qatConfig, Training } from './train.js';

describe('the playground', () => {
  const bytes = mnistSliceBytes();
  const slice = decodeSlice(bytes);

  it('ships the first digits of loadMnist, normalised as examples/lib/mnist.ts does, through the byte table exactly', () => {
    const { train, test } = loadMnist({ flatten: true });
    expect(slice.train.labels).toEqual(Int32Array.from(train.labels.dataSync() as Int32Array).subarray(0, SLICE.train));
    expect(slice.test.labels).toEqual(Int32Array.from(test.labels.dataSync() as Int32Array).subarray(0, SLICE.test));
    const px = test.images.dataSync() as Float32Array;
    expect(slice.test.images).toEqual(Float32Array.from(px.subarray(0, SLICE.test * 784), (v) => (v - 0.1307) / 0.3081));
  });

  it('names a file that is not a slice, or one of the wrong length', () => {
    expect(() => decodeSlice(new Uint8Array(2000))).toThrow(/not an MNIST slice \(2000 bytes/);
    expect(() => decodeSlice(bytes.subarray(0, bytes.length - 1))).toThrow(`2000 + 500 digits need ${bytes.length} bytes, got ${bytes.length - 1}`);
  });

  it('quantizes weights on the chosen grid, bits only where the grid takes them, inputs with the estimator only on int', () => {
    expect(qatConfig(DEFAULTS)).toEqual({
      rules: [{ match: '0', weight: { grid: 'int', bits: 4, estimator: 'lsq' }, input: { bits: 8, signed: true, estimator: 'lsq' } }],
      default: { weight: { grid: 'int', bits: 4, estimator: 'lsq' }, input: { bits: 8, signed: false, estimator: 'lsq' } },
    });
    expect(qatConfig({ ...DEFAULTS, grid: 'nf4', estimator: 'ste', inputBits: 0 }).default).toEqual({ weight: { grid: 'nf4', estimator: 'ste' }, input: null });
    expect(qatConfig({ ...DEFAULTS, bits: 1, estimator: '' }).default!.weight).toEqual({ grid: 'int', bits: 1, signed: false });
  });

  it('trains the same model twice from the same options, and refuses to step once converted', () => {
    const small = { train: { images: slice.train.images.subarray(0, 256 * 784), labels: slice.train.labels.subarray(0, 256) }, test: slice.test };
    const run = () => {
      const t = new Training(small, { ...DEFAULTS, steps: 6, seed: 3 });
      while (t.losses.length < 6) t.step();
      return { t, losses: t.losses, bytes: t.exportBytes() };
    };
    const [a, b] = [run(), run()];
    expect(a.losses).toEqual(b.losses);
    expect(Buffer.from(a.bytes).equals(Buffer.from(b.bytes))).toBe(true);
    expect(() => a.t.step()).toThrow(/converted by exportBytes/);
  });

  it('draws round ticks, a moving average and both charts with labelled axes', () => {
    expect(ticks(0, 199)).toEqual([0, 50, 100, 150]);
    expect(ticks(0, 2.4, 5)).toEqual([0, 0.5, 1, 1.5, 2]);
    expect(movingAverage([1, 3, 5, 7], 2)).toEqual([1, 2, 4, 6]);
    const loss = lossChart([2.3, 1.5, 0.9], 200);
    expect(loss).toContain('training step');
    expect(loss).toContain('cross-entropy loss');
    expect(loss.match(/<polyline/g)).toHaveLength(2);
    const hist = histogramChart({ edges: [-2, -1, 0, 1, 2], counts: [1, 4, 3, 0], levels: [-1, 0, 1], clippedFraction: 0 });
    expect(hist.match(/<rect [^>]*fill="#4c78a8"/g)).toHaveLength(4);
    expect(hist.match(/stroke="#e45756"/g)).toHaveLength(3);
    expect(hist).toContain('weights per bin');
  });
});
