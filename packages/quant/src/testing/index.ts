/**
 * @file @qgrad/quant/testing — property-test kit for quantizers: fast-check arbitraries for
 * quantizer configs and invariant checkers to run on your own quantizers.
 * @example
 * import { checkIdempotent } from '@qgrad/quant/testing';
 * checkIdempotent((x) => myQuantizer(x, fixedScale), randn([64]));
 * @module @qgrad/quant/testing
 */
export * as arbQuant from './arbitraries.js';
export * from './invariants.js';
