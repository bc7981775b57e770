/**
 * @file Where the pool's workers come from: Node's worker_threads, or a browser's Web Workers when
 * the page is cross-origin isolated (else none, with the reason). Only the starting of workers
 * differs; the job loop they run is threads.ts's, as source text.
 */
import { workerLoop } from './threads.js';

/** What a worker receives: the compiled kernel module, the shared memory and the export names. */
export interface WorkerData {
  module: object;
  memory: { buffer: ArrayBufferLike };
  names: readonly string[];
  spinMicros: number;
}

/** How a worker tells the pool it runs the job loop, or that it never will. */
export interface WorkerEvents {
  ready(): void;
  failed(reason: string): void;
}

/** One platform's way of starting workers that run the job loop. */
export interface WorkerPlatform {
  /** How the backend's info names these workers. */
  readonly name: 'worker_threads' | 'Web Workers';
  /**
   * Whether a worker starts while its creator is still busy: Node's do, so the pool waits for
   * them; a browser starts one only after the page's current task ends, so a browser pool begins
   * with the caller alone and each worker joins the first job dispatched after it is up.
   */
  readonly startsWhileBusy: boolean;
  spawn(data: WorkerData, events: WorkerEvents): { terminate(): void };
}

interface NodeWorker {
  unref(): void;
  terminate(): Promise<number>;
  on(event: 'error', fn: (e: unknown) => void): void;
}
type NodeWorkerCtor = new (source: string, options: object) => NodeWorker;

// a CommonJS script (eval: true): workers need neither the tsx loader nor a file on disk
const NODE_SOURCE = `const { module, memory, names, spinMicros } = require('node:worker_threads').workerData;\n${workerLoop('')}`;

function nodePlatform(Worker: NodeWorkerCtor): WorkerPlatform {
  return {
    name: 'worker_threads',
    startsWhileBusy: true,
    spawn(data, events) {
      const w = new Worker(NODE_SOURCE, { eval: true, execArgv: [], workerData: data });
      w.on('error', (e) => events.failed(String((e as Error)?.message ?? e)));
      w.unref();
      return { terminate: () => void w.terminate().catch(() => {}) };
    },
  };
}

interface WebWorker {
  postMessage(message: unknown): void;
  terminate(): void;
  addEventListener(type: 'message' | 'error', fn: (e: { data?: unknown; message?: string }) => void): void;
}
interface WebGlobals {
  Worker?: new (url: string, options?: object) => WebWorker;
  Blob?: new (parts: string[], options: { type: string }) => object;
  URL?: { createObjectURL(blob: object): string; revokeObjectURL(url: string): void };
  crossOriginIsolated?: boolean;
}

// A classic worker from a Blob URL of this text: no worker file for a bundler to find and emit
// (esbuild leaves `new Worker(new URL('./w.js', import.meta.url))` alone; Vite and webpack rewrite
// it, each its own way), so the bundled backend runs under any bundler. A page whose CSP sets
// worker-src must allow blob:. Its first message carries the module and the shared memory; the
// handler then runs the job loop for the worker's life (a worker may Atomics.wait).
const WEB_SOURCE = `onmessage = ({ data: { module, memory, names, spinMicros } }) => {\n${workerLoop("postMessage('ready');")}\n};`;

function webPlatform(g: Required<Pick<WebGlobals, 'Worker' | 'Blob' | 'URL'>>): WorkerPlatform {
  let url: string | null = null;
  return {
    name: 'Web Workers',
    startsWhileBusy: false,
    spawn(data, events) {
      // one URL for every pool of the page: workers fetch it whenever they start
      url ??= g.URL.createObjectURL(new g.Blob([WEB_SOURCE], { type: 'text/javascript' }));
      const w = new g.Worker(url, { name: 'qgrad-wasm' });
      w.addEventListener('message', (e) => e.data === 'ready' && events.ready());
      w.addEventListener('error', (e) => events.failed(e.message ?? 'the worker script did not load'));
      w.postMessage(data);
      return { terminate: () => w.terminate() };
    },
  };
}

/**
 * The workers this runtime offers, or why there are none: Node's worker_threads; in a browser, Web
 * Workers only on a cross-origin isolated page (COOP: same-origin and COEP: require-corp), the only
 * kind where SharedArrayBuffer, and so a shared wasm memory, exists.
 */
export function workerPlatform(): WorkerPlatform | string {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  const threads = proc?.getBuiltinModule?.('node:worker_threads') as { Worker?: NodeWorkerCtor } | undefined;
  if (threads?.Worker) return nodePlatform(threads.Worker);
  const g = globalThis as WebGlobals;
  if (typeof g.Worker !== 'function' || !g.Blob || !g.URL?.createObjectURL) return 'no worker_threads or Web Workers in this runtime';
  if (g.crossOriginIsolated !== true || typeof SharedArrayBuffer === 'undefined') return 'page not cross-origin isolated (COOP/COEP headers missing)';
  return webPlatform({ Worker: g.Worker, Blob: g.Blob, URL: g.URL });
}
