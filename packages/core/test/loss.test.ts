import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb, assertAllclose, checkOp, gradcheck } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';

const f64 = (s: number[], lo = -2, hi = 2) => q.rand(s, { dtype: 'float64' }).mul(hi - lo).add(lo);
const int32 = (values: number[], shape: number[]) => q.tensor(values, { dtype: 'int32', shape });
const REDUCTIONS = ['mean', 'sum', 'none'] as const;
type Red = (typeof REDUCTIONS)[number];

// ---------------------------------------------------------------- a loop-level reference of PyTorch's formulas
/** Rows of x with the class dim moved last: [positions][C]. */
function rowsOf(x: Tensor): number[][] {
  const c = x.ndim === 1 ? x.shape[0]! : x.shape[1]!;
  const perm = x.ndim === 1 ? [0] : [0, ...x.shape.slice(2).map((_, i) => i + 2), 1];
  const d = Array.from(x.permute(perm).contiguous().dataSync());
  return Array.from({ length: d.length / c }, (_, i) => d.slice(i * c, (i + 1) * c));
}
const logSoftmaxRow = (r: number[]) => {
  const m = Math.max(...r);
  const lse = m + Math.log(r.reduce((a, v) => a + Math.exp(v - m), 0));
  return r.map((v) => v - lse);
};

interface RefOpts {
  weight?: number[];
  ignoreIndex: number;
  eps: number;
  reduction: Red;
}

/** aten cross_entropy_loss_label_smoothing / nll_loss, written as loops. */
function refCrossEntropy(rows: number[][], targets: number[], o: RefOpts, logits = true): number | number[] {
  const c = rows[0]!.length;
  const w = (k: number) => (o.weight ? o.weight[k]! : 1);
  let nllSum = 0;
  let smoothSum = 0;
  let wSum = 0;
  const none: number[] = [];
  rows.forEach((r, i) => {
    const lp = logits ? logSoftmaxRow(r) : r;
    const t = targets[i]!;
    if (t === o.ignoreIndex) {
      none.push(0);
      return;
    }
    const nll = -w(t) * lp[t]!;
    const smooth = -lp.reduce((a, v, k) => a + w(k) * v, 0);
    nllSum += nll;
    smoothSum += smooth;
    wSum += w(t);
    none.push((1 - o.eps) * nll + (o.eps / c) * smooth);
  });
  if (o.reduction === 'none') return none;
  if (o.reduction === 'sum') return (1 - o.eps) * nllSum + (o.eps / c) * smoothSum;
  return (1 - o.eps) * (nllSum / wSum) + (o.eps / c) * (smoothSum / wSum);
}

/** aten cross_entropy_loss_prob_target as loops. */
function refProbCrossEntropy(rows: number[][], targets: number[][], o: Omit<RefOpts, 'ignoreIndex'>): number | number[] {
  const c = rows[0]!.length;
  const per = rows.map((r, i) => {
    const lp = logSoftmaxRow(r);
    return -lp.reduce((a, v, k) => a + (o.weight ? o.weight[k]! : 1) * ((1 - o.eps) * targets[i]![k]! + o.eps / c) * v, 0);
  });
  if (o.reduction === 'none') return per;
  const s = per.reduce((a, b) => a + b, 0);
  return o.reduction === 'sum' ? s : s / rows.length;
}

// ---------------------------------------------------------------- random class-index problems
const problem = fc.record({
  layout: fc.constantFrom('C', 'NC', 'NCd', 'NCdd'),
  n: fc.integer({ min: 1, max: 3 }),
  c: fc.integer({ min: 2, max: 4 }),
  d: fc.integer({ min: 1, max: 3 }),
  weighted: fc.boolean(),
  ignoreIndex: fc.constantFrom(-100, 0, 1),
  eps: fc.constantFrom(0, 0.1, 0.35),
  reduction: fc.constantFrom(...REDUCTIONS),
  seed: arb.seed(),
  nonContiguous: fc.boolean(),
});
type Problem = typeof problem extends fc.Arbitrary<infer T> ? T : never;

function makeProblem(p: Problem) {
  const shape = p.layout === 'C' ? [p.c] : p.layout === 'NC' ? [p.n, p.c] : p.layout === 'NCd' ? [p.n, p.c, p.d] : [p.n, p.c, p.d, 2];
  const tshape = shape.filter((_, i) => i !== (shape.length === 1 ? 0 : 1));
  const g = new q.Generator(p.seed);
  const count = tshape.reduce((a, b) => a * b, 1);
  // about a quarter of the targets are ignoreIndex; the first one never is, so 'mean' is defined
  const tv = Array.from({ length: count }, (_, i) => {
    let t = g.randint(0, p.c);
    if (i > 0 && g.random() < 0.25) t = p.ignoreIndex;
    else if (i === 0 && t === p.ignoreIndex) t = (t + 1) % p.c;
    return t;
  });
  const x = q.randn(shape, { dtype: 'float64', generator: g });
  const weight = p.weighted ? q.rand([p.c], { dtype: 'float64', generator: g }).add(0.5) : undefined;
  return { x, target: int32(tv, tshape), tv, weight };
}

describe('crossEntropy with class-index targets', () => {
  it('matches a loop-level reference of PyTorch (weights, ignoreIndex, label smoothing, every reduction, [C] to [N, C, d1, d2])', () => {
    fc.assert(
      fc.property(problem, (p) => {
        const { x, target, tv, weight } = makeProblem(p);
        const opts = { weight, ignoreIndex: p.ignoreIndex, labelSmoothing: p.eps, reduction: p.reduction };
        const got = q.crossEntropy(x, target, opts);
        const want = refCrossEntropy(rowsOf(x), tv, { weight: weight && Array.from(weight.dataSync()), ignoreIndex: p.ignoreIndex, eps: p.eps, reduction: p.reduction });
        expect(got.shape).toEqual(p.reduction === 'none' ? target.shape : []);
        assertAllclose(got, typeof want === 'number' ? [want] : want, { atol: 1e-12, rtol: 1e-10 });
      }),
      { numRuns: 40 },
    );
  });

  it('passes gradcheck for every option combination, in the logits and in the class weights', () => {
    fc.assert(
      fc.property(problem, (p) => {
        const { x, target, weight } = makeProblem(p);
        const opts = { ignoreIndex: p.ignoreIndex, labelSmoothing: p.eps, reduction: p.reduction };
        if (weight) gradcheck((xx, w) => q.crossEntropy(xx, target, { ...opts, weight: w }), [x, weight], { nonContiguous: p.nonContiguous });
        else gradcheck((xx) => q.crossEntropy(xx, target, opts), [x], { nonContiguous: p.nonContiguous });
      }),
      { numRuns: 20 },
    );
    const target = int32([0, 2, 1, 2], [4]);
    checkOp((x) => q.crossEntropy(x, target, { labelSmoothing: 0.1 }), [[4, 3]]);
  });

  it('gives 0.4076 for logits [1, 2, 3] and class 2, and ignores rows whose target is ignoreIndex', () => {
    const x = q.tensor([[1, 2, 3], [5, 0, 0]], { dtype: 'float64' });
    expect(q.crossEntropy(x, int32([2, -100], [2])).item()).toBeCloseTo(0.40760596444438, 12);
    expect(q.crossEntropy(x.select(0, 0), int32([2], [])).item()).toBeCloseTo(0.40760596444438, 12);
    assertAllclose(q.crossEntropy(x, int32([2, -100], [2]), { reduction: 'none' }), [0.40760596444438, 0], { atol: 1e-12 });
  });

  it('equals nllLoss of logSoftmax without label smoothing, and nllLoss matches the reference', () => {
    fc.assert(
      fc.property(problem, (p) => {
        const { x, target, tv, weight } = makeProblem(p);
        const opts = { weight, ignoreIndex: p.ignoreIndex, reduction: p.reduction };
        const lp = q.logSoftmax(x, x.ndim === 1 ? 0 : 1);
        assertAllclose(q.nllLoss(lp, target, opts), q.crossEntropy(x, target, opts), { atol: 1e-12 });
        const want = refCrossEntropy(rowsOf(x), tv, { weight: weight && Array.from(weight.dataSync()), ignoreIndex: p.ignoreIndex, eps: 0, reduction: p.reduction }, false);
        assertAllclose(q.nllLoss(x, target, opts), typeof want === 'number' ? [want] : want, { atol: 1e-12 });
        gradcheck((xx) => q.nllLoss(xx, target, opts), [x], { nonContiguous: p.nonContiguous });
      }),
      { numRuns: 15 },
    );
    checkOp((x) => q.nllLoss(x, int32([1, 0, 2], [3])), [[3, 3]]);
  });
});

describe('crossEntropy with probability targets', () => {
  it('matches the reference and passes gradcheck in logits and targets (weights, smoothing, reductions)', () => {
    const cfg = fc.record({ shape: fc.constantFrom<number[]>([3], [2, 3], [2, 4, 2], [1, 2, 3]), weighted: fc.boolean(), eps: fc.constantFrom(0, 0.2), reduction: fc.constantFrom(...REDUCTIONS), nonContiguous: fc.boolean() });
    fc.assert(
      fc.property(cfg, ({ shape, weighted, eps, reduction, nonContiguous }) => {
        const cd = shape.length === 1 ? 0 : 1;
        const x = f64(shape);
        const t = q.softmax(f64(shape), cd);
        const w = weighted ? f64([shape[cd]!], 0.5, 1.5) : undefined;
        const got = q.crossEntropy(x, t, { weight: w, labelSmoothing: eps, reduction });
        const want = refProbCrossEntropy(rowsOf(x), rowsOf(t), { weight: w && Array.from(w.dataSync()), eps, reduction });
        assertAllclose(got, typeof want === 'number' ? [want] : want, { atol: 1e-12, rtol: 1e-10 });
        gradcheck((xx, tt) => q.crossEntropy(xx, tt, { weight: w, labelSmoothing: eps, reduction }), [x, t], { nonContiguous });
      }),
      { numRuns: 15 },
    );
    checkOp((x, t) => q.crossEntropy(x, t), [[3, 4], [3, 4]], { range: [0, 1] });
  });
});

describe('loss errors', () => {
  it('names both shapes when the target shape does not fit the input', () => {
    expect(() => q.crossEntropy(q.zeros([4, 3]), int32([0, 1, 2], [3]))).toThrow(/crossEntropy: target of shape \[3\] \(int32\) does not match input of shape \[4, 3\]/);
    expect(() => q.crossEntropy(q.zeros([4, 3]), q.zeros([4, 2]))).toThrow(/crossEntropy: target of shape \[4, 2\] \(float32\) does not match input of shape \[4, 3\]/);
    expect(() => q.nllLoss(q.zeros([2, 3, 5]), int32([0, 1], [2]))).toThrow(/nllLoss: target of shape \[2\] .* input of shape \[2, 3, 5\]: class-index targets are integers of shape \[2, 5\]/);
  });

  it('names crossEntropy when a target class is out of range', () => {
    expect(() => q.crossEntropy(q.zeros([2, 3]), int32([0, 3], [2]))).toThrow(/crossEntropy: target 3 is out of bounds for 3 classes/);
    expect(() => q.crossEntropy(q.zeros([2, 3]), int32([-1, 0], [2]))).toThrow(/crossEntropy: target -1 is out of bounds/);
    expect(() => q.nllLoss(q.zeros([1, 2]), int32([5], [1]))).toThrow(/nllLoss: target 5 is out of bounds for 2 classes/);
  });

  it('rejects bad options: weight shape, reduction name, label smoothing range', () => {
    expect(() => q.crossEntropy(q.zeros([2, 3]), int32([0, 1], [2]), { weight: q.ones([2]) })).toThrow(/crossEntropy: weight of shape \[2\] must have shape \[3\]/);
    expect(() => q.mseLoss(q.zeros([2]), q.zeros([2]), { reduction: 'avg' as 'mean' })).toThrow(/mseLoss: reduction must be 'mean', 'sum' or 'none', got 'avg'/);
    expect(() => q.crossEntropy(q.zeros([2, 3]), int32([0, 1], [2]), { labelSmoothing: 1.5 })).toThrow(/crossEntropy: labelSmoothing must be between 0 and 1/);
    expect(() => q.klDiv(q.zeros([2]), q.zeros([2]), { reduction: 'avg' as 'sum' })).toThrow(/klDiv: reduction must be one of 'mean', 'batchmean', 'sum', 'none'/);
    expect(() => q.binaryCrossEntropyWithLogits(q.zeros([2]), q.zeros([3]))).toThrow(/binaryCrossEntropyWithLogits: target of shape \[3\] must have the same shape as input \[2\]/);
  });
});

// ---------------------------------------------------------------- regression losses
const REGRESSION: [string, (a: Tensor, b: Tensor, r: Red) => Tensor, (d: number) => number][] = [
  ['mseLoss', (a, b, reduction) => q.mseLoss(a, b, { reduction }), (d) => d * d],
  ['l1Loss', (a, b, reduction) => q.l1Loss(a, b, { reduction }), (d) => Math.abs(d)],
  ['huberLoss delta 0.7', (a, b, reduction) => q.huberLoss(a, b, { reduction, delta: 0.7 }), (d) => (Math.abs(d) < 0.7 ? 0.5 * d * d : 0.7 * (Math.abs(d) - 0.35))],
  ['smoothL1Loss beta 0.7', (a, b, reduction) => q.smoothL1Loss(a, b, { reduction, beta: 0.7 }), (d) => (Math.abs(d) < 0.7 ? (0.5 * d * d) / 0.7 : Math.abs(d) - 0.35)],
  ['smoothL1Loss beta 0', (a, b, reduction) => q.smoothL1Loss(a, b, { reduction, beta: 0 }), (d) => Math.abs(d)],
];

describe('regression losses', () => {
  for (const [name, fn, pointwise] of REGRESSION) {
    it(`${name} matches its pointwise formula and passes gradcheck for every reduction on broadcast shapes`, () => {
      fc.assert(
        fc.property(arb.broadcastShapes({ maxRank: 3 }), fc.constantFrom(...REDUCTIONS), fc.boolean(), ([sa, sb], reduction, nonContiguous) => {
          const a = f64(sa);
          const b = f64(sb);
          const d = Array.from(a.sub(b).dataSync()).map(pointwise);
          const want = reduction === 'none' ? d : reduction === 'sum' ? [d.reduce((x, y) => x + y, 0)] : [d.reduce((x, y) => x + y, 0) / d.length];
          assertAllclose(fn(a, b, reduction), want, { atol: 1e-12 });
          gradcheck((x, y) => fn(x, y, reduction), [a, b], { nonContiguous });
        }),
        { numRuns: 12 },
      );
      checkOp((x, y) => fn(x, y, 'mean'), [[3, 4], [4]]);
    });
  }
});

// ---------------------------------------------------------------- klDiv and binary cross entropies
describe('klDiv', () => {
  it('matches Σ t·(log t − x) for every reduction including batchmean, and passes gradcheck', () => {
    const red = fc.constantFrom('mean', 'batchmean', 'sum', 'none') as fc.Arbitrary<'mean' | 'batchmean' | 'sum' | 'none'>;
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3 }), red, fc.boolean(), fc.boolean(), (s, reduction, logTarget, nonContiguous) => {
        const x = q.logSoftmax(f64(s), -1);
        const p = q.softmax(f64(s), -1);
        const t = logTarget ? p.log() : p;
        const pv = Array.from(p.dataSync());
        const d = Array.from(x.dataSync()).map((xi, i) => pv[i]! * (Math.log(pv[i]!) - xi));
        const total = d.reduce((a, b) => a + b, 0);
        const want = reduction === 'none' ? d : reduction === 'sum' ? [total] : reduction === 'mean' ? [total / d.length] : [total / s[0]!];
        assertAllclose(q.klDiv(x, t, { reduction, logTarget }), want, { atol: 1e-12 });
        gradcheck((xx, tt) => q.klDiv(xx, tt, { reduction, logTarget }), [x, t], { nonContiguous });
      }),
      { numRuns: 15 },
    );
    checkOp((x, t) => q.klDiv(x, t, { reduction: 'batchmean' }), [[3, 4], [3, 4]], { range: [0.1, 1] });
  });

  it('counts zero-probability targets as 0 with finite gradients (xlogy)', () => {
    const x = q.tensor([-1, -2], { dtype: 'float64', requiresGrad: true });
    const t = q.tensor([0, 1], { dtype: 'float64', requiresGrad: true });
    const l = q.klDiv(x, t, { reduction: 'sum' });
    expect(l.item()).toBeCloseTo(2, 14);
    l.backward();
    expect(Array.from(x.grad!.dataSync())).toEqual([-0, -1]);
    expect(t.grad!.hasNonFinite()).toBe(false);
  });
});

describe('binary cross entropy', () => {
  const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));
  const withLogits = fc.record({ shape: arb.shape({ maxRank: 3 }), weighted: fc.boolean(), pos: fc.boolean(), reduction: fc.constantFrom(...REDUCTIONS), nonContiguous: fc.boolean() });

  it('with logits matches −w·[pw·y·log σ(x) + (1−y)·log(1−σ(x))] and passes gradcheck (weight, posWeight, reductions)', () => {
    fc.assert(
      fc.property(withLogits, ({ shape, weighted, pos, reduction, nonContiguous }) => {
        const x = f64(shape, -4, 4);
        const y = f64(shape, 0, 1);
        const last = shape.length ? [shape[shape.length - 1]!] : [];
        const w = weighted ? f64(shape, 0.5, 1.5) : undefined;
        const pw = pos ? f64(last, 0.5, 3) : undefined;
        const xv = Array.from(x.dataSync());
        const yv = Array.from(y.dataSync());
        const wv = w ? Array.from(w.dataSync()) : null;
        const pwv = pw ? Array.from(pw.dataSync()) : null;
        const per = xv.map((xi, i) => {
          const p = pwv ? pwv[i % pwv.length]! : 1;
          return -(wv ? wv[i]! : 1) * (p * yv[i]! * Math.log(sigmoid(xi)) + (1 - yv[i]!) * Math.log(1 - sigmoid(xi)));
        });
        const total = per.reduce((a, b) => a + b, 0);
        const want = reduction === 'none' ? per : reduction === 'sum' ? [total] : [total / per.length];
        const opts = { weight: w, posWeight: pw, reduction };
        assertAllclose(q.binaryCrossEntropyWithLogits(x, y, opts), want, { atol: 1e-10, rtol: 1e-10 });
        gradcheck((xx, yy) => q.binaryCrossEntropyWithLogits(xx, yy, opts), [x, y], { nonContiguous });
      }),
      { numRuns: 15 },
    );
    checkOp((x, y) => q.binaryCrossEntropyWithLogits(x, y), [[3, 4], [3, 4]], { range: [-1, 1] });
  });

  it('with logits is stable at |x| = 100 and has gradient σ(x) − y even at x = 0', () => {
    const x = q.tensor([100, -100, 0, 0], { dtype: 'float64', requiresGrad: true });
    const y = q.tensor([0, 1, 1, 0], { dtype: 'float64' });
    const l = q.binaryCrossEntropyWithLogits(x, y, { reduction: 'none' });
    assertAllclose(l, [100, 100, Math.LN2, Math.LN2], { atol: 1e-12 });
    l.sum().backward();
    assertAllclose(x.grad!, [1, -1, -0.5, 0.5], { atol: 1e-12 });
  });

  it('on probabilities matches −[y·log x + (1−y)·log(1−x)], clamps each log at −100, and passes gradcheck', () => {
    fc.assert(
      fc.property(arb.shape({ maxRank: 3 }), fc.constantFrom(...REDUCTIONS), fc.boolean(), (s, reduction, weighted) => {
        const x = f64(s, 0.05, 0.95);
        const y = f64(s, 0, 1);
        const w = weighted ? f64(s, 0.5, 1.5) : undefined;
        const yv = Array.from(y.dataSync());
        const wv = w ? Array.from(w.dataSync()) : null;
        const per = Array.from(x.dataSync()).map((xi, i) => -(wv ? wv[i]! : 1) * (yv[i]! * Math.log(xi) + (1 - yv[i]!) * Math.log(1 - xi)));
        const total = per.reduce((a, b) => a + b, 0);
        const want = reduction === 'none' ? per : reduction === 'sum' ? [total] : [total / per.length];
        assertAllclose(q.binaryCrossEntropy(x, y, { weight: w, reduction }), want, { atol: 1e-12 });
        gradcheck((xx, yy) => q.binaryCrossEntropy(xx, yy, { weight: w, reduction }), [x, y]);
      }),
      { numRuns: 12 },
    );
    expect(q.binaryCrossEntropy(q.tensor([0, 1]), q.tensor([1, 0]), { reduction: 'none' }).toArray()).toEqual([100, 100]);
    checkOp((x, y) => q.binaryCrossEntropy(x, y), [[3, 4], [3, 4]], { range: [0.1, 0.9] });
  });
});
