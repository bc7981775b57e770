/**
 * @file 2:4 semi-structured sparsity-aware training: the mask (CAST or magnitude) and `sparsify`.
 */
export * from './mask.js';
export * from './sparsify.js';
