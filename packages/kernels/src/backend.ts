/**
 * @file The Backend interface every compute backend implements (js, wasm, gpu), and the
 * strided view (`KernelArg`) kernels receive. Backends know nothing of autograd.
 */
import type { DType, KernelName, KernelParams, TypedArray } from './names.js';

/**
 * A strided view of a backend buffer. `data` is whatever the backend allocated: a typed array
 * on CPU backends, a device handle on the gpu backend.
 */
export interface KernelArg<D = unknown> {
  data: D;
  dtype: DType;
  shape: readonly number[];
  strides: readonly number[];
  offset: number;
}

/** The signature of one kernel in a backend's table. */
export type Kernel<K extends KernelName, D = unknown> = (
  inputs: readonly KernelArg<D>[],
  out: KernelArg<D>,
  params: KernelParams[K],
) => void;

/** A complete table (the js oracle must be one). */
export type KernelTable<D = unknown> = { [K in KernelName]: Kernel<K, D> };

/**
 * A compute backend. `D` is its buffer type. The output of `run` is always a buffer the caller
 * allocated with `alloc`; inputs may be any strided view of any buffer of this backend.
 */
export interface Backend<D = unknown> {
  readonly name: string;
  /** dtypes this backend can store. */
  readonly dtypes: readonly DType[];
  /**
   * Buffers are plain typed arrays in this process's memory (js, wasm): such backends can take
   * each other's tensors as inputs without a transfer.
   */
  readonly hostMemory?: boolean;
  /**
   * A zeroed buffer of `size` elements, owned by the backend (wasm: a view of its memory, valid
   * until `free`). Throws a RangeError naming the request and the limit when it cannot fit.
   */
  alloc(dtype: DType, size: number): D;
  /**
   * Every `alloc` buffer is an ordinary garbage-collected array (js): nothing is lost when `free`
   * is never called, so core need not track it for release.
   */
  readonly collected?: boolean;
  /**
   * A garbage-collected buffer for a small tensor, on a backend whose `alloc` buffers must be
   * freed (wasm: a plain typed array, staged per kernel): tracking a backend-owned buffer for
   * release costs more than a small op. `free` is never called on it.
   */
  allocCollected?(dtype: DType, size: number): D;
  /** Copies `values` into the start of `data`. */
  write(data: D, dtype: DType, values: TypedArray): void;
  /**
   * Returns the first `size` elements; on CPU backends this may be the buffer itself (wasm: a view
   * of its memory), so a caller handing values to users copies them first.
   */
  readSync(data: D, dtype: DType, size: number): TypedArray;
  read(data: D, dtype: DType, size: number): Promise<TypedArray>;
  /**
   * Releases a buffer `alloc` returned; called exactly once per buffer, which is not touched
   * afterwards. The wasm backend returns its block to its allocator (a second free, or a buffer
   * it did not allocate, is an error); js only updates its counts.
   */
  free(data: D): void;
  /** Bytes in buffers allocated and not yet freed, and how many buffers. */
  memory(): { bytes: number; buffers: number };
  run<K extends KernelName>(kernel: K, inputs: readonly KernelArg<D>[], out: KernelArg<D>, params: KernelParams[K]): void;
  /** Names the backend that ran each kernel when they differ (fallbacks), for debugging. */
  ranOn?(kernel: KernelName, dtype: DType): string;
  /** What ran where so far (backends built on the js fallback, see fallback.ts). */
  stats?(): KernelStat[];
  sync(): Promise<void>;
  dispose(): void;
}

/** How many calls of one kernel and dtype ran natively (how many of those on a worker pool) and on js. */
export interface KernelStat {
  kernel: KernelName;
  dtype: DType;
  native: number;
  js: number;
  pooled: number;
}

/**
 * Thrown when no backend can run a kernel for the given dtype.
 * @example try { runModel(); } catch (e) { if (e instanceof UnsupportedKernelError) console.error(e.message); } // names kernel, backend, dtype, shapes
 */
export class UnsupportedKernelError extends Error {
  constructor(kernel: KernelName, backend: string, dtype: DType, shapes: readonly (readonly number[])[]) {
    super(`kernel '${kernel}' is not supported on backend '${backend}' for ${dtype} (shapes ${shapes.map((s) => `[${s.join(', ')}]`).join(', ')})`);
    this.name = 'UnsupportedKernelError';
  }
}

/** Options every backend factory accepts (each ignores what does not apply to it). */
export interface BackendOptions {
  /** Threads including the caller (default: the backend's own choice). */
  threads?: number;
  /** Run every kernel natively whatever its size, ignoring the small-size cut-overs to js (tests). */
  eager?: boolean;
}

/** One line of the backend list: a name, whether this runtime can run it, and its factories. */
export interface BackendEntry<N extends string = string> {
  readonly name: N;
  available(): boolean;
  /** The process-wide instance (what `setBackend(name)` selects). */
  instance(): Backend;
  /** A separate instance with its own options and counters (tests, benches). */
  create(options?: BackendOptions): Backend;
}
