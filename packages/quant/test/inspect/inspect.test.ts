import { describe, expect, it } from 'vitest';
import { manualSeed, noGrad, randn, tensor } from '@qgrad/core';
import { Linear, ReLU, Sequential } from '@qgrad/nn';
import {
  bitsPerParameter, convert, formatErrorTable, histogramSvg, histogramVegaLite, OscillationTracker, prepareQAT, QuantLinear,
  quantizationError, weightHistogram,
} from '@qgrad/quant';

/** A 1×4 layer on a static per-tensor int8 grid with step 1, so codes are round(w). */
function unitLayer() {
  const m = new Sequential(new Linear(4, 1, { bias: false }));
  prepareQAT(m, { default: { weight: { bits: 8, granularity: 'tensor', estimator: 'ste', scale: 'fixed' } } });
  const q = m.at(0) as QuantLinear;
  noGrad(() => q.weightQuantizer!.scale!.fill_(1));
  const set = (v: number[]) => noGrad(() => q.weight.copy_(tensor([v])));
  return { m, q, set };
}

describe('OscillationTracker', () => {
  it('counts flips and oscillations on a constructed sequence of weight updates', () => {
    const { m, set } = unitLayer();
    const osc = new OscillationTracker(m);
    // weight 0: k, k+1, k, k+1, k → 4 flips, 3 oscillations; weight 1: monotone drift → 4 flips, 0;
    // weight 2: k, k+1, k+1, k+1, k → 2 flips, 1 oscillation (no-change steps keep the direction); weight 3 still
    const seq = [[0.1, 0, 0, 5], [1.2, 1, 1, 5], [-0.2, 2, 1, 5], [0.9, 3, 1, 5], [0, 4, 0, 5]];
    for (const v of seq) {
      set(v);
      osc.update();
    }
    const [r] = osc.report();
    expect(r).toMatchObject({ name: '0', numel: 4, steps: 4, flips: 10, oscillations: 4, frozen: 0 });
    expect(r!.flipRate).toBeCloseTo(10 / 16, 12);
    expect(r!.oscillationRate).toBeCloseTo(4 / 16, 12);
  });

  it('freezes a weight that oscillates too often, after which its code never changes', () => {
    const { m, q, set } = unitLayer();
    const osc = new OscillationTracker(m, { momentum: 0.5, freezeThreshold: 0.3 });
    for (const v of [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]) {
      set(v);
      osc.update();
    }
    // step 2 oscillates: ema = 0.5 > 0.3 ⇒ frozen at R(ema of the code) = R(0.25·0 + … ) = 0
    expect(osc.report()[0]!.frozen).toBe(1);
    for (const v of [[3, 1, 0, 0], [-2, 2, 0, 0], [7, 3, 0, 0]]) {
      set(v);
      osc.update();
      expect(Array.from(q.weightQuantizer!.codes(q.weight).dataSync())).toEqual([0, v[1]!, 0, 0]);
    }
    expect(q.weight.grad).toBeNull();
    q.forward(tensor([[1, 1, 1, 1]])).sum().backward();
    expect(Array.from(q.weight.grad!.dataSync())).toEqual([0, 1, 1, 1]); // a frozen weight gets no gradient
  });
});

describe('bitsPerParameter', () => {
  it('counts a mixed model exactly, before and after convert', () => {
    manualSeed(21);
    const model = new Sequential(new Linear(8, 4), new ReLU(), new Linear(4, 4), new Linear(4, 2));
    prepareQAT(model, {
      rules: [
        { match: '0', weight: { bits: 4 }, input: { bits: 8 } }, // 32×4 + 4 scales; 1 activation scale
        { match: '2', weight: { grid: 'ternary', granularity: { group: 2 } } }, // 16×log2 3 + 8 scales
      ],
    });
    // weights: 32·4 + 4·32 | biases 4·32 | act scale 32 | 16·log2(3) + 8·32 | bias 4·32 | fp layer 8·32 + 2·32
    const want = 32 * 4 + 4 * 32 + 4 * 32 + 32 + 16 * Math.log2(3) + 8 * 32 + 4 * 32 + 10 * 32;
    const r = bitsPerParameter(model);
    expect(r.params).toBe(66);
    expect(r.totalBits).toBeCloseTo(want, 9);
    expect(r.bitsPerParameter).toBeCloseTo(want / 66, 12);
    expect(r.totalStoredBits).toBeCloseTo(want - 16 * Math.log2(3) + 32, 9); // ternary stored in 2-bit fields
    expect(String(r)).toMatch(/entry\s+params\s+ideal bits\s+stored bits/);
    expect(String(r)).toMatch(/2\.weight\s+16\s+281\.359\s+288\s+ternary/);
    model.forward(randn([2, 8])); // initialises the activation scale
    convert(model);
    const c = bitsPerParameter(model);
    expect(c.params).toBe(66);
    expect(c.totalBits).toBeCloseTo(want, 9);
    expect(c.totalStoredBits).toBeCloseTo(r.totalStoredBits, 9);
  });
});

describe('quantization error and histograms', () => {
  it('reports MSE and SQNR per layer (infinite on the grid)', () => {
    const { m, set } = unitLayer();
    set([1, -2, 3, 0]);
    expect(quantizationError(m)[0]).toMatchObject({ name: '0', numel: 4, mse: 0, sqnrDb: Infinity });
    set([1.25, -2, 3, 0]);
    const e = quantizationError(m)[0]!;
    expect(e.mse).toBeCloseTo(0.0625 / 4, 9);
    expect(e.sqnrDb).toBeCloseTo(10 * Math.log10((1.5625 + 4 + 9) / 0.0625), 6);
    expect(formatErrorTable([e])).toMatch(/layer\s+numel\s+mse\s+sqnr dB\n0\s+4/);
  });

  it('histograms weights in grid units against the levels and renders SVG and vega-lite', () => {
    manualSeed(22);
    const m = new Sequential(new Linear(16, 8));
    prepareQAT(m, { default: { weight: { bits: 2, granularity: 'channel' } } });
    const q = m.at(0) as QuantLinear;
    const h = weightHistogram(q.weight, q.weightQuantizer!, { bins: 20 });
    expect(h.counts.reduce((a, b) => a + b, 0)).toBe(128);
    expect(h.levels).toEqual([-2, -1, 0, 1]);
    expect(h.edges[0]).toBeCloseTo(-3.5, 12);
    expect(h.edges[20]).toBeCloseTo(2.5, 12);
    expect(h.clippedFraction).toBe(0); // LSQ's init s = 2·mean|w| spans uniform weights within [−1, 1] steps
    noGrad(() => q.weightQuantizer!.scale!.mul_(0.25));
    expect(weightHistogram(q.weight, q.weightQuantizer!).clippedFraction).toBeGreaterThan(0);
    const svg = histogramSvg(h, { title: 'fc <0>' });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<rect/g)!.length).toBe(20);
    expect(svg).toContain('fc &lt;0&gt;');
    const spec = histogramVegaLite(h) as { layer: { data: { values: unknown[] } }[] };
    expect(spec.layer[0]!.data.values.length).toBe(20);
    expect(spec.layer[1]!.data.values.length).toBe(4);
  });
});

describe('inspection on non-integer grids', () => {
  it('tracks NF4 level indices, freezes on an NF4 level, and histograms against the NF4 levels', () => {
    const m = new Sequential(new Linear(4, 1, { bias: false }));
    prepareQAT(m, { default: { weight: { grid: 'nf4', granularity: 'tensor', scale: 'fixed' } } });
    const q = m.at(0) as QuantLinear;
    noGrad(() => q.weightQuantizer!.scale!.fill_(1));
    const set = (v: number[]) => noGrad(() => q.weight.copy_(tensor([v])));
    const osc = new OscillationTracker(m, { momentum: 0.5, freezeThreshold: 0.3 });
    // weight 0 moves between NF4 levels 7 (0) and 8 (0.0796) and back; the others stay put
    for (const v of [[0, 1, -1, 0.5], [0.08, 1, -1, 0.5], [0, 1, -1, 0.5]]) {
      set(v);
      osc.update();
    }
    expect(osc.report()[0]).toMatchObject({ flips: 2, oscillations: 1, frozen: 1 });
    set([0.3, 1, -1, 0.5]);
    expect(noGrad(() => q.forward(tensor([[1, 0, 0, 0]]))).item()).toBe(0); // pinned to level 7 = 0
    const h = weightHistogram(q.weight, q.weightQuantizer!, { bins: 10 });
    expect(h.levels.length).toBe(16);
    expect(h.levels[0]).toBe(-1);
  });
});
