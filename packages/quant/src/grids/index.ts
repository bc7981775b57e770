/**
 * @file The grids of @qgrad/quant: integer, FP ExMy, MX blocks, NF4, ternary/binary, learned
 * codebooks; granularity helpers; scale initialisers; and QuantizerSpec with fakeQuant/quantize.
 */
export * from './int.js';
export * from './fp.js';
export * from './mx.js';
export * from './nf4.js';
export * from './levels.js';
export * from './granularity.js';
export * from './scale-init.js';
export * from './spec.js';
