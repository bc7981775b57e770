// A user's fast-check property with @qgrad/core/testing (fast-check is the user's own dependency).
import fc from 'fast-check';
import { randn } from '@qgrad/core';
import { arb, gradcheck } from '@qgrad/core/testing';

fc.assert(
  fc.property(arb.shape({ minRank: 1, maxRank: 2, maxDim: 3 }), (s) => {
    gradcheck((x) => x.tanh().mul(x), [randn(s, { dtype: 'float64' })]);
  }),
  { numRuns: 20 },
);
console.log('property ok');
