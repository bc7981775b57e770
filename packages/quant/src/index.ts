/**
 * @file @qgrad/quant: everything a QAT/PTQ user touches, on one vocabulary — a grid by name
 * (grids/, one file each, listed in grids/table.ts), granularity, a scale (scale/), an estimator
 * (quantizer/config.ts) — read by the functional API, the QAT modules, convert, inspection and the
 * property-test kit (`@qgrad/quant/testing`).
 * @example
 * import { fakeQuant, prepareQAT } from '@qgrad/quant';
 * const wq = fakeQuant(w, { grid: 'int', bits: 4, granularity: { group: 32 } });
 * prepareQAT(model, { default: { weight: { grid: 'nf4' } } });
 * @module @qgrad/quant
 */
export * from './grids/index.js';
export * from './scale/rules.js';
export * from './scale/double.js';
export * from './quantizer/index.js';
export * from './qat/index.js';
export * from './schedules/index.js';
export * from './inspect/index.js';
export * from './qat/hadamard.js';
export * from './lora/index.js';
export * from './export/index.js';
export * from './ptq/index.js';
export * from './vq/index.js';
export * from './bitswitch/index.js';
export * from './lowprec/halo.js';
export * from './lowprec/fps-attention.js';
export * from './sparsity/index.js';
export * from './distill/index.js';
export * from './diffusion/index.js';
