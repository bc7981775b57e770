/**
 * @file The grids of @qgrad/quant behind one `Grid` interface (grid.ts), one file each, listed in
 * the plain table of table.ts; and granularity.
 */
export * from './grid.js';
export * from './table.js';
export * from './granularity.js';
export * from './int.js';
export * from './fp.js';
export * from './mx.js';
export * from './nf4.js';
export * from './ternary.js';
export * from './binary.js';
export * from './codebook.js';
