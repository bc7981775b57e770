/**
 * @file How remote.ts reaches the worker that owns WebGPU, and how that worker (remote-worker.ts)
 * listens: Node's worker_threads or a browser's dedicated Web Worker. Only starting the worker and
 * passing messages differ between the two; the requests, the replies in SharedArrayBuffers and the
 * blocking on them are remote.ts's, the same everywhere.
 */

/** The calling thread's end of the link: requests go out here; answers come back through SharedArrayBuffers. */
export interface Link {
  /** How info() names where WebGPU runs. */
  readonly where: string;
  post(message: unknown): void;
  /** Why the worker can no longer answer, or null (its events arrive only while this thread is not blocked). */
  failure(): string | null;
  /** Runs `f` when the process is about to exit (Node: a Dawn device torn down mid-work aborts the process; a page's workers simply end with it). */
  atExit(f: () => void): void;
  /** Ends the worker. */
  close(): void;
}

/** The worker's end: the caller's requests come in here. */
export interface ServerPort {
  onMessage(f: (message: unknown) => void): void;
  /** Tells the caller, who may be blocked until then, that requests are heard now. */
  ready(): void;
  close(): void;
}

/** Boot word (int32s): state (0 loading, 1 listening, 2 failed), unused, bytes of the failure text that follows the header. */
const BOOT_HEADER = 12;
const BOOT_BYTES = 1 << 12;

type NodeProcess = { env: Record<string, string | undefined>; getBuiltinModule(m: string): unknown; once(e: 'exit', f: () => void): void };
const nodeProcess = (): NodeProcess | null => {
  const p = (globalThis as { process?: Partial<NodeProcess> }).process;
  return typeof p?.getBuiltinModule === 'function' ? (p as NodeProcess) : null;
};
/** Whether this is Node (a page's `process` shim has no getBuiltinModule). */
export const inNode = (): boolean => nodeProcess() !== null;

interface NodeWorker {
  postMessage(m: unknown): void;
  unref(): void;
  terminate(): Promise<number>;
  on(event: 'error' | 'exit', f: (e: unknown) => void): void;
}

/** The Node worker's first script (CommonJS, eval'd): loads `d.url` and serves, or writes why it could not into the boot word. */
const NODE_BOOT = `const { workerData: d } = require('node:worker_threads');
(async () => {
  try {
    if (d.tsx) (await import(require('node:url').pathToFileURL(d.tsx).href)).register();
    (await import(d.url)).serveWebGpu();
  } catch (e) {
    const head = new Int32Array(d.boot, 0, 3);
    const text = new TextEncoder().encode(String(e && e.stack || e)).subarray(0, d.boot.byteLength - ${BOOT_HEADER});
    new Uint8Array(d.boot, ${BOOT_HEADER}, text.length).set(text);
    head[2] = text.length;
    Atomics.store(head, 0, 2);
    Atomics.notify(head, 0);
  }
})();`;

/**
 * Starts remote-worker.ts in a Node worker thread and blocks until it listens (a Node worker starts
 * while its creator waits), or says why it did not; null outside Node.
 */
export function nodeLink(startMs: number): Link | string | null {
  const proc = nodeProcess();
  const threads = proc?.getBuiltinModule('node:worker_threads') as { Worker: new (source: string, o: object) => NodeWorker } | undefined;
  if (!proc || !threads) return null;
  // EGL reads the process environment, which a worker's process.env does not change (dawn.ts)
  proc.env.EGL_PLATFORM ??= 'surfaceless';
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  const boot = new SharedArrayBuffer(BOOT_HEADER + BOOT_BYTES);
  let worker: NodeWorker;
  try {
    // from source (tsx, vitest) the worker registers the TypeScript loader first; the built package needs none
    const tsx = ext === '.ts' ? (proc.getBuiltinModule('node:module') as { createRequire(u: string): { resolve(id: string): string } }).createRequire(import.meta.url).resolve('tsx/esm/api') : null;
    const url = new URL(`./remote-worker${ext}`, import.meta.url).href;
    worker = new threads.Worker(NODE_BOOT, { eval: true, execArgv: [], workerData: { url, tsx, boot } });
  } catch (e) {
    return `the WebGPU worker did not start (${(e as Error).message.split('\n')[0]})`;
  }
  // a worker's 'error' event needs this thread's event loop, which a blocked call does not run:
  // the boot word says whether the worker's module loaded
  const head = new Int32Array(boot, 0, 3);
  if (Atomics.wait(head, 0, 0, startMs) === 'timed-out' || head[0] !== 1) {
    void worker.terminate();
    const why = head[0] === 2 ? new TextDecoder().decode(new Uint8Array(boot, BOOT_HEADER, head[2]!).slice()) : `no answer within ${startMs / 1000} s`;
    return `the WebGPU worker did not load (${why.split('\n')[0]})`;
  }
  worker.unref(); // an idle worker never keeps Node running
  let failure: string | null = null;
  worker.on('error', (e) => (failure = `the WebGPU worker failed: ${(e as Error).message?.split('\n')[0] ?? String(e)}`));
  worker.on('exit', () => (failure ??= 'the WebGPU worker exited'));
  return {
    where: 'a worker thread',
    post: (m) => worker.postMessage(m),
    failure: () => failure,
    atExit: (f) => proc.once('exit', f),
    close: () => void worker.terminate(),
  };
}

/** The parts of a browser's Worker the link uses. */
export interface WebWorker {
  postMessage(message: unknown): void;
  terminate(): void;
  addEventListener(type: 'message' | 'error', f: (e: { data?: unknown; message?: string }) => void): void;
  removeEventListener(type: 'message' | 'error', f: (e: { data?: unknown; message?: string }) => void): void;
}
type WebGlobals = { DedicatedWorkerGlobalScope?: abstract new () => unknown; crossOriginIsolated?: boolean };

/** Why this browser thread cannot block until a WebGPU read arrives, or null where it can. */
export function webBlockingRefused(): string | null {
  const g = globalThis as WebGlobals;
  if (typeof g.DedicatedWorkerGlobalScope !== 'function' || !(globalThis instanceof g.DedicatedWorkerGlobalScope)) {
    return "a page's main thread may not block until WebGPU's asynchronous reads arrive (item(), dataSync()), so webgpu runs only from a dedicated Web Worker of a cross-origin isolated page";
  }
  if (g.crossOriginIsolated !== true || typeof SharedArrayBuffer === 'undefined') {
    return 'the page is not cross-origin isolated (COOP/COEP headers missing), so this worker has no SharedArrayBuffer to block on until WebGPU reads arrive';
  }
  return null;
}

/** The message that asks a Web Worker whether it serves; it answers READY. */
const CONNECT = 'qgrad-webgpu-connect';
const READY = 'qgrad-webgpu-ready';

/**
 * Links to `worker` (its script calls serveWebGpu()) once it answers. A browser starts a worker,
 * and delivers the first messages posted to it, only while its creator's thread runs its event
 * loop: so this waits without blocking, and only later calls may block on the worker.
 */
export async function webLink(worker: WebWorker, startMs: number): Promise<Link | string> {
  const refused = webBlockingRefused();
  if (refused) {
    worker.terminate();
    return refused;
  }
  let failure: string | null = null;
  const onError = (e: { message?: string }) => (failure ??= `the WebGPU worker failed: ${e.message ?? 'its script did not load'}`);
  worker.addEventListener('error', onError);
  const answered = await new Promise<boolean>((done) => {
    const timer = setTimeout(() => finish(false), startMs);
    const onMessage = (e: { data?: unknown }) => e.data === READY && finish(true);
    const onFail = () => finish(false);
    function finish(ok: boolean) {
      clearTimeout(timer);
      worker.removeEventListener('message', onMessage);
      worker.removeEventListener('error', onFail);
      done(ok);
    }
    worker.addEventListener('message', onMessage);
    worker.addEventListener('error', onFail);
    worker.postMessage(CONNECT);
  });
  if (!answered) {
    worker.terminate();
    return failure ?? `the WebGPU worker did not answer within ${startMs / 1000} s (its script must call serveWebGpu() as it starts)`;
  }
  return {
    where: 'a nested Web Worker',
    post: (m) => worker.postMessage(m),
    failure: () => failure,
    atExit: () => {},
    close: () => {
      failure ??= 'the WebGPU worker was closed';
      worker.terminate();
    },
  };
}

/** This worker's end: Node's parentPort (its boot word in workerData), else a dedicated Web Worker's global scope. */
export function serverPort(): ServerPort {
  const threads = nodeProcess()?.getBuiltinModule('node:worker_threads') as
    | { parentPort: { on(e: 'message', f: (m: unknown) => void): void; close(): void } | null; workerData?: { boot?: SharedArrayBuffer } }
    | undefined;
  const boot = threads?.workerData?.boot;
  if (threads?.parentPort && boot) {
    const port = threads.parentPort;
    return {
      onMessage: (f) => port.on('message', f),
      ready: () => {
        const head = new Int32Array(boot, 0, 3);
        Atomics.store(head, 0, 1);
        Atomics.notify(head, 0);
      },
      close: () => port.close(),
    };
  }
  const scope = globalThis as unknown as WebGlobals & {
    addEventListener(type: 'message', f: (e: { data: unknown }) => void): void;
    postMessage(m: unknown): void;
    close(): void;
  };
  if (typeof scope.DedicatedWorkerGlobalScope !== 'function' || !(globalThis instanceof scope.DedicatedWorkerGlobalScope)) {
    throw new Error('serveWebGpu: not in a worker (a Node worker thread started by qgrad, or a dedicated Web Worker)');
  }
  let listening = false;
  return {
    onMessage: (f) =>
      scope.addEventListener('message', (e) => {
        // the caller's connect arrives after this script has run (it is sent once the worker starts)
        if (e.data === CONNECT) return void (listening && scope.postMessage(READY));
        f(e.data);
      }),
    ready: () => void (listening = true),
    close: () => scope.close(),
  };
}
