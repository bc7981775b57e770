/**
 * @file The single dispatch point: every kernel call from core goes through `runKernel`, so a
 * later lazy/fusing engine has one place to hook into. Also tensor allocation and shape helpers.
 */
import { contiguousStrides, numel, type Backend, type DType, type KernelArg, type KernelName, type KernelParams } from '@qgrad/kernels';
import { currentBackend } from './backend.js';
import { Tensor, type Storage } from './tensor.js';

export function argOf(t: Tensor, op: string): KernelArg {
  if (t.storage.released) throw new Error(useAfterRecycle(t, op));
  return { data: t.storage.data, dtype: t.dtype, shape: t.shape, strides: t.strides, offset: t.offset };
}

// ---------------------------------------------------------------- buffer recycling
// A fresh large typed array costs far more than its arithmetic: the OS maps and zeroes its pages
// on first touch (measured: writing a new 3 MiB Float32Array ≈ 18 ms on this machine, 0.6 ms
// into a reused one). Code that can prove a buffer dead (the backward pass for the gradients and
// temporaries it made, optimizer updates) hands it back here, and `empty` reuses it.

/** Buffers smaller than this are cheap to allocate and not pooled. */
const POOL_MIN_ELEMENTS = 4096;
/** Bound on pooled memory; beyond it released buffers are left to the garbage collector. */
const POOL_MAX_BYTES = 256 * 2 ** 20;
const pool = new Map<Backend, Map<DType, Map<number, unknown[]>>>();
let pooledBytes = 0;
let recorder: Storage[] | null = null;
let pooling = typeof process === 'undefined' || process.env?.QGRAD_POOL !== '0';

const BYTES: Record<DType, number> = { float32: 4, float64: 8, int32: 4, int8: 1, uint8: 1 };

function takePooled(backend: Backend, dtype: DType, size: number): unknown {
  if (size < POOL_MIN_ELEMENTS) return undefined;
  const list = pool.get(backend)?.get(dtype)?.get(size);
  const data = list?.pop();
  if (data !== undefined) pooledBytes -= size * BYTES[dtype];
  return data;
}

/**
 * Turns buffer reuse on or off (default on; `QGRAD_POOL=0` starts with it off). Off, released
 * buffers are left to the garbage collector, but a use after release still throws.
 * @example setBufferRecycling(false); // every tensor gets a fresh buffer
 */
export function setBufferRecycling(enabled: boolean): void {
  pooling = enabled;
  if (!enabled) {
    pool.clear();
    pooledBytes = 0;
  }
}

/**
 * Starts recording the storages `empty` creates; returns the previous recorder, to be given back
 * to `stopRecording`. Recordings nest (an inner one hides its storages from the outer).
 */
export function startRecording(): Storage[] | null {
  const prev = recorder;
  recorder = [];
  return prev;
}

/** Ends the current recording and returns the storages it saw. */
export function stopRecording(prev: Storage[] | null): Storage[] {
  const seen = recorder ?? [];
  recorder = prev;
  return seen;
}

/**
 * Hands a storage's buffer back for reuse. The caller guarantees that no tensor that will be read
 * again refers to it: any later use of a tensor on it throws instead of reading recycled data.
 * `by` names the scope that proved it dead, for that error.
 */
export function recycle(storage: Storage, by: string): void {
  if (storage.released) return;
  storage.released = by;
  const bytes = storage.size * BYTES[storage.dtype];
  if (!pooling || storage.size < POOL_MIN_ELEMENTS || pooledBytes + bytes > POOL_MAX_BYTES) return;
  let byDtype = pool.get(storage.backend);
  if (!byDtype) pool.set(storage.backend, (byDtype = new Map()));
  let bySize = byDtype.get(storage.dtype);
  if (!bySize) byDtype.set(storage.dtype, (bySize = new Map()));
  let list = bySize.get(storage.size);
  if (!list) bySize.set(storage.size, (list = []));
  list.push(storage.data);
  pooledBytes += bytes;
}

/**
 * Runs `fn` and recycles every buffer allocated inside it that none of the tensors `keep` returns
 * refers to. For code that owns everything it allocates, such as an optimizer's update of one
 * parameter: its temporaries die at the end, its state tensors are kept.
 * @internal
 */
export function withTemporaries<T>(fn: () => T, keep: (result: T) => Iterable<Tensor | Storage>, scope = 'withTemporaries'): T {
  const prev = startRecording();
  let result: T;
  let made: Storage[];
  try {
    result = fn();
  } finally {
    made = stopRecording(prev);
  }
  if (made.length) {
    const kept = new Set<Storage>();
    for (const k of keep(result)) kept.add(k instanceof Tensor ? k.storage : k);
    for (const st of made) if (!kept.has(st)) recycle(st, scope);
  }
  return result;
}

/**
 * A fresh contiguous tensor on `like`'s backend (or the current one), contents unspecified.
 * `op` names what allocates it, for errors and for the message of a use after recycling.
 */
export function empty(shape: number[], dtype: DType, like?: Tensor, op = 'empty'): Tensor {
  const backend = like ? like.storage.backend : currentBackend();
  const size = numel(shape);
  if (!(size * BYTES[dtype] <= maxTensorBytes)) throw new RangeError(tooLarge(op, shape, dtype, size));
  const data = (pooling && takePooled(backend, dtype, size)) || backend.alloc(dtype, size);
  const storage: Storage = { backend, data, dtype, size, version: 0, madeBy: op, released: false };
  if (recorder) recorder.push(storage);
  return new Tensor(storage, shape, contiguousStrides(shape), 0);
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

/**
 * The error for a tensor whose buffer went back to the pool: which op made it, what recycled it,
 * and what to do instead. Shared by every read path (kernels, .data, read()) so all say the same.
 */
export function useAfterRecycle(t: Tensor, op: string): string {
  const by = t.storage.released;
  const what = `${op}: a ${t.dtype} tensor of shape [${t.shape.join(', ')}]${t.storage.madeBy ? ` made by '${t.gradFn?.name ?? t.storage.madeBy}'` : ''}`;
  if (by === 'trainStep') {
    return `${what} was used after the trainStep that created it ended; trainStep recycles every tensor made inside the step except the model's parameters, buffers and gradients, the optimizers' state and the tensors the step function returns: return it (or a number, via .item()) from the step to keep it`;
  }
  return `${what} was used after ${by || 'a scope'} recycled its buffer (a qgrad bug unless the tensor was kept past a scope that documents recycling; please report it, and set QGRAD_POOL=0 meanwhile)`;
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
