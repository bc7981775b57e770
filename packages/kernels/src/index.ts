/**
 * @file @qgrad/kernels: the Backend interface, the closed kernel set, the backend list and the backends.
 * @module @qgrad/kernels
 */
export * from './names.js';
export * from './backend.js';
export { BACKENDS, backendEntry, type BackendName } from './backends.js';
export { withJsFallback, type FallbackOptions, type FallbackRunner, type HostTransfer, type KernelStat, type NativeKernel, type NativeTable } from './fallback.js';
export { jsBackend, jsKernels } from './js/index.js';
export { INT8_MATMUL_MAX_K } from './js/int8-matmul.js';
export { numel, contiguousStrides, isContiguous } from './layout.js';
export { erf, roundHalfEven, roundHalfAway } from './js/elementwise.js';
export { wasmBackend, wasmKernels, createWasmBackend, type WasmBackend, type WasmBackendOptions, type WasmInfo } from './wasm/index.js';
export { connectWebGpuWorker, disconnectWebGpuWorker } from './gpu/remote.js';
export { serveWebGpu } from './gpu/remote-worker.js';
export { pack24, unpack24, type Packed24 } from './js/sparse24.js';
export { base3Digit, base3RowBytes, base3Sections, packBase3, unpackBase3, type Base3Section } from './js/base3.js';
