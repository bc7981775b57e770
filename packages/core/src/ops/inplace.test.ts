/**
 * In-place writers allocate nothing on the scale of the tensor they write (issue 12: a fill_ of a
 * 40000² tensor peaked at 3× its size). Two probes: storages made through dispatch's `empty`, and
 * every typed array constructed anywhere: the js kernels' index tables, and the views the wasm
 * engine makes over its memory each time that memory grows to stage operands.
 */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { availableBackends, withBackend } from '../backend.js';
import { startRecording, stopRecording } from '../lifetime.js';
import type { Tensor } from '../tensor.js';
import { arange, ones, zeros } from './creation.js';
import { add, cast, mul, sub } from './elementwise.js';

const ARRAYS = ['Float32Array', 'Float64Array', 'Int32Array', 'Int8Array', 'Uint8Array', 'Uint32Array', 'Uint16Array', 'Int16Array', 'ArrayBuffer'] as const;
type Global = Record<string, unknown>;
const originals = new Map(ARRAYS.map((name) => [name, (globalThis as Global)[name]]));
let largest = 0; // elements (bytes for ArrayBuffer) of the largest array constructed while watching
let watching = false;

beforeEach(() => {
  for (const name of ARRAYS) {
    const target = originals.get(name) as new (...args: unknown[]) => object;
    (globalThis as Global)[name] = new Proxy(target, {
      construct(t, args, newTarget) {
        const a = Reflect.construct(t, args, newTarget === (globalThis as Global)[name] ? t : newTarget) as { length?: number; byteLength: number };
        if (watching) largest = Math.max(largest, name === "ArrayBuffer" ? a.byteLength / 4 : (a.length ?? 0));
        return a;
      },
    });
  }
});
afterEach(() => {
  for (const name of ARRAYS) (globalThis as Global)[name] = originals.get(name);
});

const N = 1000; // 10⁶ elements: 16 blocks of the in-place writers

/** Runs `op` and returns the largest allocation it made, in elements. */
function largestDuring(op: () => void): number {
  largest = 0;
  watching = true;
  const prev = startRecording();
  let made;
  try {
    op();
  } finally {
    made = stopRecording(prev);
    watching = false;
  }
  return Math.max(largest, ...made.map((s) => s.size));
}

/** Element-by-element equality that stays fast on 10⁶ elements (toEqual on typed arrays does not). */
function expectSame(actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  expect(actual.length).toBe(expected.length);
  let first = -1;
  for (let i = 0; i < actual.length && first < 0; i++) if (!Object.is(actual[i], expected[i])) first = i;
  expect(first < 0 ? null : { index: first, actual: actual[first], expected: expected[first] }).toBe(null);
}

const range = (n: number) => arange(n, undefined, 1, { dtype: 'float32' });

describe.each(availableBackends().filter((b) => b !== 'gpu'))('in-place writers on %s', (backend) => {
  // the wasm engine views its initial memory when first used: start it before measuring
  beforeAll(() => withBackend(backend, () => void add(ones([4096]), ones([4096])).dataSync()));

  // [name, destination, operand (made before measuring), the write, dst[0] and dst[1] after it]
  const cases: [string, () => Tensor, () => Tensor | null, (x: Tensor, y: Tensor | null) => void, [number, number]][] = [
    ['fill_', () => zeros([N, N]), () => null, (x) => x.fill_(7), [7, 7]],
    ['zero_', () => ones([N, N]), () => null, (x) => x.zero_(), [0, 0]],
    ['copy_ of a number', () => zeros([N, N]), () => null, (x) => x.copy_(2.5), [2.5, 2.5]],
    ['fill_ of an int32 tensor with a fraction', () => zeros([N, N], { dtype: 'int32' }), () => null, (x) => x.fill_(-2.7), [-2, -2]],
    ['fill_ of a transposed view', () => zeros([N, N]), () => null, (x) => x.t().fill_(3), [3, 3]],
    ['fill_ of a strided slice', () => zeros([N, 2 * N]), () => null, (x) => x.slice(1, 0, null, 2).fill_(4), [4, 0]],
    ['copy_ of a row, broadcast', () => zeros([N, N]), () => range(N), (x, y) => x.copy_(y!), [0, 1]],
    ['copy_ of a transposed tensor', () => zeros([N, N]), () => range(N * N).reshape(N, N).t(), (x, y) => x.copy_(y!), [0, N]],
    ['copy_ with a cast', () => zeros([N, N]), () => ones([N, N], { dtype: 'int32' }), (x, y) => x.copy_(y!), [1, 1]],
    ['add_ of a scalar', () => ones([N, N]), () => null, (x) => x.add_(1), [2, 2]],
    ['mul_ of a tensor', () => ones([N, N]).mul(3), () => ones([N, N]).mul(2), (x, y) => x.mul_(y!), [6, 6]],
    ['add_ of a broadcast row', () => ones([N, N]), () => range(N), (x, y) => x.add_(y!), [1, 2]],
    ['add_ of a tensor times alpha', () => ones([N, N]), () => ones([N, N]).mul(2), (x, y) => x.add_(y!, -0.5), [0, 0]],
    ['sub_ of a row times alpha', () => ones([N, N]), () => range(N), (x, y) => x.sub_(y!, 2), [1, -1]],
    ['add_ of a number times alpha', () => ones([N, N]), () => null, (x) => x.add_(3, 2), [7, 7]],
    ['sub_ into a transposed view', () => ones([N, N]), () => range(N), (x, y) => x.t().sub_(y!), [1, 1]],
    ['div_ by an int32 tensor', () => ones([N, N]).mul(8), () => ones([N, N], { dtype: 'int32' }).mul(2), (x, y) => x.div_(y!), [4, 4]],
  ];

  it.each(cases)('%s allocates no temporary of the tensor’s size', (_name, make, operand, op, expected) => {
    withBackend(backend, () => {
      const x = make();
      const y = operand();
      const version = x.version;
      expect(largestDuring(() => op(x, y))).toBeLessThan(x.numel() / 4);
      expect(x.version).toBe(version + 1); // one write, however many blocks
      const d = x.dataSync();
      expect([d[0], d[1]]).toEqual(expected);
    });
  });

  it('gives the out-of-place results, block edges included', () => {
    withBackend(backend, () => {
      // 70 000 × 3: the rows do not divide the block; [3, 70 000]: one row is larger than a block
      for (const shape of [[70_000, 3], [3, 70_000], [2, 3, 40_000]]) {
        const x = range(shape.reduce((a, b) => a * b)).reshape(shape);
        const row = range(shape.at(-1)!);
        const y = x.clone();
        y.add_(row).mul_(2).sub_(1);
        expectSame(y.dataSync(), sub(mul(add(x, row), 2), 1).dataSync());
        const t = x.clone().transpose(0, 1);
        t.add_(1);
        expectSame(t.dataSync(), add(x, 1).transpose(0, 1).contiguous().dataSync());
        const c = zeros(shape, { dtype: 'int32' });
        c.copy_(cast(x, 'float64').mul(0.5));
        expectSame(c.dataSync(), cast(mul(x, 0.5), 'int32').dataSync());
      }
    });
  });

  it('reads a source that shares memory with the destination before writing it', () => {
    withBackend(backend, () => {
      const x = range(N * N).reshape(N, N);
      const before = x.clone();
      x.add_(x); // same elements: safe in place
      expectSame(x.dataSync(), mul(before, 2).dataSync());
    });
  });
});
