/**
 * @file The worker of remote.ts (a Node worker thread, or a browser's nested Web Worker): the gpu
 * backend in webgpu mode, serving the calling thread's requests one at a time, in order. Answers
 * go into the request's SharedArrayBuffer, then `Atomics.notify` wakes the waiting caller. A
 * kernel that falls back to js needs its operands on the host, which webgpu gives only through
 * Promises: here they can be awaited, so such a call reads its device operands back and runs again.
 */
import type { KernelArg } from '../backend.js';
import type { TypedArray } from '../names.js';
import { GpuBuffer } from './device.js';
import { createGpuBackend, type GpuBackend } from './index.js';
import { REPLY_HEADER, type Request, type WireData } from './remote.js';
import { serverPort } from './remote-link.js';

/** One backend per openRemoteWebGpu of the main thread (webgpu mode: they share Dawn's one GPUDevice), with its buffers. */
interface Served {
  backend: GpuBackend;
  buffers: Map<number, GpuBuffer>;
}
const served = new Map<number, Served>();

function answer(r: Request, kind: number, payload: Uint8Array): void {
  const head = new Int32Array(r.reply!, 0, 3);
  const room = r.reply!.byteLength - REPLY_HEADER;
  const n = Math.min(payload.byteLength, room);
  new Uint8Array(r.reply!, REPLY_HEADER, n).set(payload.subarray(0, n));
  head[1] = kind;
  head[2] = n;
  Atomics.store(head, 0, 1);
  Atomics.notify(head, 0);
}
const bytesOf = (a: TypedArray) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const text = (v: unknown) => new TextEncoder().encode(JSON.stringify(v ?? null));

function servedBy(r: Request): Served {
  const s = served.get(r.backend);
  if (!s) throw new Error(`gpu backend (webgpu worker): backend ${r.backend} is disposed`);
  return s;
}
function buffer(s: Served, id: number): GpuBuffer {
  const b = s.buffers.get(id);
  if (!b) throw new Error(`gpu backend (webgpu worker): no buffer ${id} (freed, or never allocated)`);
  return b;
}

/** The probe read (id −1): a kernel on four values, read back through the device. */
async function probe(backend: GpuBackend): Promise<TypedArray> {
  const x = backend.alloc('float32', 4) as GpuBuffer;
  const y = backend.alloc('float32', 4) as GpuBuffer;
  const arg = (data: GpuBuffer): KernelArg<GpuBuffer> => ({ data, dtype: 'float32', shape: [4], strides: [1], offset: 0 });
  try {
    backend.write(x, 'float32', Float32Array.of(1.5, -2, 3, 65537));
    backend.run('unary', [arg(x)], arg(y), { op: 'neg' });
    const got = await backend.read(y, 'float32', 4);
    if (Array.from(got).join() !== '-1.5,2,-3,-65537') throw new Error(`gpu backend (webgpu): a probe kernel read back [${Array.from(got).join(', ')}]`);
    return got;
  } finally {
    backend.free(x);
    backend.free(y);
  }
}

/** Releases a backend's buffers and device; the last webgpu device releases Dawn's GPUDevice. */
async function close(id: number): Promise<void> {
  const s = served.get(id);
  if (!s) return;
  served.delete(id);
  for (const b of s.buffers.values()) if (!b.freed) s.backend.free(b);
  // Dawn torn down with work pending aborts the process: answer only once it is released
  await s.backend.release();
}

async function handle(r: Request, stopListening: () => void): Promise<void> {
  if (r.op === 'open') {
    const backend = createGpuBackend({ mode: r.mode });
    served.set(r.backend, { backend, buffers: new Map() });
    return answer(r, 0, text(backend.info()));
  }
  if (r.op === 'dispose') {
    await close(r.backend);
    return answer(r, 0, new Uint8Array(0));
  }
  if (r.op === 'shutdown') {
    for (const id of [...served.keys()]) await close(id);
    answer(r, 0, new Uint8Array(0));
    stopListening();
    return;
  }
  const s = servedBy(r);
  const { backend } = s;
  const local = (a: KernelArg<WireData>): KernelArg<GpuBuffer | TypedArray> => ({ ...a, data: ArrayBuffer.isView(a.data) ? a.data : buffer(s, a.data.id) });
  switch (r.op) {
    case 'alloc':
      s.buffers.set(r.id!, backend.alloc(r.dtype!, r.size!) as GpuBuffer);
      return;
    case 'free':
      backend.free(buffer(s, r.id!));
      s.buffers.delete(r.id!);
      return;
    case 'write':
      backend.write(buffer(s, r.id!), r.dtype!, r.values!);
      return;
    case 'run': {
      const inputs = r.inputs!.map(local);
      const out = local(r.out!);
      const run = () => backend.run(r.kernel!, inputs, out, r.params as never);
      try {
        run();
      } catch (e) {
        if (!/reads back only asynchronously/.test((e as Error).message)) throw e;
        // a js fallback: its device operands come to the host (kept there), then it runs again
        for (const a of [...inputs, out]) if (a.data instanceof GpuBuffer) await backend.read(a.data, a.dtype, a.data.size);
        run();
      }
      return answer(r, 0, ArrayBuffer.isView(out.data) ? bytesOf(out.data) : new Uint8Array(0));
    }
    case 'read': {
      const values = r.id === -1 ? await probe(backend) : await backend.read(buffer(s, r.id!), r.dtype!, r.size!);
      // the backend's read gives exactly `size` values of the buffer's dtype
      return answer(r, 0, bytesOf(values));
    }
    case 'deviceMemory':
      return answer(r, 0, text(backend.deviceMemory()));
    case 'stats':
      return answer(r, 0, text(backend.stats?.() ?? []));
    case 'ranOn':
      return answer(r, 0, text(backend.ranOn?.(r.kernel!, r.dtype!) ?? 'gpu'));
    case 'sync':
      await backend.sync();
      return answer(r, 0, new Uint8Array(0));
  }
}

/**
 * Serves the gpu backend of the thread that started this worker: in a browser, call it as the
 * script of the Worker given to connectWebGpuWorker starts, after gpu.js has loaded (the worker
 * opens WebGPU itself; no mode needs setting). Node's worker thread (remote.ts) calls it too.
 *
 * @example
 * ```ts
 * // gpu-worker.ts, bundled as a classic worker script
 * importScripts('gpu-browser.js');
 * serveWebGpu();
 * ```
 */
export function serveWebGpu(): void {
  const port = serverPort();
  /** A request nobody waits for (alloc, write, free) that failed: the next answering request reports it. */
  let pending: { op: string; error: Error } | null = null;
  let chain = Promise.resolve();
  port.onMessage((m) => {
    const r = m as Request;
    chain = chain
      .then(async () => {
        if (r.reply && pending) {
          const p = pending;
          pending = null;
          throw new Error(`${p.error.message} (in an earlier '${p.op}')`);
        }
        await handle(r, port.close);
      })
      .catch((e: unknown) => {
        const err = e instanceof Error ? e : new Error(String(e));
        if (!r.reply) return void (pending ??= { op: r.op, error: err });
        answer(r, err instanceof RangeError ? 2 : err instanceof TypeError ? 3 : 1, new TextEncoder().encode(err.message));
      });
  });
  // listening: the caller, waiting on it, may send requests now
  port.ready();
}
