/**
 * @file WebGPU with synchronous read-back, in Node: the gpu backend in webgpu mode runs in a worker
 * thread (remote-worker.ts) and this side forwards every call to it. WebGPU itself reads back only
 * through Promises, which the thread that wants the values cannot await inside `item()` or
 * `dataSync()`; a worker can, while this thread blocks on `Atomics.wait` until the values are in a
 * SharedArrayBuffer. So code that reads synchronously (scale inits, the trainer's loss) runs on
 * WebGPU unchanged, and auto selection can choose it. Calls go in order; those that answer
 * (kernel runs, for their errors, and reads) wait for the worker, the rest are posted and go on.
 * Browsers' main threads may not block, so this is Node only.
 */
import type { KernelArg } from '../backend.js';
import type { DType, KernelName, KernelParams, TypedArray } from '../names.js';
import { ARRAY_TYPES, DTYPES } from '../names.js';
import type { GpuInfo } from './device.js';
import type { GpuBackendLike } from './index.js';

/** A tensor's storage on the remote gpu backend: the id of the worker's device buffer. */
export class RemoteBuffer {
  freed = false;
  constructor(readonly id: number, readonly dtype: DType, readonly size: number) {}
}

/** What crosses to the worker for a kernel operand: a buffer id, or a host array's values. */
export type WireData = { id: number } | TypedArray;
/** One request to the worker; `reply` is where an answering request's result goes. */
export interface Request {
  op: 'open' | 'alloc' | 'free' | 'write' | 'run' | 'read' | 'deviceMemory' | 'stats' | 'ranOn' | 'sync' | 'dispose' | 'shutdown';
  /** Which of the worker's backends (one per openRemoteWebGpu). */
  backend: number;
  id?: number;
  dtype?: DType;
  size?: number;
  values?: TypedArray;
  kernel?: KernelName;
  inputs?: KernelArg<WireData>[];
  out?: KernelArg<WireData>;
  params?: unknown;
  reply?: SharedArrayBuffer;
}

/** Reply header (int32 words): state (0 pending, 1 done), kind (0 value, 1 Error, 2 RangeError, 3 TypeError), payload bytes. */
export const REPLY_HEADER = 12;
/** Payload room of a reply that carries text or JSON (longer error messages are cut). */
const TEXT_BYTES = 1 << 16;
/** How long the worker may take to open WebGPU (Dawn, adapter, a probe kernel). */
const START_MS = 120_000;
/** How long one call may wait: a kernel on a software adapter can take seconds, never this long. */
const CALL_MS = 600_000;

type NodeHost = { process?: { env: Record<string, string | undefined>; getBuiltinModule?: (m: string) => unknown } };
/** The worker's first script (CommonJS, eval'd): loads remote-worker, or writes why it could not into the boot word. */
const BOOT = `const { workerData: d } = require('node:worker_threads');
(async () => {
  try {
    if (d.tsx) (await import(require('node:url').pathToFileURL(d.tsx).href)).register();
    await import(d.url);
  } catch (e) {
    const head = new Int32Array(d.boot, 0, 3);
    const text = new TextEncoder().encode(String(e && e.stack || e)).subarray(0, d.boot.byteLength - ${REPLY_HEADER});
    new Uint8Array(d.boot, ${REPLY_HEADER}, text.length).set(text);
    head[2] = text.length;
    Atomics.store(head, 0, 2);
    Atomics.notify(head, 0);
  }
})();`;

interface WorkerLike {
  postMessage(m: unknown): void;
  unref(): void;
  terminate(): Promise<number>;
  on(event: 'error' | 'exit', f: (e: unknown) => void): void;
}

/** The one worker every remote backend of this process talks to: several Dawn instances in one process crash it. */
interface Channel {
  /** Posts a request and, with `replyBytes`, blocks until the worker has answered into the reply buffer. */
  call(r: Request, replyBytes?: number, timeout?: number): Uint8Array | null;
  json(r: Request, timeout?: number): unknown;
}
let channel: Channel | string | null = null;
let nextBackend = 0;

function startWorker(): Channel | string {
  const host = globalThis as unknown as NodeHost;
  const threads = host.process?.getBuiltinModule?.('node:worker_threads') as { Worker: new (source: string, o: object) => WorkerLike } | undefined;
  if (!threads || !host.process) return 'WebGPU with synchronous reads needs Node worker threads';
  // EGL reads the process environment, which a worker's process.env does not change (dawn.ts)
  host.process.env.EGL_PLATFORM ??= 'surfaceless';
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  const boot = new SharedArrayBuffer(REPLY_HEADER + TEXT_BYTES);
  let worker: WorkerLike;
  try {
    // from source (tsx, vitest) the worker registers the TypeScript loader first; the built package needs none
    const tsx = ext === '.ts' ? (host.process.getBuiltinModule!('node:module') as { createRequire(u: string): { resolve(id: string): string } }).createRequire(import.meta.url).resolve('tsx/esm/api') : null;
    const url = new URL(`./remote-worker${ext}`, import.meta.url).href;
    worker = new threads.Worker(BOOT, { eval: true, execArgv: [], workerData: { url, tsx, boot }, env: { ...host.process.env, QGRAD_GPU_MODE: 'webgpu' } });
  } catch (e) {
    return `the WebGPU worker did not start (${(e as Error).message.split('\n')[0]})`;
  }
  // a worker's 'error' event needs this thread's event loop, which a blocked call does not run:
  // the boot word says whether the worker's module loaded
  const bootHead = new Int32Array(boot, 0, 3);
  if (Atomics.wait(bootHead, 0, 0, START_MS) === 'timed-out' || bootHead[0] !== 1) {
    void worker.terminate();
    const why = bootHead[0] === 2 ? new TextDecoder().decode(new Uint8Array(boot, REPLY_HEADER, bootHead[2]!).slice()) : `no answer within ${START_MS / 1000} s`;
    return `the WebGPU worker did not load (${why.split('\n')[0]})`;
  }
  worker.unref(); // an idle worker never keeps Node running
  let crashed: string | null = null;
  worker.on('error', (e) => (crashed = `the WebGPU worker failed: ${(e as Error).message?.split('\n')[0] ?? String(e)}`));
  worker.on('exit', () => (crashed ??= 'the WebGPU worker exited'));

  // one reply buffer for every call (they never overlap: the calling thread waits for each), grown on demand
  let reply = new SharedArrayBuffer(REPLY_HEADER + TEXT_BYTES);
  const call = (r: Request, replyBytes?: number, timeout = CALL_MS): Uint8Array | null => {
    if (crashed) throw new Error(`gpu backend (webgpu): ${crashed}`);
    if (replyBytes === undefined) {
      worker.postMessage(r);
      return null;
    }
    if (reply.byteLength < REPLY_HEADER + replyBytes) reply = new SharedArrayBuffer(REPLY_HEADER + Math.max(replyBytes, 2 * reply.byteLength));
    const head = new Int32Array(reply, 0, 3);
    head.fill(0);
    worker.postMessage({ ...r, reply });
    if (Atomics.wait(head, 0, 0, timeout) === 'timed-out') throw new Error(`gpu backend (webgpu): the worker did not answer '${r.op}'${r.kernel ? ` (${r.kernel})` : ''} within ${timeout / 1000} s${crashed ? `: ${crashed}` : ''}`);
    const payload = new Uint8Array(reply, REPLY_HEADER, head[2]!);
    if (head[1] !== 0) {
      const text = new TextDecoder().decode(payload.slice());
      throw head[1] === 2 ? new RangeError(text) : head[1] === 3 ? new TypeError(text) : new Error(text);
    }
    return payload;
  };
  const json = (r: Request, timeout?: number): unknown => JSON.parse(new TextDecoder().decode(call(r, TEXT_BYTES, timeout)!.slice()));
  // a process that exits with Dawn holding a device tears it down mid-work (a native abort): the
  // exit handler may still block, so the worker releases every backend first
  const proc = host.process as unknown as { once(e: 'exit', f: () => void): void };
  proc.once('exit', () => {
    try {
      call({ op: 'shutdown', backend: -1 }, 0, 30_000);
    } catch {
      // the worker is gone already: nothing is left to release
    }
  });
  return { call, json };
}

/**
 * Opens a gpu backend in webgpu mode in the worker thread (started on first use, shared by every
 * such backend of the process) and returns what forwards to it, or why it could not (no worker
 * threads here, or the worker's webgpu mode did not open: its reasons, as `info()`).
 *
 * @example
 * ```ts
 * const r = openRemoteWebGpu();
 * if (typeof r === 'string') console.log(r); else { console.log(r.info().message); r.dispose(); }
 * ```
 */
export function openRemoteWebGpu(): GpuBackendLike<RemoteBuffer | TypedArray> | string {
  channel ??= startWorker();
  if (typeof channel === 'string') return channel;
  const ch = channel;
  const id = nextBackend++;
  const call = (r: Omit<Request, 'backend'>, replyBytes?: number, timeout?: number) => ch.call({ ...r, backend: id }, replyBytes, timeout);
  const json = (r: Omit<Request, 'backend'>, timeout?: number) => ch.json({ ...r, backend: id }, timeout);

  let info: GpuInfo;
  try {
    info = json({ op: 'open' }, START_MS) as GpuInfo;
    if (info.mode !== 'webgpu') throw new Error(info.message);
    // the probe: one kernel through to a synchronous read
    call({ op: 'read', id: -1, dtype: 'float32', size: 4 }, 16, START_MS);
  } catch (e) {
    try {
      call({ op: 'dispose' }, 0, 30_000);
    } catch {
      // nothing opened
    }
    return (e as Error).message;
  }
  const cut = info.message.indexOf(' (read-back asynchronous only');
  info = { ...info, message: `${cut < 0 ? info.message : info.message.slice(0, cut)} in a worker thread (synchronous reads too)` };

  const wire = (a: KernelArg<RemoteBuffer | TypedArray>): KernelArg<WireData> => {
    const d = a.data;
    if (d instanceof RemoteBuffer && d.freed) throw new Error('gpu backend: a kernel operand\'s storage was already freed');
    return { data: d instanceof RemoteBuffer ? { id: d.id } : d, dtype: a.dtype, shape: a.shape, strides: a.strides, offset: a.offset };
  };
  let next = 0;
  let bytes = 0;
  let buffers = 0;
  let disposed = false;
  const backend: GpuBackendLike<RemoteBuffer | TypedArray> = {
    name: 'gpu',
    dtypes: DTYPES,
    alloc(dtype, size) {
      const b = new RemoteBuffer(next++, dtype, size);
      call({ op: 'alloc', id: b.id, dtype, size });
      bytes += size * ARRAY_TYPES[dtype].BYTES_PER_ELEMENT;
      buffers++;
      return b;
    },
    write(data, dtype, values) {
      if (!(data instanceof RemoteBuffer)) return void data.set(values as never);
      call({ op: 'write', id: data.id, dtype, values: values.slice() });
    },
    readSync(data, dtype, size) {
      if (!(data instanceof RemoteBuffer)) return data.subarray(0, size);
      const A = ARRAY_TYPES[dtype];
      const p = call({ op: 'read', id: data.id, dtype, size }, size * A.BYTES_PER_ELEMENT)!;
      return new A(p.slice().buffer, 0, size);
    },
    async read(data, dtype, size) {
      return backend.readSync(data, dtype, size);
    },
    free(data) {
      if (!(data instanceof RemoteBuffer)) return;
      if (data.freed) throw new Error('gpu backend: a buffer was freed twice');
      data.freed = true;
      if (!disposed) call({ op: 'free', id: data.id });
      bytes -= data.size * ARRAY_TYPES[data.dtype].BYTES_PER_ELEMENT;
      buffers--;
    },
    memory: () => ({ bytes, buffers }),
    deviceMemory: () => json({ op: 'deviceMemory' }) as { textures: number; elements: number },
    info: () => info,
    run<K extends KernelName>(kernel: K, inputs: readonly KernelArg<RemoteBuffer | TypedArray>[], out: KernelArg<RemoteBuffer | TypedArray>, params: KernelParams[K]) {
      // a host-array result is written by the worker into its own copy: it comes back with the answer
      const hostOut = !(out.data instanceof RemoteBuffer);
      const o = out.data as TypedArray;
      const p = call({ op: 'run', kernel, inputs: inputs.map(wire), out: wire(out), params }, hostOut ? o.byteLength : 0)!;
      if (hostOut && p.byteLength) new Uint8Array(o.buffer, o.byteOffset, o.byteLength).set(p);
    },
    ranOn: (kernel, dtype) => json({ op: 'ranOn', kernel, dtype }) as string,
    stats: () => json({ op: 'stats' }) as ReturnType<NonNullable<GpuBackendLike['stats']>>,
    sync: async () => void call({ op: 'sync' }, 0),
    dispose() {
      if (disposed) return;
      disposed = true;
      // the worker releases this backend's buffers and device (the last one: Dawn's GPUDevice) before it answers
      call({ op: 'dispose' }, 0, 30_000);
    },
  };
  return backend;
}
