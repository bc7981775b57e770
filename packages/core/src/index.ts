/**
 * @file @qgrad/core: tensors, autograd, the op library and backend selection.
 * @example
 * import { tensor } from '@qgrad/core';
 * const x = tensor([1, 2, 3], { requiresGrad: true });
 * x.mul(x).sum().backward(); // x.grad = [2, 4, 6]
 * @module @qgrad/core
 */
export { Tensor, type Storage, type NestedArray } from './tensor.js';
export { defineFunction, FunctionCtx, type FunctionSpec } from './function.js';
export { noGrad, enableGrad, isGradEnabled, setGradEnabled, setDetectAnomaly, detectAnomaly, isAnomalyEnabled, AnomalyError, type BackwardOptions, type GradHook } from './tape.js';
export { currentModulePath, pushModulePath, popModulePath } from './anomaly.js';
export { grad, gradOf, valueAndGrad, backward, type GradOptions } from './autograd.js';
export { setBackend, getBackend, registerBackend, availableBackends, withBackend, backendInfo, type BackendName } from './backend.js';
export { Generator, manualSeed, defaultGenerator } from './random.js';
export { promoteTypes } from './dtype.js';
export { setMaxTensorBytes } from './dispatch.js';
export { tidy, keep, dispose, memory, scoped, setBufferRecycling, type MemoryInfo } from './lifetime.js';
export type { DType, TypedArray } from '@qgrad/kernels';
export * from './ops/creation.js';
export * from './ops/elementwise.js';
export * from './ops/reduce.js';
export * from './ops/movement.js';
export * from './ops/quant.js';
export * from './ops/hadamard.js';
export * from './estimators/index.js';
export * from './ops/linalg.js';
export * from './ops/conv.js';
export * from './ops/shape.js';
export * from './ops/indexing.js';
export * from './ops/nn.js';
export * from './ops/loss.js';
export * from './ops/optim.js';
export * from './ops/sort.js';
export * from './safetensors.js';
export * as functional from './functional.js';
