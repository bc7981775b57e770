/**
 * @file @qgrad/quant: everything a QAT/PTQ user touches. So far: the grids, granularity, scale
 * initialisers and QuantizerSpec (grids/); the property-test kit is `@qgrad/quant/testing`.
 * @example
 * import { fakeQuant } from '@qgrad/quant';
 * const wq = fakeQuant(w, { grid: { kind: 'int', bits: 4 }, granularity: { group: 32 } });
 */
export * from './grids/index.js';
export * from './qat/index.js';
export * from './schedules/index.js';
export * from './inspect/index.js';
export * from './qat/hadamard.js';
