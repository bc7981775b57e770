/**
 * @file The gpu backend's device: loading gpu.js (an optional dependency), choosing a mode
 * (QGRAD_GPU_MODE, else auto), the buffer type tensors live in (`GpuBuffer`: a device texture
 * and/or a host copy, kept coherent), uploads, downloads and the compiled-kernel cache. Kernels
 * themselves live in the family files; nothing here knows a kernel name. In webgpu mode gpu.js
 * kernels return Promises: the device queues its calls in program order (`PendingTexture`), so
 * kernels still chain synchronously and only `read` waits.
 */
import type { DType, TypedArray } from '../names.js';
import { ARRAY_TYPES } from '../names.js';
import { installNodeWebGpu } from './dawn.js';

// ---------------------------------------------------------------- the parts of gpu.js we use
/** A device-resident result of a pipeline kernel (gpu.js `Texture`). */
export interface Texture {
  toArray(): Float32Array | ArrayLike<number>;
  delete(): void;
}
interface KernelFn {
  (...args: unknown[]): Texture;
  setOutput(output: number[]): KernelFn;
  destroy(removeCanvasReferences?: boolean): void;
}
interface GpuInstance {
  createKernel(source: string, settings: Record<string, unknown>): KernelFn;
  destroy(): void;
}
interface GpuModule {
  GPU: { new (settings: { mode: string }): GpuInstance; isHeadlessGLSupported: boolean; isWebGL2Supported: boolean; isWebGPUSupported: boolean };
  /** The one GPUDevice every webgpu-mode instance shares (absent from the browser bundle). */
  WebGPUContext?: { destroy(): Promise<void> };
}
/** A webgpu pipeline kernel's result (gpu.js `WebGPUBufferResult`): its read-back is a Promise. */
interface BufferHandle {
  toArray(): Promise<Float32Array | ArrayLike<number>>;
  delete(): void;
}

/**
 * A webgpu kernel's result before and after gpu.js hands it over: the handle arrives through the
 * device's queue (a kernel compiles asynchronously on its first call), so every use and the
 * deletion are queued behind it. WebGPU has no synchronous read-back: `toArray` throws, `read` waits.
 */
export class PendingTexture implements Texture {
  constructor(readonly handle: Promise<BufferHandle>, readonly device: Device) {
    handle.catch(() => {}); // reported by the read that needs it (Device.failure)
  }
  toArray(): never {
    throw new Error('gpu backend (webgpu): WebGPU reads back only asynchronously; use `await backend.read(…)` (a tensor\'s `data()`), not readSync (`dataSync()`, `item()`)');
  }
  read(): Promise<ArrayLike<number>> {
    return this.device.queued(async () => (await this.handle).toArray());
  }
  delete(): void {
    void this.device.queued(async () => (await this.handle).delete()).catch(() => {});
  }
}

/** Modes the gpu backend can run in; auto tries them in this order. */
export type GpuMode = 'webgpu' | 'webgl2' | 'headlessgl' | 'webgl';
const MODES: readonly GpuMode[] = ['webgpu', 'webgl2', 'headlessgl', 'webgl'];

/** What mode selection found: the mode in use (null: none works) and why each other one was passed over. */
export interface GpuInfo {
  mode: GpuMode | null;
  /** Every mode tried, in order, with the reason it was not taken (null for the one taken). */
  tried: { mode: GpuMode; reason: string | null }[];
  /** One line for users: what runs, or why nothing does. */
  message: string;
}

const env = (name: string): string | undefined => (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];

function loadGpuJs(): GpuModule | string {
  const g = globalThis as unknown as { GPU?: GpuModule['GPU']; process?: { getBuiltinModule?: (m: string) => unknown } };
  if (g.GPU) return { GPU: g.GPU }; // browser: gpu.js loaded by a script tag
  const mod = g.process?.getBuiltinModule?.('node:module') as { createRequire(url: string): (id: string) => unknown } | undefined;
  if (!mod) return 'gpu.js is not loaded (in a browser, load gpu-browser.js first)';
  try {
    return mod.createRequire(import.meta.url)('gpu.js') as GpuModule;
  } catch (e) {
    return `gpu.js could not be loaded (${(e as Error).message.split('\n')[0]}); it is an optional dependency: npm install gpu.js@2.24.1`;
  }
}

/** A compiled kernel and how many of its output textures are still alive. */
interface Compiled {
  fn: KernelFn;
  live: number;
}

/** A GPU context in one mode, with the kernel cache and the upload kernel. */
export class Device {
  readonly #gpu: GpuInstance;
  readonly #kernels = new Map<string, Compiled>();
  /** Which kernel made each live texture: a kernel is destroyed only once none of its textures lives. */
  readonly #maker = new WeakMap<Texture, Compiled>();
  /** Textures alive (made by kernels here and not yet deleted), and their elements. */
  textures = 0;
  textureElements = 0;
  /** Compiled kernels kept before the least recently used one without live outputs is destroyed. */
  capacity = 1000;

  /** webgpu: the end of the chain of queued kernel calls, read-backs and deletions (program order). */
  #queue: Promise<unknown> = Promise.resolve();
  /** webgpu: the first queued call that failed (a kernel that did not compile); `settle` reports it. */
  failure: Error | null = null;

  constructor(
    gpu: GpuInstance,
    readonly mode: GpuMode,
    /** webgpu: destroys the shared GPUDevice (Dawn keeps Node's event loop alive while one exists). */
    readonly releaseShared?: () => Promise<void>,
  ) {
    this.#gpu = gpu;
    if (mode === 'webgpu') openWebGpu++;
  }

  /**
   * Runs `f` after everything queued before it (webgpu). gpu.js submits a built kernel's work
   * synchronously, so queue order is submission order: a result exists before a later kernel binds
   * it, and a buffer is deleted only after the kernels that read it were submitted.
   */
  queued<T>(f: () => Promise<T>): Promise<T> {
    const p = this.#queue.then(f);
    this.#queue = p.catch((e: unknown) => {
      this.failure ??= e instanceof Error ? e : new Error(String(e));
    });
    return p;
  }

  /** Waits for everything queued so far (webgpu); rejects with the first failure. */
  async settle(): Promise<void> {
    await this.#queue;
    if (this.failure) throw this.failure;
  }

  /** Calls a compiled kernel: at once, or in webgpu mode through the queue, its texture arguments' handles awaited. */
  #call(k: Compiled, args: readonly unknown[]): Texture {
    if (this.mode !== 'webgpu') return k.fn(...args);
    // host arrays are copied now: the caller may change them before the queue gets to this call
    const now = args.map((a) => (a instanceof Float32Array ? a.slice() : a));
    const handle = this.queued(async () => {
      const resolved = await Promise.all(now.map((a) => (a instanceof PendingTexture ? a.handle : a)));
      return (await (k.fn(...resolved) as unknown as Promise<BufferHandle>)) as BufferHandle;
    });
    return new PendingTexture(handle, this);
  }

  /** Compiled kernels held now (more than `capacity` while every older one still has live outputs). */
  get compiled(): number {
    return this.#kernels.size;
  }

  /**
   * The kernel for `source` (a `function (…) { … }` string) over `n` outputs reading textures of
   * `sizes` elements, compiled once and cached: a pipeline kernel with a fresh output texture per
   * call (`immutable`: gpu.js would otherwise reuse, i.e. overwrite, the previous result), single
   * precision. Sizes are fixed per kernel: gpu.js 2.24.1's dynamicOutput/dynamicArguments read a
   * resized texture with the old layout (seen on headless-gl: wrong values from element 4 on).
   */
  #kernel(source: string, n: number, sizes: readonly number[]): Compiled {
    const key = `${n}|${sizes.join(',')}|${source}`;
    let k = this.#kernels.get(key);
    if (!k) {
      if (this.#kernels.size >= this.capacity) this.#evict();
      k = { fn: this.#gpu.createKernel(source, { output: [n], pipeline: true, immutable: true, precision: 'single', loopMaxIterations: 1 << 24, tactic: 'precision' }), live: 0 };
      this.#kernels.set(key, k);
    } else {
      // most recently used last, so eviction drops the oldest
      this.#kernels.delete(key);
      this.#kernels.set(key, k);
    }
    return k;
  }

  #made(k: Compiled, t: Texture, n: number): Texture {
    k.live++;
    this.#maker.set(t, k);
    this.textures++;
    this.textureElements += n;
    return t;
  }

  /** Runs a cached kernel over `n` outputs and counts the texture it returns. */
  run(source: string, n: number, args: readonly unknown[], sizes: readonly number[]): Texture {
    const k = this.#kernel(source, n, sizes);
    return this.#made(k, this.#call(k, args), n);
  }

  /** Puts host values on the device (gpu.js has no upload call: an identity kernel). */
  upload(values: Float32Array): Texture {
    const k = this.#kernel('function (a) { return a[this.thread.x]; }', values.length, [-1]);
    return this.#made(k, this.#call(k, [values]), values.length);
  }

  release(t: Texture, n: number): void {
    t.delete();
    const k = this.#maker.get(t);
    if (k) k.live--;
    this.#maker.delete(t);
    this.textures--;
    this.textureElements -= n;
  }

  /**
   * Destroys the least recently used kernel none of whose outputs is alive. gpu.js's
   * `Kernel.destroy` deletes every texture the kernel created, live or not, and a texture reads
   * back through its kernel's context: destroying a kernel whose output a tensor still holds
   * left that tensor unreadable (or, as an input, reading a deleted texture). When every kernel
   * has live outputs, the cache grows past `capacity` instead.
   */
  #evict(): void {
    for (const [key, k] of this.#kernels) {
      if (k.live > 0) continue;
      this.#kernels.delete(key);
      this.#destroy(k);
      return;
    }
  }

  /** Destroys a compiled kernel (webgpu: after the calls queued before). */
  #destroy(k: Compiled): void {
    if (this.mode !== 'webgpu') return k.fn.destroy();
    void this.queued(async () => k.fn.destroy()).catch(() => {});
  }

  /** Destroys the kernels; resolves once webgpu's queue has drained and (the last device) the shared GPUDevice is gone. */
  dispose(): Promise<void> {
    for (const k of this.#kernels.values()) this.#destroy(k);
    this.#kernels.clear();
    if (this.mode !== 'webgpu' || this.#disposed) return Promise.resolve();
    this.#disposed = true;
    // the last webgpu device gone: the shared GPUDevice goes too (a later one acquires a new one),
    // so a Node process that disposed its backends can exit
    const release = this.releaseShared;
    return this.queued(async () => {
      if (--openWebGpu === 0 && release) await release();
    }).catch(() => {});
  }
  #disposed = false;
}

/** webgpu-mode devices not yet disposed: they share one GPUDevice. */
let openWebGpu = 0;

/** Checks a mode end to end: upload, one kernel, exact readback. Returns a reason, or null when it works. */
function probe(device: Device): string | null {
  const x = Float32Array.from([1.5, -2.25, 3e-8, 65537]);
  const t = device.upload(x);
  const y = device.run('function (a) { return a[this.thread.x] * 2.0; }', 4, [t], [4]);
  const got = Array.from(y.toArray());
  device.release(t, 4);
  device.release(y, 4);
  return got.every((v, i) => v === x[i]! * 2) ? null : `a probe kernel read back [${got.join(', ')}] instead of [${Array.from(x, (v) => v * 2).join(', ')}]`;
}

/** How a device opens: a mode forced by the caller, and why auto selection passed webgpu over. */
export interface DeviceOptions {
  /** Only this mode (QGRAD_GPU_MODE, the same for the whole process, where not given). */
  mode?: GpuMode;
  /** Why webgpu was not taken in a worker (index.ts's openGpuBackend): auto passes it over, and info says why. */
  webgpuPassed?: string;
}

/**
 * Chooses the mode: `mode` or QGRAD_GPU_MODE when set (only that one), else webgl2 → headlessgl →
 * webgl, the first that loads and passes a probe kernel. webgpu in this thread only when set: it
 * reads back asynchronously only, and its probe is the first read (index.ts runs it in a worker
 * for auto selection; `webgpuPassed` says why that did not happen).
 */
export function openDevice({ mode: asked, webgpuPassed }: DeviceOptions = {}): { device: Device | null; info: GpuInfo } {
  const forced = asked ?? env('QGRAD_GPU_MODE');
  if (forced && forced !== 'auto' && !MODES.includes(forced as GpuMode)) {
    return { device: null, info: { mode: null, tried: [], message: `QGRAD_GPU_MODE='${forced}' is not a gpu mode (use auto, ${MODES.join(', ')})` } };
  }
  const order = forced && forced !== 'auto' ? [forced as GpuMode] : MODES;
  const lib = loadGpuJs();
  const tried: GpuInfo['tried'] = [];
  if (typeof lib === 'string') {
    for (const mode of order) tried.push({ mode, reason: lib });
    return { device: null, info: { mode: null, tried, message: `no gpu mode works: ${lib}` } };
  }
  for (const mode of order) {
    const reason = mode === 'webgpu' && webgpuPassed ? webgpuPassed : unsupported(lib, mode, order.length === 1);
    if (reason) {
      tried.push({ mode, reason });
      continue;
    }
    let device: Device | null = null;
    try {
      const shared = lib.WebGPUContext;
      device = new Device(new lib.GPU({ mode }), mode, shared && (() => shared.destroy()));
      // webgpu reads back only asynchronously: its first read reports what a probe would
      const failed = mode === 'webgpu' ? null : probe(device);
      if (failed) throw new Error(failed);
      tried.push({ mode, reason: null });
      const note = mode === 'webgpu' ? ' (read-back asynchronous only: read()/data(), not readSync()/item())' : '';
      const passed = webgpuPassed && mode !== 'webgpu' ? `; webgpu not chosen: ${webgpuPassed}` : '';
      return { device, info: { mode, tried, message: `gpu backend: gpu.js in ${mode} mode${note}${passed}` } };
    } catch (e) {
      device?.dispose();
      tried.push({ mode, reason: (e as Error).message.split('\n')[0]! });
    }
  }
  return { device: null, info: { mode: null, tried, message: `no gpu mode works (${tried.map((t) => `${t.mode}: ${t.reason}`).join('; ')})` } };
}

function unsupported(lib: GpuModule, mode: GpuMode, forced: boolean): string | null {
  switch (mode) {
    case 'webgpu':
      // auto passes it over in this thread: code that reads synchronously (item(), dataSync()) would then throw
      if (!forced) return 'webgpu has no synchronous read-back (item(), dataSync()) in this thread; it is used only when asked for: QGRAD_GPU_MODE=webgpu';
      if (lib.GPU.isWebGPUSupported) return null;
      return installNodeWebGpu() ?? (lib.GPU.isWebGPUSupported ? null : 'no WebGPU (navigator.gpu) here');
    case 'webgl2':
      return lib.GPU.isWebGL2Supported ? null : 'no WebGL2 context (not a browser)';
    case 'headlessgl':
      return lib.GPU.isHeadlessGLSupported ? null : 'headless-gl (the optional `gl` package) is not built or has no display (run under xvfb-run -a)';
    case 'webgl':
      return typeof (globalThis as { document?: unknown }).document !== 'undefined' ? null : 'no WebGL context (not a browser)';
    default: {
      const never: never = mode;
      return never;
    }
  }
}

// ---------------------------------------------------------------- buffers
/**
 * A tensor's storage on the gpu backend. The values live on the device (`texture`), on the host
 * (`host`, for float64, for values written by the user or by a js-fallback kernel), or both (a
 * device result read back keeps its host copy until a kernel writes the buffer again).
 */
export class GpuBuffer {
  texture: Texture | null = null;
  /** Valid host copy, or null. */
  host: TypedArray | null;
  freed = false;
  constructor(readonly dtype: DType, readonly size: number) {
    this.host = new ARRAY_TYPES[dtype](size);
  }
}

/** dtypes whose values a float32 texture holds exactly enough for kernels (int32 up to 2^24). */
export const DEVICE_DTYPES: readonly DType[] = ['float32', 'int32', 'int8', 'uint8'];

/** The buffer's texture, uploading its host copy first when the device has none. */
export function deviceTexture(device: Device, b: GpuBuffer): Texture {
  if (b.freed) throw new Error('gpu backend: a kernel read a tensor whose storage was already freed');
  if (!b.texture) {
    const h = b.host!;
    b.texture = device.upload(h instanceof Float32Array ? h : Float32Array.from(h as ArrayLike<number>));
  }
  return b.texture;
}

/** The buffer's values on the host, read back (synchronously) when only the device has them. */
export function hostValues(b: GpuBuffer): TypedArray {
  if (b.freed) throw new Error('gpu backend: read of a tensor whose storage was already freed (its texture is deleted)');
  if (!b.host && b.texture instanceof PendingTexture) b.texture.toArray();
  if (!b.host) {
    let values: ArrayLike<number>;
    try {
      values = b.texture!.toArray();
    } catch (e) {
      throw new Error(`gpu backend: reading a ${b.dtype} tensor of ${b.size} elements back from the device failed (${(e as Error).message}); was its texture deleted elsewhere?`);
    }
    const out = new ARRAY_TYPES[b.dtype](b.size);
    for (let i = 0; i < b.size; i++) out[i] = values[i]!;
    b.host = out;
  }
  return b.host;
}

/** The buffer's values on the host, waiting for the device where only it has them (every mode; webgpu's only read-back). */
export async function hostValuesAsync(b: GpuBuffer): Promise<TypedArray> {
  if (b.freed) throw new Error('gpu backend: read of a tensor whose storage was already freed (its texture is deleted)');
  const t = b.texture;
  if (b.host || !(t instanceof PendingTexture)) return hostValues(b);
  const values = await t.read();
  const out = new ARRAY_TYPES[b.dtype](b.size);
  for (let i = 0; i < b.size; i++) out[i] = values[i]!;
  // a kernel may have replaced the texture meanwhile: keep the copy only while it is current
  if (b.texture === t && !b.host) b.host = out;
  return out;
}

/** A kernel wrote the whole buffer on the device: the new texture replaces the old one and the host copy. */
export function setTexture(device: Device, b: GpuBuffer, t: Texture): void {
  if (b.texture) device.release(b.texture, b.size);
  b.texture = t;
  b.host = null;
}

/** Something wrote the host copy (a js kernel, `write`): the device copy is stale. */
export function hostWritten(device: Device | null, b: GpuBuffer): void {
  if (b.texture && device) device.release(b.texture, b.size);
  b.texture = null;
}
