/**
 * @file The QAT half of @qgrad/quant: quantizer modules, QAT layers, prepareQAT and convert.
 */
export * from './quantizers.js';
export * from './modules.js';
export * from './prepare.js';
export * from './convert.js';
