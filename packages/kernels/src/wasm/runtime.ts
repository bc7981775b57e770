/**
 * @file The wasm engine: feature detection (SIMD, relaxed SIMD, shared memory), the kernels'
 * scratch block in the backend's heap (heap.ts), compiling the generated kernel module once per flavour, and dispatching an
 * export serially or over the thread pool. Kernels themselves live in the family files.
 */
import type { KernelArg } from '../backend.js';
import { numel } from '../layout.js';
import type { TypedArray } from '../names.js';
import { ModuleBuilder, Simd, ValType } from './assembler.js';
import { HEAP_BASE, Heap, MAX_BYTES, MAX_PAGES, type WasmMemory } from './heap.js';
import { CONTROL_BYTES, ThreadPool } from './threads.js';
import { type WorkerPlatform, workerPlatform } from './workers.js';

interface WasmApi {
  Memory: new (d: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (m: object, imports: object) => { exports: Record<string, unknown> };
  validate(bytes: Uint8Array): boolean;
}
const WA = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;

/**
 * A new heap: a shared memory where this runtime has one (then tensors live in it), else a plain
 * one for the kernels' scratch only. Null without WebAssembly.
 */
export function newHeap(maxBytes?: number): Heap | null {
  return WA ? new Heap(WA.Memory, wasmFeatures().shared, 16, maxBytes) : null;
}

/** What the generated code may use; part of the module cache key. */
export interface Flavor {
  /** f32x4/f64x2.relaxed_madd instead of mul + add (fused on x64 with FMA3). */
  relaxed: boolean;
  shared: boolean;
}

/** A family's code generator: adds its exports to the module. */
export type Emitter = (mb: ModuleBuilder, flavor: Flavor) => void;

/** Argument block for the current job: i32/f64 words a kernel writes and its export reads. */
export const ARGS = CONTROL_BYTES;
export const ARGS_BYTES = HEAP_BASE - CONTROL_BYTES;
/** The most scratch (or tensor) bytes one block can hold. */
export const MAX_HEAP_BYTES = MAX_BYTES - HEAP_BASE;
/** Scratch the engine starts with; a kernel that needs more asks again after `regrowScratch`. */
const INITIAL_SCRATCH = 1 << 20;

function env(name: string): string | undefined {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
}

function probe(build: (mb: ModuleBuilder) => void): boolean {
  if (!WA) return false;
  try {
    const mb = new ModuleBuilder();
    build(mb);
    return WA.validate(mb.encode());
  } catch {
    return false;
  }
}

const v128Fn = (op: number) => (mb: ModuleBuilder) =>
  mb.func([ValType.v128, ValType.v128, ValType.v128], [ValType.v128], (c) => {
    c.get(0).get(1).get(2).simd(op);
  });

let features: { simd: boolean; relaxed: boolean; shared: boolean } | null = null;

/**
 * Detects what this runtime offers. On Node 20 relaxed SIMD sits behind a V8 flag that can be set
 * at run time; QGRAD_WASM_RELAXED=0 keeps it off (the plain-SIMD path).
 */
export function wasmFeatures(): { simd: boolean; relaxed: boolean; shared: boolean } {
  if (features) return features;
  const simd = probe(v128Fn(Simd.v128_bitselect));
  let relaxed = false;
  if (simd && env('QGRAD_WASM_RELAXED') !== '0') {
    relaxed = probe(v128Fn(Simd.f32x4_relaxed_madd));
    if (!relaxed) {
      const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
      const v8 = proc?.getBuiltinModule?.('node:v8') as { setFlagsFromString?: (f: string) => void } | undefined;
      try {
        v8?.setFlagsFromString?.('--experimental-wasm-relaxed-simd');
      } catch {
        // not Node, or the flag is gone: plain SIMD it is
      }
      relaxed = probe(v128Fn(Simd.f32x4_relaxed_madd));
    }
  }
  let shared = false;
  if (WA && typeof SharedArrayBuffer !== 'undefined') {
    try {
      shared = new WA.Memory({ initial: 1, maximum: 1, shared: true }).buffer instanceof SharedArrayBuffer;
    } catch {
      shared = false;
    }
  }
  features = { simd, relaxed, shared };
  return features;
}

/** Compiled modules per emitter list (by identity) and flavour. */
const moduleCache = new WeakMap<readonly Emitter[], Map<string, { module: object; names: string[] }>>();

function compile(emitters: readonly Emitter[], flavor: Flavor): { module: object; names: string[] } {
  const key = `${flavor.relaxed}/${flavor.shared}`;
  let cache = moduleCache.get(emitters);
  if (!cache) moduleCache.set(emitters, (cache = new Map()));
  let hit = cache.get(key);
  if (!hit) {
    const mb = new ModuleBuilder().importMemory(1, MAX_PAGES, flavor.shared);
    for (const emit of emitters) emit(mb, flavor);
    hit = { module: new WA!.Module(mb.encode()), names: mb.exportNames() };
    cache.set(key, hit);
  }
  return hit;
}

export interface EngineOptions {
  threads: number;
  relaxed: boolean;
  /** How long idle workers poll for the next job before sleeping (default: `defaultSpinMicros()`). */
  spinMicros?: number;
  /** Where workers come from, or why there are none (default `workerPlatform()`; tests pass stand-ins). */
  platform?: WorkerPlatform | string;
}

/** How many threads an engine runs kernels on, over which workers, or why on one. */
export interface ThreadInfo {
  threads: number;
  /** The workers' kind, or null on one thread. */
  workers: 'worker_threads' | 'Web Workers' | null;
  /** One line: 'wasm, 2 threads (Web Workers)', 'wasm, 1 thread: page not cross-origin isolated …'. */
  message: string;
}

/**
 * Owns one instance over a heap's memory and (when threads > 1) one pool, and the kernels' scratch
 * block in that heap. Scratch moves only between kernel calls: `reserve` never moves it, it
 * records the need and fails; the backend then calls `regrowScratch` and runs the kernel again.
 */
export class Engine {
  readonly flavor: Flavor;
  readonly heap: Heap;
  readonly #exports: Record<string, (...args: number[]) => number>;
  readonly #names: string[];
  #pool: ThreadPool | null = null;
  /** Why there is no pool. */
  #single = '';
  /** Jobs handed to the worker pool so far (the debug listing counts kernel calls that used it). */
  pooledJobs = 0;
  /** Bytes copied from arrays outside wasm memory into it, and out of it into such arrays. */
  stagedIn = 0;
  stagedOut = 0;
  #buffer: ArrayBufferLike | null = null;
  #f32!: Float32Array;
  #f64!: Float64Array;
  #i32!: Int32Array;
  #u8!: Uint8Array;
  #scratch = 0;
  #scratchBytes = 0;
  #wanted = 0;
  readonly #onGrow = () => this.#refresh();

  constructor(emitters: readonly Emitter[], options: EngineOptions, heap: Heap) {
    const f = wasmFeatures();
    if (!f.simd) throw new Error('WebAssembly SIMD is not available');
    const wantThreads = Math.max(1, Math.floor(options.threads));
    this.heap = heap;
    this.flavor = { relaxed: options.relaxed && f.relaxed, shared: heap.shared };
    const { module, names } = compile(emitters, this.flavor);
    this.#names = names;
    this.#exports = new WA!.Instance(module, { env: { memory: heap.memory } }).exports as never;
    this.#scratch = heap.allocBytes(INITIAL_SCRATCH, 'the kernels\' scratch');
    this.#scratchBytes = INITIAL_SCRATCH;
    heap.onGrow.add(this.#onGrow);
    this.#refresh();
    const platform = wantThreads > 1 ? (options.platform ?? workerPlatform()) : 'as requested (threads: 1)';
    if (typeof platform === 'string') this.#single = platform;
    else if (!this.flavor.shared) this.#single = 'no shared WebAssembly memory in this runtime';
    else {
      try {
        this.#pool = new ThreadPool(module, heap.memory, names, wantThreads, platform, options.spinMicros);
      } catch (e) {
        this.#single = `${platform.name} did not start (${(e as Error).message})`;
      }
    }
  }

  /** Threads kernels run on: the caller and the pool's workers, less any that failed to start. */
  get threads(): number {
    return this.#pool?.threads ?? 1;
  }

  /** The thread count, the workers' kind, and why there is one thread where there is. */
  threadInfo(): ThreadInfo {
    const pool = this.#pool;
    if (!pool || pool.threads === 1) {
      const why = pool ? `${pool.platform} did not start (${pool.failures[0]})` : this.#single;
      return { threads: 1, workers: null, message: `wasm, 1 thread: ${why}` };
    }
    const starting = pool.threads - 1 - pool.running;
    return { threads: pool.threads, workers: pool.platform, message: `wasm, ${pool.threads} threads (${pool.platform}${starting > 0 ? `, ${starting} starting` : ''})` };
  }

  /** Settles once the pool's workers all run (a browser starts them after the page's task yields). */
  async started(): Promise<ThreadInfo> {
    await this.#pool?.started;
    return this.threadInfo();
  }

  #refresh(): void {
    const b = this.heap.buffer;
    if (b === this.#buffer) return;
    this.#buffer = b;
    this.#f32 = new Float32Array(b);
    this.#f64 = new Float64Array(b);
    this.#i32 = new Int32Array(b);
    this.#u8 = new Uint8Array(b);
  }

  /** Start of the scratch block: kernels lay out their temporaries from here. */
  get scratch(): number {
    return this.#scratch;
  }

  /**
   * True when scratch + bytes is this call's to use. Never moves the scratch block: when it is too
   * small, records the need and returns false (the kernel declines; see `regrowScratch`).
   */
  reserve(bytes: number): boolean {
    if (bytes <= this.#scratchBytes) return true;
    if (bytes <= MAX_HEAP_BYTES) this.#wanted = Math.max(this.#wanted, bytes);
    return false;
  }

  /**
   * Between kernel calls: replaces the scratch block by one large enough for the last refused
   * `reserve`; false when none was refused or the memory cannot hold it.
   */
  regrowScratch(): boolean {
    const want = this.#wanted;
    this.#wanted = 0;
    if (want <= this.#scratchBytes) return false;
    this.heap.freeBytes(this.#scratch);
    for (const bytes of [Math.max(want, Math.min(2 * this.#scratchBytes, MAX_HEAP_BYTES)), want, this.#scratchBytes]) {
      try {
        this.#scratch = this.heap.allocBytes(bytes, 'kernel scratch');
        this.#scratchBytes = bytes;
        return bytes >= want;
      } catch {
        // try the next smaller size
      }
    }
    throw new Error('wasm backend: lost its scratch block');
  }

  /**
   * Address of element 0 of a view (its `offset`) when its buffer lives in this memory, else -1.
   */
  addressOf(x: Pick<KernelArg<TypedArray>, 'data' | 'offset'>): number {
    return this.heap.resident(x.data) ? x.data.byteOffset + x.offset * x.data.BYTES_PER_ELEMENT : -1;
  }

  /**
   * Address of element 0 of an input view to read in place: resident in this memory and not
   * overlapping the output `out` (a kernel that read what it had already written would go wrong),
   * else -1 (the caller stages it).
   */
  inPlace(x: KernelArg<TypedArray>, out?: KernelArg<TypedArray>): number {
    const p = this.addressOf(x);
    if (p < 0 || !out) return p;
    const o = this.addressOf(out);
    if (o < 0) return p;
    const e = x.data.BYTES_PER_ELEMENT;
    const [lo, hi] = span(x);
    const oEnd = o + numel(out.shape) * out.data.BYTES_PER_ELEMENT;
    return p + (lo - x.offset) * e < oEnd && p + (hi - x.offset) * e > o ? -1 : p;
  }

  /** Copies elements [lo, hi) of a foreign array into wasm memory at byte address `at` (counted as staged). */
  stageIn(data: TypedArray, lo: number, hi: number, view: TypedArray, at: number): void {
    view.set(data.subarray(lo, hi) as never, at / view.BYTES_PER_ELEMENT);
    if (!this.heap.resident(data)) this.stagedIn += (hi - lo) * data.BYTES_PER_ELEMENT;
  }

  /** Copies n elements at byte address `at` into `out` (at its offset), counting bytes leaving wasm memory. */
  stageOut(out: KernelArg<TypedArray>, view: TypedArray, at: number, n: number): void {
    const i = at / view.BYTES_PER_ELEMENT;
    out.data.set(view.subarray(i, i + n) as never, out.offset);
    if (!this.heap.resident(out.data)) this.stagedOut += n * out.data.BYTES_PER_ELEMENT;
  }

  /** Views of the whole memory, re-made after the memory grows. */
  get f32(): Float32Array {
    this.#refresh();
    return this.#f32;
  }
  get f64(): Float64Array {
    this.#refresh();
    return this.#f64;
  }
  get i32(): Int32Array {
    this.#refresh();
    return this.#i32;
  }
  get u8(): Uint8Array {
    this.#refresh();
    return this.#u8;
  }

  /** Calls an export once on this thread. */
  call(name: string, ...args: number[]): number {
    return this.#exports[name]!(...args);
  }

  /**
   * Runs tasks 0..n-1 of a task export `name(arg, t)`, over the pool when there is one and
   * `threaded` (waking workers costs tens of µs: small jobs run faster on one thread). `then` is a
   * second phase whose tasks start once every task of the first is done, in the same dispatch
   * (packing, then the product that reads the packed panels).
   */
  parallel(name: string, arg: number, n: number, threaded = true, then?: { name: string; arg: number; n: number }): void {
    const fn = this.#exports[name]!;
    const fn2 = then ? this.#exports[then.name]! : null;
    if (!this.#pool || n + (then?.n ?? 0) < 2 || !threaded) {
      for (let t = 0; t < n; t++) fn(arg, t);
      if (then) for (let t = 0; t < then.n; t++) fn2!(then.arg, t);
      return;
    }
    this.pooledJobs++;
    const second = then && { fn: this.#names.indexOf(then.name), arg: then.arg, n: then.n, local: (t: number) => fn2!(then.arg, t) };
    this.#pool.run(this.#names.indexOf(name), arg, n, (t) => fn(arg, t), second);
  }

  dispose(): void {
    this.#pool?.dispose();
    this.#pool = null;
    this.heap.onGrow.delete(this.#onGrow);
    if (this.#scratchBytes) this.heap.freeBytes(this.#scratch);
    this.#scratchBytes = 0;
  }
}

/** [lo, hi) of the buffer offsets a strided view touches: what a kernel copies into wasm memory. */
export function span(x: Pick<KernelArg, 'shape' | 'strides' | 'offset'>): [number, number] {
  let lo = x.offset;
  let hi = x.offset;
  for (let d = 0; d < x.shape.length; d++) {
    const s = (x.shape[d]! - 1) * x.strides[d]!;
    if (s < 0) lo += s;
    else hi += s;
  }
  return [lo, hi + 1];
}
