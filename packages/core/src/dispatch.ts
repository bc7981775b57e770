/**
 * @file The single dispatch point: every kernel call from core goes through `runKernel`, so a
 * later lazy/fusing engine has one place to hook into. Also the allocation limit and shape
 * helpers; buffers' lifetimes are lifetime.ts's.
 */
import { contiguousStrides, numel, type DType, type KernelArg, type KernelName, type KernelParams } from '@qgrad/kernels';
import { currentBackend } from './backend.js';
import { allocate, BYTES, useAfterRelease } from './lifetime.js';
import { Tensor } from './tensor.js';

export function argOf(t: Tensor, op: string): KernelArg {
  if (t.storage.released) throw new Error(useAfterRelease(t, op));
  return { data: t.storage.data, dtype: t.dtype, shape: t.shape, strides: t.strides, offset: t.offset };
}

/**
 * A fresh contiguous tensor on `like`'s backend (or the current one), contents unspecified.
 * `op` names what allocates it, for errors and for the message of a use after recycling.
 */
export function empty(shape: number[], dtype: DType, like?: Tensor, op = 'empty'): Tensor {
  const backend = like ? like.storage.backend : currentBackend();
  const size = numel(shape);
  if (!(size * BYTES[dtype] <= maxTensorBytes)) throw new RangeError(tooLarge(op, shape, dtype, size));
  return new Tensor(allocate(backend, dtype, size, op), shape, contiguousStrides(shape), 0);
}

/** Runs `kernel` on `inputs` into a fresh tensor of `shape` and `dtype`. */
export function runKernel<K extends KernelName>(kernel: K, inputs: Tensor[], shape: number[], dtype: DType, params: KernelParams[K]): Tensor {
  const out = empty(shape, dtype, inputs[0], kernel);
  const backend = out.storage.backend;
  const args = new Array<KernelArg>(inputs.length);
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i]!;
    if (t.storage.backend !== backend && !(backend.hostMemory && t.storage.backend.hostMemory)) throw new Error(mixedBackends(kernel, inputs));
    args[i] = argOf(t, kernel);
  }
  backend.run(kernel, args, argOf(out, kernel), params);
  return out;
}

/** Runs `kernel` writing into an existing (possibly strided) tensor, bumping its version. */
export function runKernelInto<K extends KernelName>(kernel: K, inputs: Tensor[], out: Tensor, params: KernelParams[K]): void {
  out.storage.backend.run(kernel, inputs.map((t) => argOf(t, kernel)), argOf(out, kernel), params);
  out.storage.version++;
}

/** The error for inputs on two backends whose memories do not mix. */
export function mixedBackends(op: string, inputs: Tensor[]): string {
  const target = inputs[0]!.device;
  return `${op}: inputs live on different backends (${inputs.map((i) => i.device).join(', ')}); move them to one with .to('${target}') first`;
}

// ---------------------------------------------------------------- allocation limit
function defaultMaxTensorBytes(): number {
  const env = typeof process !== 'undefined' ? process.env?.QGRAD_MAX_TENSOR_BYTES : undefined;
  if (env !== undefined && env.trim() !== '') {
    const n = Number(env);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`QGRAD_MAX_TENSOR_BYTES must be a positive number of bytes, got '${env}'`);
    return n;
  }
  // half the machine's memory: a tensor above it cannot be used with even one temporary of its size
  const os = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process?.getBuiltinModule?.('node:os') as { totalmem(): number } | undefined;
  return os ? os.totalmem() / 2 : 2 ** 31;
}
let maxTensorBytes = defaultMaxTensorBytes();

/**
 * Sets the largest tensor (in bytes) that may be allocated; a larger one is a clear error before
 * any memory is touched, instead of an engine RangeError or the machine swapping. Default: half of
 * this machine's memory (2 GiB where that is unknown), or `QGRAD_MAX_TENSOR_BYTES`.
 * Returns the previous limit.
 * @example const prev = setMaxTensorBytes(2 ** 30); // 1 GiB
 */
export function setMaxTensorBytes(bytes: number): number {
  if (!(bytes > 0)) throw new RangeError(`setMaxTensorBytes: the limit must be a positive number of bytes, got ${bytes}`);
  const prev = maxTensorBytes;
  maxTensorBytes = bytes;
  return prev;
}

function bytesText(b: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  // small figures exactly, so a limit just below a size never prints as the same number
  while (b >= 10240 && i < units.length - 1) (b /= 1024), i++;
  if (i > 0 && b >= 1024 && i < units.length - 1) (b /= 1024), i++;
  return `${i === 0 ? b : b.toFixed(1)} ${units[i]}`;
}
function tooLarge(op: string, shape: number[], dtype: DType, size: number): string {
  if (!Number.isSafeInteger(size) || size < 0) return `${op}: shape [${shape.join(', ')}] does not describe a tensor (each dim must be a non-negative integer)`;
  return `${op}: a ${dtype} tensor of shape [${shape.join(', ')}] needs ${bytesText(size * BYTES[dtype])}, more than the limit of ${bytesText(maxTensorBytes)} (half this machine's memory by default); raise it with setMaxTensorBytes() or QGRAD_MAX_TENSOR_BYTES if you mean it`;
}

/** NumPy/PyTorch broadcasting of two shapes; throws naming the op and both shapes. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) {
      throw new Error(`${op}: shapes [${a.join(', ')}] and [${b.join(', ')}] cannot be broadcast together (dim ${i}: ${x} vs ${y})`);
    }
    out[i] = x === 1 ? y : x;
  }
  return out;
}

/** Normalises a possibly negative dim against `ndim`, naming the op on error. */
export function normDim(op: string, dim: number, ndim: number): number {
  const n = Math.max(ndim, 1);
  if (!Number.isInteger(dim) || dim < -n || dim >= n) throw new RangeError(`${op}: dim ${dim} is out of range for a tensor of ${ndim} dims`);
  return dim < 0 ? dim + n : dim;
}

export { numel, contiguousStrides };
