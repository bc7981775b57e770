/**
 * @file Post-training quantization: `ptq` (RTN, GPTQ, AWQ, SmoothQuant, FlexRound, PTQTP trit-planes, Hadamard rotation), its
 * pieces (GPTQ on arrays, migration scales, AWQ clip search, InputTransform) and the small float64 linear algebra.
 */
export * from './ptq.js';
export * from './gptq.js';
export * from './migrate.js';
export * from './clip.js';
export * from './transform.js';
export { cholesky, choleskyInverse, symmetricEigen, upperCholesky } from './linalg.js';
export * from './flexround.js';
export * from './ptqtp.js';
