/**
 * @file The page side of test/browser/gpu.test.ts, bundled by esbuild for the browser: the gpu
 * equality cases (packages/kernels/test/gpu-cases.ts) in a chosen gpu.js mode, and the MNIST MLP
 * (mlp.ts) on the gpu backend; and a dedicated Web Worker (gpu-worker.ts) whose gpu backend
 * forwards to a nested one, with what auto selection chooses on this thread beside it. gpu.js comes
 * from its own script tag (gpu-browser.js); the mode goes through QGRAD_GPU_MODE, which the backend
 * reads from `process.env` where there is one.
 */
import { setBackend } from '@qgrad/core';
import { BACKENDS, type Backend } from '@qgrad/kernels';
import { runGpuCases, type CasesReport } from './gpu-equality.js';
import type { WorkerReport, WorkerTask } from './gpu-worker.js';
import { trainMlp, type MlpOptions } from './mlp.js';

type Info = { mode: string | null; message: string };

/** What one mode's run of the equality cases found. */
export interface EqualityReport extends CasesReport {
  mode: string | null;
  message: string;
  ms: number;
  /** The WebGPU adapter (vendor, architecture), or null without one. */
  adapter: string | null;
  /** What readSync of a device-only result did: 'values' or its error (webgpu has none). */
  syncRead: string;
}

function useMode(mode: string): void {
  (globalThis as { process?: unknown }).process = { env: { QGRAD_GPU_MODE: mode } };
}

/** Runs every equality case on a fresh gpu backend in `mode`, operands in device buffers. */
async function equality(mode: string, runs: number, seed: number): Promise<EqualityReport> {
  const t0 = performance.now();
  useMode(mode);
  const backend: Backend = BACKENDS.find((b) => b.name === 'gpu')!.create();
  const info = (backend as unknown as { info(): Info }).info();
  const report: EqualityReport = { mode: info.mode, message: info.message, passed: [], failed: [], maxError: {}, ms: 0, adapter: await adapter(), syncRead: '' };
  if (info.mode === mode) {
    Object.assign(report, await runGpuCases(backend, runs, seed));
    report.syncRead = syncRead(backend);
  }
  backend.dispose();
  report.ms = performance.now() - t0;
  return report;
}

async function adapter(): Promise<string | null> {
  type Gpu = { requestAdapter(): Promise<{ info?: { vendor: string; architecture: string } } | null> };
  const a = await (globalThis as { navigator?: { gpu?: Gpu } }).navigator?.gpu?.requestAdapter();
  return a ? `${a.info?.vendor} ${a.info?.architecture}` : null;
}

/** readSync of a result that only the device holds. */
function syncRead(backend: Backend): string {
  const arg = (data: unknown) => ({ data, dtype: 'float32' as const, shape: [4], strides: [1], offset: 0 });
  const x = backend.alloc('float32', 4);
  backend.write(x, 'float32', Float32Array.of(1, -2, 3, -4));
  const y = backend.alloc('float32', 4);
  backend.run('unary', [arg(x)], arg(y), { op: 'neg' });
  try {
    return Array.from(backend.readSync(y, 'float32', 4)).join(',') === '-1,2,-3,4' ? 'values' : 'wrong values';
  } catch (e) {
    return (e as Error).message;
  } finally {
    backend.free(x);
    backend.free(y);
  }
}

/** Trains the MLP on the gpu backend in `mode` over the served images (/mnist.f32, /mnist.i32). */
async function mlp(mode: string, o: MlpOptions): Promise<{ mode: string | null; losses: number[]; ms: number }> {
  const get = async (path: string) => (await fetch(path)).arrayBuffer();
  const data = { images: new Float32Array(await get('/mnist.f32')), labels: new Int32Array(await get('/mnist.i32')) };
  useMode(mode);
  const entry = BACKENDS.find((b) => b.name === 'gpu')!;
  const info = (entry.instance() as unknown as { info(): Info }).info();
  if (info.mode !== mode) throw new Error(`gpu backend not in ${mode} mode: ${info.message}`);
  setBackend('gpu');
  const t0 = performance.now();
  const losses = trainMlp(data, o);
  return { mode: info.mode, losses, ms: performance.now() - t0 };
}

/** What auto selection chose on this page's main thread, and what the worker found. */
export interface WorkerRun {
  main: { mode: string | null; message: string };
  worker: WorkerReport;
}

type PageWorker = { postMessage(m: unknown): void; terminate(): void; onmessage: ((e: { data: { report?: WorkerReport; error?: string } }) => void) | null; onerror: ((e: { message?: string }) => void) | null };

/** Auto selection on this thread (a fresh backend, disposed), then `task` in a dedicated worker (terminated at the end). */
async function worker(task: WorkerTask): Promise<WorkerRun> {
  useMode('auto');
  const here = BACKENDS.find((b) => b.name === 'gpu')!.create();
  const { mode, message } = (here as unknown as { info(): Info }).info();
  here.dispose();
  const w = new (globalThis as unknown as { Worker: new (url: string, o: object) => PageWorker }).Worker('/gpu-worker.js', { name: 'qgrad' });
  try {
    const report = await new Promise<WorkerReport>((done, fail) => {
      w.onmessage = ({ data }) => (data.report ? done(data.report) : fail(new Error(data.error)));
      w.onerror = (e) => fail(new Error(`the worker failed: ${e.message}`));
      w.postMessage(task);
    });
    return { main: { mode, message }, worker: report };
  } finally {
    w.terminate();
  }
}

Object.assign(globalThis, { qgradGpu: { equality, mlp, worker } });
