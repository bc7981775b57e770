/**
 * @file Inspection of QAT models: per-layer quantization error (MSE, SQNR), weight histograms
 * against the grid (data, SVG, vega-lite), oscillation counters with optional freezing, and bits
 * per parameter.
 */
export * from './error.js';
export * from './histogram.js';
export * from './oscillation.js';
export * from './bits.js';
