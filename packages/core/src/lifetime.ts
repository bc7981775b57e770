/**
 * @file The one lifetime model: every buffer is allocated here and released here. Scopes
 * (`tidy`, and the same mechanism inside the backward pass, optimizer updates and `trainStep`)
 * record what they allocate and release what nobody can reach; `dispose` releases one tensor;
 * a FinalizationRegistry frees what becomes unreachable without being released. Kernel dispatch
 * lives in dispatch.ts.
 */
import type { Backend, DType } from '@qgrad/kernels';
import type { Storage, Tensor } from './tensor.js';

export const BYTES: Record<DType, number> = { float32: 4, float64: 8, int32: 4, int8: 1, uint8: 1 };

// ---------------------------------------------------------------- the buffer pool
// A fresh large buffer costs far more than its arithmetic: the OS maps and zeroes its pages on
// first touch (measured: writing a new 3 MiB Float32Array ≈ 18 ms on this machine, 0.6 ms into a
// reused one). Released buffers are therefore kept, by backend, dtype and size, for `allocate`.

/** Buffers smaller than this are cheap to allocate and not pooled. */
const POOL_MIN_ELEMENTS = 4096;
/** Bound on pooled memory; beyond it released buffers go back to their backend. */
const POOL_MAX_BYTES = 256 * 2 ** 20;
const pool = new Map<Backend, Map<DType, Map<number, unknown[]>>>();
let pooledBytes = 0;
let pooling = typeof process === 'undefined' || process.env?.QGRAD_POOL !== '0';

function takePooled(backend: Backend, dtype: DType, size: number): unknown {
  if (size < POOL_MIN_ELEMENTS) return undefined;
  const list = pool.get(backend)?.get(dtype)?.get(size);
  const data = list?.pop();
  if (data !== undefined) pooledBytes -= size * BYTES[dtype];
  return data;
}

function putPooled(backend: Backend, dtype: DType, size: number, data: unknown): boolean {
  const bytes = size * BYTES[dtype];
  if (!pooling || size < POOL_MIN_ELEMENTS || pooledBytes + bytes > POOL_MAX_BYTES) return false;
  let byDtype = pool.get(backend);
  if (!byDtype) pool.set(backend, (byDtype = new Map()));
  let bySize = byDtype.get(dtype);
  if (!bySize) byDtype.set(dtype, (bySize = new Map()));
  let list = bySize.get(size);
  if (!list) bySize.set(size, (list = []));
  list.push(data);
  pooledBytes += bytes;
  return true;
}

function emptyPool(): void {
  for (const [backend, byDtype] of pool) for (const bySize of byDtype.values()) for (const list of bySize.values()) for (const d of list) backend.free(d);
  pool.clear();
  pooledBytes = 0;
}

/**
 * Turns buffer reuse on or off (default on; `QGRAD_POOL=0` starts with it off). Off, released
 * buffers go straight back to their backend; a use after release still throws.
 * @example setBufferRecycling(false); // every tensor gets a fresh buffer
 */
export function setBufferRecycling(enabled: boolean): void {
  pooling = enabled;
  if (!enabled) emptyPool();
}

// ---------------------------------------------------------------- live buffers
// Only buffers in backend-owned memory (wasm heap blocks, device buffers) must be handed back
// with `free`; they are counted and registered with a FinalizationRegistry so that one nobody
// released is freed once unreachable. Registering costs ~1–2 µs, more than a small op, so small
// tensors take a garbage-collected array where the backend offers one (allocCollected), and
// garbage-collected backends (js) are not tracked at all.
interface Held {
  backend: Backend;
  data: unknown;
  bytes: number;
}
let liveBuffers = 0;
let liveBytes = 0;
const finalizer = new FinalizationRegistry<Held>((h) => {
  liveBuffers--;
  liveBytes -= h.bytes;
  h.backend.free(h.data);
});

/** A new storage of `size` elements on `backend` (from the pool when one fits), tracked when the backend owns its memory. */
export function allocate(backend: Backend, dtype: DType, size: number, madeBy: string): Storage {
  let data: unknown;
  let owned = false;
  if (!backend.collected && size < POOL_MIN_ELEMENTS && backend.allocCollected) data = backend.allocCollected(dtype, size);
  else {
    data = (pooling && takePooled(backend, dtype, size)) || backend.alloc(dtype, size);
    owned = !backend.collected;
  }
  const storage: Storage = { backend, data, dtype, size, version: 0, madeBy, released: false, owned };
  if (owned) {
    const bytes = size * BYTES[dtype];
    liveBuffers++;
    liveBytes += bytes;
    finalizer.register(storage, { backend, data, bytes }, storage);
  }
  if (recorder) recorder.push(storage);
  return storage;
}

/**
 * Releases a storage: its buffer goes to the pool or back to the backend, and any later use of a
 * tensor on it throws an error naming `by`, the scope that released it. A kept storage (`keep`)
 * is left alone unless `force` (an explicit `dispose`).
 */
export function release(storage: Storage, by: string, force = false): void {
  if (storage.released || (storage.kept && !force)) return;
  storage.released = by;
  const { backend, data, dtype, size, owned } = storage;
  if (owned) {
    finalizer.unregister(storage);
    liveBuffers--;
    liveBytes -= size * BYTES[dtype];
  }
  // a small garbage-collected array of an owning backend is neither pooled nor freed
  if (!owned && !backend.collected) return;
  if (!putPooled(backend, dtype, size, data)) backend.free(data);
}

/**
 * The error for a tensor whose buffer was released: which op made it, what released it, and what
 * to do instead. Shared by every read path (kernels, dataSync, data()) so all say the same.
 */
export function useAfterRelease(t: Tensor, op: string): string {
  const by = t.storage.released;
  const what = `${op}: a ${t.dtype} tensor of shape [${t.shape.join(', ')}]${t.storage.madeBy ? ` made by '${t.gradFn?.name ?? t.storage.madeBy}'` : ''}`;
  if (by === 'trainStep') {
    return `${what} was used after the trainStep that created it ended; trainStep releases every tensor made inside the step except the model's parameters, buffers and gradients, the optimizers' state and the tensors the step function returns: return it (or a number, via .item()) from the step to keep it`;
  }
  if (by === 'dispose()') return `${what} was used after dispose() released it (or the tensor whose memory it views)`;
  if (by && by.startsWith('tidy')) return `${what} was used after the ${by} that created it ended; return it from the function (or keep() it) to use it afterwards`;
  return `${what} was used after ${by || 'a scope'} released its buffer (a qgrad bug unless the tensor was kept past a scope that documents releasing; please report it, and set QGRAD_POOL=0 meanwhile)`;
}

// ---------------------------------------------------------------- scopes
let recorder: Storage[] | null = null;

/**
 * Starts recording the storages `allocate` creates; returns the previous recorder, to be given
 * back to `stopRecording`. Recordings nest (an inner one hides its storages from the outer).
 */
export function startRecording(): Storage[] | null {
  const prev = recorder;
  recorder = [];
  return prev;
}

/**
 * Adds storages to the current recording (if any): what a nested recording saw and let live
 * (the gradients a recycling backward pass returns) still belongs to the enclosing scope.
 */
export function record(storages: Iterable<Storage>): void {
  if (recorder) for (const st of storages) recorder.push(st);
}

/** Ends the current recording and returns the storages it saw. */
export function stopRecording(prev: Storage[] | null): Storage[] {
  const seen = recorder ?? [];
  recorder = prev;
  return seen;
}

/**
 * Runs `fn` as a scope named `scope` and releases every buffer allocated inside it except those
 * of the tensors `keep(result)` yields and those marked with `keep`; the tensors in `retire`,
 * made before it, are released too unless `keep(result)` yields them. With `handBack` (tidy), what
 * it made and keeps goes to the enclosing scope's recording, as the output of an op would;
 * trainStep and optimizer updates keep long-lived state (gradients, optimizer moments) instead. The
 * mechanism behind `tidy`, `trainStep` and optimizer updates.
 * @internal
 */
export function scoped<T>(fn: () => T, keep: (result: T) => Iterable<Tensor | Storage>, scope: string, retire: readonly Tensor[] = [], handBack = false): T {
  const prev = startRecording();
  let result: T;
  let made: Storage[];
  try {
    result = fn();
  } finally {
    made = stopRecording(prev);
  }
  if (made.length || retire.length) {
    const kept = new Set<Storage>();
    for (const k of keep(result)) kept.add('storage' in k ? k.storage : k);
    for (const st of made) {
      if (!kept.has(st)) release(st, scope);
      // what it returns, it made for the enclosing scope, as any op's output: that scope releases
      // it unless it too returns it (unrecorded, a nested tidy's result waited for the GC)
      else if (handBack && recorder) recorder.push(st);
    }
    // tensors from before the scope that it owns (trainStep: the gradients it replaced)
    for (const t of retire) if (!kept.has(t.storage)) release(t.storage, scope, true);
  }
  return result;
}

/** Every tensor inside a result: itself, array items, Map values and plain-object fields. */
function* tensorsIn(v: unknown, seen = new Set<unknown>()): Generator<Tensor> {
  if (v === null || typeof v !== 'object' || seen.has(v)) return;
  seen.add(v);
  if (isTensor(v)) {
    yield v;
    if (v.grad) yield v.grad;
    return;
  }
  if (Array.isArray(v)) for (const x of v) yield* tensorsIn(x, seen);
  else if (v instanceof Map) for (const x of v.values()) yield* tensorsIn(x, seen);
  else if (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null) for (const x of Object.values(v)) yield* tensorsIn(x, seen);
}
const isTensor = (v: object): v is Tensor => 'storage' in v && 'shape' in v && 'strides' in v;

/**
 * Runs `fn` and releases every tensor it created that is neither in its result (a tensor, or
 * arrays, Maps and plain objects of them, with their `.grad`s) nor marked with `keep`, as
 * TensorFlow.js's `tidy`. Tensors made inside gradient hooks and leaf `.grad`s written by a
 * backward pass inside are the user's and are kept. Using a released tensor throws an error that
 * names the scope.
 * @example
 * const loss = tidy('eval', () => crossEntropy(model.forward(x), y).item()); // no tensor survives
 * const logits = tidy(() => model.forward(x)); // only the result survives
 */
export function tidy<T>(fn: () => T): T;
export function tidy<T>(name: string, fn: () => T): T;
export function tidy<T>(nameOrFn: string | (() => T), maybeFn?: () => T): T {
  const [name, fn] = typeof nameOrFn === 'string' ? [`tidy('${nameOrFn}')`, maybeFn!] : ['tidy', nameOrFn];
  if (typeof fn !== 'function') throw new TypeError(`tidy: expected a function, got ${typeof fn}`);
  return scoped(fn, (r) => {
    if (r instanceof Promise) throw new TypeError(`${name}: the function returned a Promise; a scope cannot wait for async work (its tensors were released): await inside, then tidy the synchronous part`);
    return tensorsIn(r);
  }, name, [], true);
}

/**
 * Marks a tensor as kept: no enclosing scope (`tidy`, `trainStep`) releases its buffer; only
 * `dispose` or the garbage collector does. Returns it.
 * @example tidy(() => { cache = keep(x.exp()); });
 */
export function keep<T extends Tensor>(t: T): T {
  t.storage.kept = true;
  return t;
}

/**
 * Releases tensors now instead of waiting for the garbage collector: their buffers go back to
 * the pool or the backend, and any later use of them, or of views sharing their memory, throws
 * an error that names `dispose()`. Accepts a tensor, or arrays / plain objects of tensors.
 * @example const big = randn([4096, 4096]); …; dispose(big);
 */
export function dispose(tensors: unknown): void {
  for (const t of tensorsIn(tensors)) release(t.storage, 'dispose()', true);
}

/** What `memory()` reports. */
export interface MemoryInfo {
  /**
   * Buffers alive in backend-owned memory (wasm heap blocks of 4096+ elements, device buffers),
   * over all backends. Garbage-collected arrays (the js backend, small wasm tensors) cost nothing
   * when dropped and are not counted.
   */
  buffers: number;
  /** Bytes of those buffers. */
  bytes: number;
  /** Bytes kept in the reuse pool (released, not yet handed back to a backend). */
  pooledBytes: number;
}

/**
 * Live buffers and bytes, as TensorFlow.js's `tf.memory()`: what a training loop should hold flat
 * from one step to the next. Buffers the garbage collector has not yet collected count as live.
 * @example const before = memory().buffers; step(); console.log(memory().buffers - before);
 */
export function memory(): MemoryInfo {
  return { buffers: liveBuffers, bytes: liveBytes, pooledBytes };
}
