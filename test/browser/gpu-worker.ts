/**
 * @file The dedicated Web Worker of test/browser/gpu.test.ts's worker suite, bundled by esbuild as
 * a classic worker script: connects a nested worker (gpu-serve.ts) that owns WebGPU, lets auto
 * selection choose the gpu backend, then runs the shared equality cases, an `item()` read and the
 * MNIST MLP (mlp.ts) through it, and reports to the page. On a page that is not cross-origin
 * isolated it reports only what selection chose and why.
 */
import { backendInfo, setBackend, tensor } from '@qgrad/core';
import { BACKENDS, connectWebGpuWorker, disconnectWebGpuWorker } from '@qgrad/kernels';
import { runGpuCases, type CasesReport } from './gpu-equality.js';
import { trainMlp, type MlpOptions } from './mlp.js';

/** What the page asks for. */
export interface WorkerTask {
  runs: number;
  seed: number;
  mlp: MlpOptions;
}

/** What the worker found. */
export interface WorkerReport {
  isolated: boolean;
  /** connectWebGpuWorker's answer: null, or why webgpu will not be chosen. */
  connect: string | null;
  /** backendInfo() after setBackend('gpu'), nothing forced. */
  info: string;
  cases: CasesReport | null;
  casesMs: number;
  /** (1 + 2 + … + 100) · 0.5 through the gpu backend, read with item(). */
  item: number | null;
  losses: number[];
  msPerStep: number;
  /** What a forwarded call says once the nested worker is disconnected. */
  afterDisconnect: string;
}

type Scope = { importScripts(...urls: string[]): void; postMessage(m: unknown): void; onmessage: ((e: { data: WorkerTask }) => void) | null };
const scope = globalThis as unknown as Scope;
// gpu.js for the modes this thread runs itself (webgl2 where webgpu is not chosen)
scope.importScripts('/gpu-browser.js');

async function run(task: WorkerTask): Promise<WorkerReport> {
  const nested = new (globalThis as unknown as { Worker: new (url: string, o: object) => Parameters<typeof connectWebGpuWorker>[0] }).Worker('/gpu-serve.js', { name: 'qgrad-webgpu' });
  const connect = await connectWebGpuWorker(nested);
  setBackend('gpu');
  const report: WorkerReport = { isolated: (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true, connect, info: backendInfo(), cases: null, casesMs: 0, item: null, losses: [], msPerStep: 0, afterDisconnect: '' };
  if (connect !== null) return report;

  const t0 = performance.now();
  const backend = BACKENDS.find((b) => b.name === 'gpu')!.create();
  report.cases = await runGpuCases(backend, task.runs, task.seed);
  backend.dispose();
  report.casesMs = performance.now() - t0;

  report.item = tensor(Float32Array.from({ length: 100 }, (_, i) => i + 1)).mul(0.5).sum().item();

  const get = async (path: string) => (await fetch(path)).arrayBuffer();
  const data = { images: new Float32Array(await get('/mnist.f32')), labels: new Int32Array(await get('/mnist.i32')) };
  const t1 = performance.now();
  report.losses = trainMlp(data, task.mlp);
  report.msPerStep = (performance.now() - t1) / task.mlp.steps;

  // every backend on the nested worker (setBackend's included) releases its device, and the worker ends
  disconnectWebGpuWorker();
  try {
    tensor([1, 2]).sum().item();
    report.afterDisconnect = 'a call still answered';
  } catch (e) {
    report.afterDisconnect = (e as Error).message;
  }
  return report;
}

scope.onmessage = ({ data }) => {
  run(data).then(
    (r) => scope.postMessage({ report: r }),
    (e: unknown) => scope.postMessage({ error: String((e as Error)?.stack ?? e) }),
  );
};
