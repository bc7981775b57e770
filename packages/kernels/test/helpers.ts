/**
 * @file Shared helpers for the kernel tests: strided views over random data (transposed,
 * broadcast, offset) and an allclose that treats NaN as equal to NaN.
 */
import fc from 'fast-check';
import { BACKENDS, contiguousStrides, numel, type Backend, type BackendEntry, type BackendOptions, type KernelArg, type KernelName, type TypedArray } from '@qgrad/kernels';

export type Arg = KernelArg<TypedArray>;
export type FloatDType = 'float32' | 'float64';

/** Awkward sizes around SIMD widths and block sizes. */
export const SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 17, 33, 65];
export const size = () => fc.oneof(fc.constantFrom(...SIZES), fc.integer({ min: 1, max: 70 }));

/** Deterministic pseudo-random values in [-1, 1) from a seed (fast-check shrinks the seed). */
export function randomArray(dtype: FloatDType, n: number, seed: number): Float32Array | Float64Array {
  const a = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return a;
}

export function contiguous(data: TypedArray, shape: number[], dtype: FloatDType, offset = 0): Arg {
  return { data, dtype, shape, strides: contiguousStrides(shape), offset };
}

/**
 * A view of `shape` whose storage has its dims laid out in `order` (a permutation), starting at
 * `offset`; dims listed in `broadcast` get stride 0 (their storage has size 1).
 */
export function view(dtype: FloatDType, shape: number[], order: number[], offset: number, broadcast: number[], seed: number): Arg {
  const stored = shape.map((n, d) => (broadcast.includes(d) ? 1 : n));
  const storageShape = order.map((d) => stored[d]!);
  const storageStrides = contiguousStrides(storageShape);
  const strides = shape.map(() => 0);
  order.forEach((d, i) => (strides[d] = broadcast.includes(d) ? 0 : storageStrides[i]!));
  const data = randomArray(dtype, offset + numel(storageShape), seed);
  return { data, dtype, shape, strides, offset };
}

export const out = (dtype: FloatDType, shape: number[]): Arg => contiguous(dtype === 'float32' ? new Float32Array(numel(shape)) : new Float64Array(numel(shape)), shape, dtype);

/** Index of the first element where |a - b| > atol + rtol·|b| (NaN only matches NaN), or -1. */
export function mismatch(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number | ArrayLike<number> = 0): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (Number.isNaN(x) !== Number.isNaN(y)) return i;
      continue;
    }
    if (x === y) continue;
    const tol = (typeof atol === 'number' ? atol : atol[i]!) + rtol * Math.abs(y);
    if (!(Math.abs(x - y) <= tol)) return i;
  }
  return -1;
}

/**
 * An int32 view of `shape` with values in [lo, hi): storage laid out in `order`, every stride
 * multiplied by `gap` (a sliced index), starting at `offset`.
 */
export function intView(shape: number[], order: number[], offset: number, gap: number, lo: number, hi: number, seed: number): Arg {
  const storage = contiguousStrides(order.map((d) => shape[d]!));
  const strides = shape.map(() => 0);
  order.forEach((d, i) => (strides[d] = storage[i]! * gap));
  const data = new Int32Array(offset + Math.max(1, numel(shape)) * gap);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = lo + ((s >>> 0) % (hi - lo));
  }
  return { data, dtype: 'int32', shape, strides, offset };
}

/** Permutations of 0..n-1 (n ≤ 4) as an arbitrary. */
export const permutation = (n: number) =>
  fc.shuffledSubarray(Array.from({ length: n }, (_, i) => i), { minLength: n, maxLength: n });

const convOutSize = (n: number, k: number, s: number, p: number, d: number) => Math.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1;

/** Random conv geometries (im2col/col2im params, an input storage order, a seed) with a non-empty output. */
export const convGeometry = fc
  .record({
    N: fc.integer({ min: 1, max: 2 }),
    C: fc.integer({ min: 1, max: 4 }),
    H: fc.integer({ min: 1, max: 40 }),
    W: fc.integer({ min: 1, max: 40 }),
    kernel: fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 })),
    stride: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
    padding: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })),
    dilation: fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 })),
    padValue: fc.constantFrom(0, -Infinity),
    order: permutation(4),
    seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
  })
  .map((g) => ({
    ...g,
    oh: convOutSize(g.H, g.kernel[0], g.stride[0], g.padding[0], g.dilation[0]),
    ow: convOutSize(g.W, g.kernel[1], g.stride[1], g.padding[1], g.dilation[1]),
  }))
  .filter((g) => g.oh > 0 && g.ow > 0);

/** A backend under test: a line of the backend list, and how its suite's title names it. */
export interface TestBackend extends BackendEntry {
  readonly label: string;
}

/**
 * Every backend in the list except the js oracle, where this runtime can run it, twice: once fed
 * the tests' own typed arrays (operands the backend must stage), once with every operand and
 * output moved into the backend's own buffers first (`alloc`, same layout), as tensors are, and
 * checked to stage nothing (wasm: `staged()` unchanged). Each kernel suite runs once per entry
 * (`describe.each(NATIVE)('$label …')`), so a new backend is tested by adding its line to BACKENDS.
 * The gpu backend is not in it yet: these suites assert CPU-backend facts (threads, pooled calls,
 * float64 natively, bit-exact IEEE results); gpu.test.ts runs the same problems on it within
 * float32 tolerance.
 */
export const NATIVE: readonly TestBackend[] = BACKENDS.filter((b) => b.name !== 'js' && b.name !== 'gpu' && b.available()).flatMap((b) => [
  { ...b, label: `${b.name} (operands in host arrays)` },
  { ...b, label: `${b.name} (operands in its own memory)`, create: (o?: BackendOptions) => inOwnMemory(b.create(o)) },
]);

/**
 * A backend whose `run` first copies every operand's whole buffer (one copy per distinct buffer,
 * so aliasing is kept) into buffers the backend allocated, runs there, copies every buffer back
 * and frees them; it throws when a native call staged any bytes (for backends that count them).
 */
function inOwnMemory(b: Backend): Backend {
  const staged = () => {
    const s = (b as { staged?: () => { in: number; out: number } }).staged?.();
    return s ? s.in + s.out : 0;
  };
  const wrapper = Object.create(b) as Backend;
  wrapper.run = (kernel, inputs, out, params) => {
    const copies = new Map<unknown, TypedArray>();
    const place = (x: KernelArg): KernelArg => {
      const data = x.data as TypedArray;
      let c = copies.get(data);
      if (!c) {
        c = b.alloc(x.dtype, data.length) as TypedArray;
        c.set(data as never);
        copies.set(data, c);
      }
      return { ...x, data: c };
    };
    const ins = inputs.map(place);
    const o = place(out);
    const before = staged();
    const calls = nativeTotal(b);
    try {
      b.run(kernel, ins, o, params);
    } finally {
      // every buffer back (adamStep updates its state inputs in place too), then freed
      for (const [data, c] of copies) {
        (data as TypedArray).set(c as never);
        b.free(c);
      }
    }
    if (nativeTotal(b) > calls && staged() !== before) throw new Error(`${kernel} on ${b.name} staged ${staged() - before} bytes of operands already in its memory`);
  };
  return wrapper;
}

const nativeTotal = (b: Backend) => b.stats!().reduce((n, s) => n + s.native, 0);

/** Calls of `kernel` in `dtype` that ran on the backend itself (not its js fallback). */
export const nativeCalls = (b: Backend, kernel: KernelName, dtype?: string): number => b.stats!().find((s) => s.kernel === kernel && (dtype === undefined || s.dtype === dtype))?.native ?? 0;
