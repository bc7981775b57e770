import { Generator, noGrad, randn } from '@qgrad/core';
import { describe, expect, it } from 'vitest';
import { ActQuantizer } from './quantizers.js';
import { sharedCount } from './shared.js';

describe('the shared-quantization memo', () => {
  it('keeps one result per grid for an input reused across training steps (no growth)', () => {
    const x = randn([4, 8], { generator: new Generator(1) }).requiresGrad_();
    const a = new ActQuantizer({ bits: 8, granularity: 'token' });
    const b = new ActQuantizer({ bits: 4, granularity: 'token' });
    for (let step = 0; step < 5; step++) {
      a.forward(x).add(b.forward(x)).sum().backward(); // frees both nodes
      expect(sharedCount(x)).toBe(2);
    }
    a.forward(x); // tracked, not yet backwarded: the freed results go
    expect(sharedCount(x)).toBe(1);
    noGrad(() => a.forward(x));
    expect(sharedCount(x)).toBe(2); // an untracked result sits beside the live tracked one
  });

  it('drops results once their input was written in place', () => {
    const x = randn([4, 8], { generator: new Generator(2) });
    new ActQuantizer({ bits: 8, granularity: 'token' }).forward(x);
    new ActQuantizer({ bits: 4, granularity: 'token' }).forward(x);
    expect(sharedCount(x)).toBe(2);
    noGrad(() => x.mul_(2));
    new ActQuantizer({ bits: 8, granularity: 'token' }).forward(x);
    expect(sharedCount(x)).toBe(1);
  });

  it('remembers nothing for quantizers that do not share', () => {
    const x = randn([4, 8], { generator: new Generator(3) });
    new ActQuantizer({ bits: 8, granularity: 'token', share: false }).forward(x);
    new ActQuantizer({ bits: 8, granularity: 'token', estimator: 'stochastic' }).forward(x);
    new ActQuantizer({ bits: 8 }).forward(x); // learned scale
    expect(sharedCount(x)).toBe(0);
  });
});
