/**
 * @file WebGPU with synchronous read-back: the gpu backend in webgpu mode runs in a worker
 * (remote-worker.ts) and this side forwards every call to it. WebGPU itself reads back only
 * through Promises, which the thread that wants the values cannot await inside `item()` or
 * `dataSync()`; a worker can, while this thread blocks on `Atomics.wait` until the values are in a
 * SharedArrayBuffer. So code that reads synchronously (scale inits, the trainer's loss) runs on
 * WebGPU unchanged, and auto selection can choose it. Calls go in order; those that answer
 * (kernel runs, for their errors, and reads) wait for the worker, the rest are posted and go on.
 * Node starts its worker thread itself; a browser thread may block only in a dedicated Web Worker
 * of a cross-origin isolated page, which first connects a worker of its own (connectWebGpuWorker).
 * remote-link.ts holds what differs between the two.
 */
import type { KernelArg } from '../backend.js';
import type { DType, KernelName, KernelParams, TypedArray } from '../names.js';
import { ARRAY_TYPES, DTYPES } from '../names.js';
import type { GpuInfo, GpuMode } from './device.js';
import type { GpuBackendLike } from './index.js';
import { type Link, type WebWorker, inNode, nodeLink, webBlockingRefused, webLink } from './remote-link.js';

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
  /** open: the mode the worker's backend is forced to. */
  mode?: GpuMode;
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

/** The one worker every remote backend of this thread talks to: several Dawn instances in one process crash it. */
interface Channel {
  readonly link: Link;
  /** Posts a request and, with `replyBytes`, blocks until the worker has answered into the reply buffer. */
  call(r: Request, replyBytes?: number, timeout?: number): Uint8Array | null;
  json(r: Request, timeout?: number): unknown;
}
let channel: Channel | string | null = null;
let nextBackend = 0;

function openChannel(link: Link): Channel {
  // one reply buffer for every call (they never overlap: the calling thread waits for each), grown on demand
  let reply = new SharedArrayBuffer(REPLY_HEADER + TEXT_BYTES);
  const call = (r: Request, replyBytes?: number, timeout = CALL_MS): Uint8Array | null => {
    const failed = link.failure();
    if (failed) throw new Error(`gpu backend (webgpu): ${failed}`);
    if (replyBytes === undefined) {
      link.post(r);
      return null;
    }
    if (reply.byteLength < REPLY_HEADER + replyBytes) reply = new SharedArrayBuffer(REPLY_HEADER + Math.max(replyBytes, 2 * reply.byteLength));
    const head = new Int32Array(reply, 0, 3);
    head.fill(0);
    link.post({ ...r, reply });
    if (Atomics.wait(head, 0, 0, timeout) === 'timed-out') throw new Error(`gpu backend (webgpu): the worker did not answer '${r.op}'${r.kernel ? ` (${r.kernel})` : ''} within ${timeout / 1000} s${link.failure() ? `: ${link.failure()}` : ''}`);
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
  link.atExit(() => shutdown({ link, call, json }));
  return { link, call, json };
}

/** The worker releases every backend it serves (buffers, devices) and stops listening. */
function shutdown(ch: Channel): void {
  try {
    ch.call({ op: 'shutdown', backend: -1 }, 0, 30_000);
  } catch {
    // the worker is gone already: nothing is left to release
  }
}

/**
 * In a dedicated Web Worker of a cross-origin isolated page: links `worker` as the one that owns
 * WebGPU for this thread's gpu backend, so that auto selection (`setBackend('gpu')`) takes webgpu
 * with synchronous reads. Its script loads gpu.js, then calls `serveWebGpu()` as it starts.
 * A browser starts a worker only while its creator's thread is free, so await this before anything
 * chooses the gpu backend. Resolves with null once the worker answers, or with why webgpu will not
 * be chosen (a page's main thread, a page that is not isolated, a worker that did not answer), and
 * then terminates the worker. In Node, where the worker thread starts by itself, it says so.
 *
 * @example
 * ```ts
 * // worker.ts, started by the page with new Worker(…)
 * const why = await connectWebGpuWorker(new Worker(new URL('./gpu-worker.js', import.meta.url)));
 * setBackend('gpu');
 * backendInfo(); // 'gpu backend: gpu.js in webgpu mode in a nested Web Worker (synchronous reads too)'
 * disconnectWebGpuWorker(); // at the end
 * ```
 */
export async function connectWebGpuWorker(worker: WebWorker): Promise<string | null> {
  const refuse = (why: string) => {
    worker.terminate();
    return why;
  };
  if (inNode()) return refuse('in Node the gpu backend starts its WebGPU worker thread itself');
  if (channel && typeof channel !== 'string') return refuse('a WebGPU worker is connected already (disconnectWebGpuWorker() first)');
  const link = await webLink(worker, START_MS);
  if (typeof link === 'string') return link;
  channel = openChannel(link);
  return null;
}

/**
 * Ends the Web Worker that connectWebGpuWorker linked: every gpu backend forwarding to it releases
 * its buffers and device first, and throws on later calls. Nothing happens where none is linked
 * (in Node the worker thread ends with the process).
 * @example
 * ```ts
 * await connectWebGpuWorker(new Worker(new URL('./gpu-worker.js', import.meta.url)));
 * // … train on setBackend('gpu') …
 * disconnectWebGpuWorker(); // releases the device and ends the nested worker
 * ```
 */
export function disconnectWebGpuWorker(): void {
  if (!channel || typeof channel === 'string' || inNode()) return;
  const ch = channel;
  channel = null;
  shutdown(ch);
  ch.link.close();
}

/**
 * Opens a gpu backend in webgpu mode in the worker (Node: a worker thread started on first use;
 * browser: the one connectWebGpuWorker linked; shared by every such backend of this thread) and
 * returns what forwards to it, or why it could not (no worker here, or the worker's webgpu mode
 * did not open: its reasons, as `info()`).
 *
 * @example
 * ```ts
 * const r = openRemoteWebGpu();
 * if (typeof r === 'string') console.log(r); else { console.log(r.info().message); r.dispose(); }
 * ```
 */
export function openRemoteWebGpu(): GpuBackendLike<RemoteBuffer | TypedArray> | string {
  if (!channel) {
    // in a browser only connectWebGpuWorker links a worker: until then, say what is missing
    const link = nodeLink(START_MS);
    if (!link) return webBlockingRefused() ?? 'no WebGPU worker is connected: await connectWebGpuWorker(new Worker(…)) before the gpu backend is chosen';
    channel = typeof link === 'string' ? link : openChannel(link);
  }
  if (typeof channel === 'string') return channel;
  const ch = channel;
  const id = nextBackend++;
  const call = (r: Omit<Request, 'backend'>, replyBytes?: number, timeout?: number) => ch.call({ ...r, backend: id }, replyBytes, timeout);
  const json = (r: Omit<Request, 'backend'>, timeout?: number) => ch.json({ ...r, backend: id }, timeout);

  let info: GpuInfo;
  try {
    info = json({ op: 'open', mode: 'webgpu' }, START_MS) as GpuInfo;
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
  info = { ...info, message: `${cut < 0 ? info.message : info.message.slice(0, cut)} in ${ch.link.where} (synchronous reads too)` };

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
      // a worker that shut down (disconnectWebGpuWorker) or failed has released its buffers already
      if (!disposed && !ch.link.failure()) call({ op: 'free', id: data.id });
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
      if (!ch.link.failure()) call({ op: 'dispose' }, 0, 30_000);
    },
  };
  return backend;
}
