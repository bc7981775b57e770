/**
 * @file The nested worker's script for gpu-worker.ts, bundled by esbuild as a classic worker
 * script: gpu.js, then qgrad's WebGPU server (what a user's own worker script for
 * connectWebGpuWorker holds).
 */
import { serveWebGpu } from '@qgrad/kernels';

(globalThis as unknown as { importScripts(...urls: string[]): void }).importScripts('/gpu-browser.js');
serveWebGpu();
