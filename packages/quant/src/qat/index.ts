/**
 * @file The QAT half of @qgrad/quant: quantizer modules (with HESTIA's soft forward), QAT layers,
 * prepareQAT, convert, code packing, and the `qgrad train` command.
 */
export * from './quantizers.js';
export * from './soft.js';
export * from './modules.js';
export * from './prepare.js';
export * from './convert.js';
export * from './pack.js';
export { runTrainCli } from './train-cli.js';
