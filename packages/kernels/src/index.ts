/**
 * @file @qgrad/kernels: the Backend interface, the closed kernel set and the backends.
 */
export * from './names.js';
export * from './backend.js';
export { jsBackend, jsKernels } from './js/index.js';
export { numel, contiguousStrides, isContiguous } from './js/layout.js';
export { erf, roundHalfEven, roundHalfAway } from './js/elementwise.js';
export { wasmBackend, wasmKernels, createWasmBackend, type WasmBackend, type WasmBackendOptions } from './wasm/index.js';
