/**
 * @file @qgrad/core/testing — the public testing kit: gradcheck, allclose and fast-check
 * arbitraries, so users property-test their own ops and quantizers the way qgrad tests its own.
 * @example
 * import fc from 'fast-check';
 * import { randn } from '@qgrad/core';
 * import { arb, gradcheck } from '@qgrad/core/testing';
 * fc.assert(fc.property(arb.shape({ minRank: 1 }), (s) => {
 *   gradcheck((x) => x.tanh().mul(x), [randn(s, { dtype: 'float64' })]);
 * }));
 * @module @qgrad/core/testing
 */
export { gradcheck, gradgradcheck, GradcheckError, type GradcheckOptions, type GradcheckReport } from './gradcheck.js';
export { allclose, assertAllclose, closeReport, type CloseOptions } from './allclose.js';
export * as arb from './arbitraries.js';
export { checkOp, checkGolden, type CheckOpOptions, type GoldenCase, type GoldenTensor } from './check-op.js';
