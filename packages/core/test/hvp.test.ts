import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb, assertAllclose, gradcheck } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';

// Double backward: Hessian-vector products by differentiating a createGraph gradient, checked
// against central differences of the gradient, analytic Hessians, and gradcheck of x ↦ ∇f(x).

const f64 = (s: number[], lo = -2, hi = 2, seed?: number) =>
  q.rand(s, { dtype: 'float64', generator: seed === undefined ? undefined : new q.Generator(seed) }).mul(hi - lo).add(lo);

/** ∇f(x) as a differentiable function of x (createGraph); also usable on plain tensors under noGrad (gradcheck's numeric pass). */
function gradFn(f: (x: Tensor) => Tensor): (x: Tensor) => Tensor {
  return (x) =>
    q.enableGrad(() => {
      const leaf = x.requiresGrad ? x : x.detach().requiresGrad_();
      return q.gradOf([f(leaf)], [leaf], { createGraph: true })[0]!;
    });
}

/** H·v by double backward: ∇ₓ(∇f(x) · v). */
function hvp(f: (x: Tensor) => Tensor, x: Tensor, v: Tensor): Tensor {
  const leaf = x.detach().requiresGrad_();
  const g = gradFn(f)(leaf);
  expect(g.requiresGrad).toBe(true);
  return q.gradOf([g.mul(v).sum()], [leaf])[0]!;
}

/** (∇f(x + hv) − ∇f(x − hv)) / 2h, with plain first-order gradients. */
function fdHvp(f: (x: Tensor) => Tensor, x: Tensor, v: Tensor, h = 1e-5): Tensor {
  const grad = (y: Tensor) => {
    const leaf = y.detach().requiresGrad_();
    return q.gradOf([f(leaf)], [leaf])[0]!;
  };
  return grad(x.add(v.mul(h))).sub(grad(x.sub(v.mul(h)))).div(2 * h);
}

/** Both checks: HVP against finite differences, and gradcheck of the gradient map itself. */
function checkSecondOrder(f: (x: Tensor) => Tensor, x: Tensor, seed: number): void {
  const v = q.randn([...x.shape], { dtype: 'float64', generator: new q.Generator(seed) });
  assertAllclose(hvp(f, x, v), fdHvp(f, x, v), { atol: 1e-6, rtol: 1e-5 }, 'Hv vs finite differences of the gradient');
  gradcheck(gradFn(f), [x]);
}

/** f(x) = Σ w ⊙ op(x) for a fixed random w, so the output is not a constant (Σ softmax = 1). */
const weighted = (op: (x: Tensor) => Tensor, shape: number[], seed: number) => {
  const w = q.randn(shape, { dtype: 'float64', generator: new q.Generator(seed + 1) });
  return (x: Tensor) => op(x).mul(w).sum();
};

// name, op, range, second derivative of the scalar function (for an analytic diagonal Hessian)
const ELEMENTWISE: [string, (x: Tensor) => Tensor, [number, number], (x: number) => number][] = [
  ['tanh', (x) => x.tanh(), [-2, 2], (x) => -2 * Math.tanh(x) * (1 - Math.tanh(x) ** 2)],
  ['exp', (x) => x.exp(), [-2, 2], (x) => Math.exp(x)],
  ['sigmoid', (x) => x.sigmoid(), [-3, 3], (x) => {
    const s = 1 / (1 + Math.exp(-x));
    return s * (1 - s) * (1 - 2 * s);
  }],
  ['mul (x·x·x)', (x) => x.mul(x).mul(x), [-2, 2], (x) => 6 * x],
  ['log', (x) => x.log(), [0.3, 3], (x) => -1 / (x * x)],
  ['sin', (x) => x.sin(), [-3, 3], (x) => -Math.sin(x)],
  ['div (1/x)', (x) => q.div(1, x), [0.5, 2], (x) => 2 / x ** 3],
  ['rsqrt', (x) => x.rsqrt(), [0.3, 3], (x) => 0.75 * x ** -2.5],
  ['softplus', (x) => q.softplus(x), [-3, 3], (x) => {
    const s = 1 / (1 + Math.exp(-x));
    return s * (1 - s);
  }],
  ['gelu', (x) => q.gelu(x), [-2, 2], (x) => {
    const pdf = Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI);
    return pdf * (2 - x * x);
  }],
];

describe('Hessian-vector products of elementwise ops', () => {
  for (const [name, op, range, d2] of ELEMENTWISE) {
    it(`${name}: double backward gives w·φ''(x)·v, the finite-difference Hv, and a gradcheck-clean gradient`, () => {
      fc.assert(
        fc.property(arb.shape({ minRank: 1, maxRank: 3 }), arb.seed(), (s, seed) => {
          const x = f64(s, ...range, seed);
          const w = q.randn(s, { dtype: 'float64', generator: new q.Generator(seed + 1) });
          const f = (t: Tensor) => op(t).mul(w).sum();
          const v = q.randn(s, { dtype: 'float64', generator: new q.Generator(seed + 2) });
          const xs = Array.from(x.dataSync());
          const wv = Array.from(w.dataSync());
          const vv = Array.from(v.dataSync());
          assertAllclose(hvp(f, x, v), xs.map((xi, i) => wv[i]! * d2(xi) * vv[i]!), { atol: 1e-10, rtol: 1e-8 }, `${name} analytic Hv`);
          checkSecondOrder(f, x, seed + 2);
        }),
        { numRuns: 8 },
      );
    });
  }
});

const pickDim = (n: number, rank: number) => (n % (2 * rank)) - rank;

describe('Hessian-vector products of nn ops', () => {
  it('softmax along any dim', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3 }), fc.nat(), arb.seed(), (s, d, seed) => {
        checkSecondOrder(weighted((x) => q.softmax(x, pickDim(d, s.length)), s, seed), f64(s, -2, 2, seed), seed);
      }),
      { numRuns: 10 },
    );
  });

  it('logSoftmax along any dim', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3 }), fc.nat(), arb.seed(), (s, d, seed) => {
        checkSecondOrder(weighted((x) => q.logSoftmax(x, pickDim(d, s.length)), s, seed), f64(s, -2, 2, seed), seed);
      }),
      { numRuns: 10 },
    );
  });

  it('layerNorm with affine parameters', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3, minDim: 2 }), arb.seed(), (s, seed) => {
        const ns = s.slice(-1);
        const w = f64(ns, 0.5, 1.5, seed + 3);
        const b = f64(ns, -1, 1, seed + 4);
        checkSecondOrder(weighted((x) => q.layerNorm(x, ns, w, b), s, seed), f64(s, -2, 2, seed), seed);
      }),
      { numRuns: 10 },
    );
  });

  it('rmsNorm with weight', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3 }), arb.seed(), (s, seed) => {
        const ns = s.slice(-1);
        // eps 1e-3, not 1e-6: a one-element row near 0 has curvature ∝ 1/√eps, and central differences
        // of the gradient then lose digits to truncation (seen: Hv 8201.56 vs FD 8201.16)
        checkSecondOrder(weighted((x) => q.rmsNorm(x, ns, f64(ns, 0.5, 1.5, seed + 3), 1e-3), s, seed), f64(s, -2, 2, seed), seed);
      }),
      { numRuns: 10 },
    );
  });

  it('groupNorm with affine parameters', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 2, max: 3 }), arb.seed(), (n, g, hw, seed) => {
        const s = [n, 2 * g, hw];
        const c = 2 * g;
        checkSecondOrder(weighted((x) => q.groupNorm(x, g, f64([c], 0.5, 1.5, seed + 3), f64([c], -1, 1, seed + 4)), s, seed), f64(s, -2, 2, seed), seed);
      }),
      { numRuns: 10 },
    );
  });

  it('crossEntropy with ignoreIndex, label smoothing and class weights', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 2, max: 4 }), fc.constantFrom(0, 0.2), fc.boolean(), arb.seed(), (n, c, eps, weightedClasses, seed) => {
        const gen = new q.Generator(seed);
        const t = q.tensor(Array.from({ length: n + 1 }, (_, i) => (i === n ? -100 : gen.randint(0, c))), { dtype: 'int32' });
        const weight = weightedClasses ? f64([c], 0.5, 1.5, seed + 3) : undefined;
        checkSecondOrder((x) => q.crossEntropy(x, t, { labelSmoothing: eps, weight }), f64([n + 1, c], -2, 2, seed), seed);
      }),
      { numRuns: 10 },
    );
  });

  it('crossEntropy (mean over N rows) has the analytic Hessian (diag(p) − ppᵀ)/N per row', () => {
    const x = f64([3, 4], -2, 2, 11);
    const t = q.tensor([0, 3, 1], { dtype: 'int32' });
    const v = f64([3, 4], -1, 1, 12);
    const p = q.softmax(x, 1);
    const expected = p.mul(v).sub(p.mul(p.mul(v).sum(1, true))).div(3);
    assertAllclose(hvp((z) => q.crossEntropy(z, t), x, v), expected, { atol: 1e-12 });
  });
});

describe('Hutchinson trace estimation', () => {
  /** f(x) = ½ xᵀAx written without matmul: ½ Σᵢⱼ Aᵢⱼ xᵢ xⱼ; its Hessian is A (symmetric). */
  const quadratic = (a: Tensor) => (x: Tensor) => a.mul(x.unsqueeze(1)).mul(x.unsqueeze(0)).sum().mul(0.5);
  const rademacher = (n: number, g: q.Generator) => q.tensor(Array.from({ length: n }, () => (g.random() < 0.5 ? -1 : 1)), { dtype: 'float64' });

  function hutchinson(f: (x: Tensor) => Tensor, x: Tensor, samples: number, g: q.Generator): number[] {
    const leaf = x.detach().requiresGrad_();
    const grad = gradFn(f)(leaf); // one graph, reused for every probe
    return Array.from({ length: samples }, () => {
      const v = rademacher(x.numel(), g);
      const [hv] = q.gradOf([grad.mul(v).sum()], [leaf], { retainGraph: true });
      return hv!.mul(v).sum().item(); // vᵀHv
    });
  }

  it('is exact for every probe when the Hessian is diagonal', () => {
    const d = q.tensor([1, -2, 3.5, 0.25, 4], { dtype: 'float64' });
    const a = q.eye(5, 5, { dtype: 'float64' }).mul(d);
    for (const est of hutchinson(quadratic(a), f64([5], -1, 1, 1), 8, new q.Generator(3))) expect(est).toBeCloseTo(6.75, 12);
  });

  it('averages to tr(A) within the known Rademacher variance 2·Σ_{i≠j} Aᵢⱼ² for a dense symmetric A', () => {
    const n = 4;
    const b = f64([n, n], -1, 1, 21);
    const a = b.add(b.t()); // symmetric
    const av = Array.from(a.dataSync());
    const trace = Array.from({ length: n }, (_, i) => av[i * n + i]!).reduce((s, v) => s + v, 0);
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) off += av[i * n + j]! ** 2;
    const m = 400;
    const est = hutchinson(quadratic(a), f64([n], -1, 1, 22), m, new q.Generator(23));
    const meanEst = est.reduce((s, v) => s + v, 0) / m;
    expect(Math.abs(meanEst - trace)).toBeLessThan(4 * Math.sqrt((2 * off) / m));
    // each probe is tr(A) plus the off-diagonal cross terms, so probes differ but stay bounded
    for (const e of est) expect(Math.abs(e - trace)).toBeLessThanOrEqual(Math.sqrt(off) * n + 1e-9);
  });
});
