import { describe, expect, it } from 'vitest';
import { deserializeSafetensors, manualSeed, noGrad, randn, serializeSafetensors, tensor, type Tensor } from '@qgrad/core';
import { gradcheck } from '@qgrad/core/testing';
import { Conv2d, Embedding, Linear, Module, ReLU, Sequential } from '@qgrad/nn';
import {
  ActQuantizer, convert, prepareQAT, QuantConv2d, QuantEmbedding, QuantizedConv2d, QuantizedLinear, QuantLinear, WeightQuantizer,
  type QATConfig, type QuantLayerConfig, type WeightQuantConfig,
} from '@qgrad/quant';

const bits = (t: Tensor) => Array.from(new Uint32Array(Float32Array.from(t.dataSync()).buffer));

function shrinkScales(q: QuantLinear | QuantConv2d, x: Tensor): void {
  q.inputQuantizer!.initFrom(x);
  noGrad(() => {
    q.weightQuantizer!.scale!.mul_(0.5);
    q.inputQuantizer!.scale!.mul_(0.5);
  });
}

describe('QuantLinear and QuantConv2d', () => {
  it('passes gradients to the weight, the weight scale and zero point, the input scale and the input', () => {
    manualSeed(1);
    const q = QuantLinear.from(new Linear(6, 4), { weight: { bits: 4, asymmetric: true }, input: { bits: 4 } });
    const x = randn([5, 6]).requiresGrad_();
    shrinkScales(q, x); // so some values clip and the zero point sees a gradient
    q.forward(x).square().sum().backward();
    for (const t of [q.weight, q.bias!, q.weightQuantizer!.scale!, q.weightQuantizer!.zeroPoint!, q.inputQuantizer!.scale!, x]) {
      expect(t.grad).not.toBeNull();
      expect(Array.from(t.grad!.dataSync()).some((v) => v !== 0)).toBe(true);
    }
  });

  it('passes gradients to the weight, scale and input of a convolution', () => {
    manualSeed(2);
    const q = QuantConv2d.from(new Conv2d(2, 3, 3, { padding: 1 }), { weight: { bits: 4, granularity: { group: 6 } }, input: { bits: 8, estimator: 'lsq+', signed: false } });
    const x = randn([2, 2, 5, 5]).requiresGrad_();
    shrinkScales(q, x);
    q.forward(x).square().sum().backward();
    expect(q.weightQuantizer!.scale!.shape).toEqual([3, 3, 1]);
    for (const t of [q.weight, q.weightQuantizer!.scale!, q.inputQuantizer!.scale!, q.inputQuantizer!.zeroPoint!, x]) {
      expect(Array.from(t.grad!.dataSync()).some((v) => v !== 0)).toBe(true);
    }
  });

  it('gives the LSQ step gradient of the hand computation', () => {
    // w = [0.3, −0.9], s = 0.25, 2 bits [−2, 1]: u = [1.2, −3.6] → ∂ŵ/∂s = [R(1.2) − 1.2, qmin] = [−0.2, −2]
    // L = Σ ŵ·x with x = [1, 1]; g = 1/√(N·Qp) = 1/√2 ⇒ ∂L/∂s = −2.2/√2
    const l = new Linear(2, 1, { bias: false });
    noGrad(() => l.weight.copy_(tensor([[0.3, -0.9]])));
    const q = QuantLinear.from(l, { weight: { bits: 2, granularity: 'tensor' } });
    noGrad(() => q.weightQuantizer!.scale!.fill_(0.25));
    q.forward(tensor([[1, 1]])).sum().backward();
    expect(q.weightQuantizer!.scale!.grad!.item()).toBeCloseTo(-2.2 / Math.SQRT2, 6);
    expect(Array.from(q.weight.grad!.dataSync())).toEqual([1, 0]); // clipped: −0.9 lies below −2·0.25
  });

  it('gives the LSQ input-step gradient with N = numel or N = features', () => {
    const x = tensor([[0.3, 0.9], [0.1, 2.0]]);
    for (const [policy, n] of [['numel', 4], ['paper', 2]] as const) {
      const aq = new ActQuantizer({ bits: 2, signed: false, gradScalePolicy: policy }); // [0, 3]
      aq.initFrom(x);
      noGrad(() => aq.scale!.fill_(0.5));
      aq.forward(x).sum().backward();
      // u = [0.6, 1.8, 0.2, 4]: R(u) − u = [0.4, 0.2, −0.2], above: qmax = 3 ⇒ Σ = 3.4
      expect(aq.scale!.grad!.item()).toBeCloseTo(3.4 / Math.sqrt(n * 3), 6);
    }
  });

  it('initialises weight scales with the chosen rule (absmean ternary, median, LSQ)', () => {
    const w = tensor([[0.5, -1.0, 0.1, 2.0]]);
    const t = new WeightQuantizer(w.shape, { grid: 'ternary', scale: 'fixed', granularity: 'tensor' });
    t.initFrom(w);
    expect(t.scale!.item()).toBeCloseTo(0.9, 6);
    const m = new WeightQuantizer(w.shape, { grid: 'ternary', scale: { mode: 'fixed', rule: 'median' } });
    m.initFrom(w);
    expect(m.scale!.item()).toBeCloseTo(0.75, 6);
    const l = new WeightQuantizer(w.shape, { bits: 4 });
    l.initFrom(w);
    expect(l.scale!.item()).toBeCloseTo((2 * 0.9) / Math.sqrt(7), 6);
    expect(Array.from(t.forward(w).dataSync()).map((v) => +v.toFixed(6))).toEqual([0.9, -0.9, 0, 0.9]);
  });

  it('differentiates the HESTIA soft quantizer through its absmean normaliser (float64 gradcheck)', () => {
    manualSeed(9);
    const w = randn([3, 4], { dtype: 'float64' }).requiresGrad_();
    const q = new WeightQuantizer(w.shape, { grid: 'ternary', granularity: 'channel', soft: { temperature: 0.5 } });
    q.soft!.pressure = 0.7;
    expect(gradcheck((v) => q.forward(v), [w]).ok).toBe(true);
    q.soft!.temperature = 0; // hard absmean ternary with identity STE
    q.soft!.pressure = 1;
    const m = w.abs().mean(1, true);
    expect(Array.from(q.forward(w).div(m).dataSync()).every((v) => [-1, 0, 1].some((l) => Math.abs(v - l) < 1e-12))).toBe(true);
  });

  it('quantizes embedding rows and names bad group sizes', () => {
    manualSeed(3);
    const e = QuantEmbedding.from(new Embedding(5, 8), { weight: { bits: 4, granularity: { group: 4 } } });
    const y = e.forward(tensor([[1, 3]], { dtype: 'int32' }));
    expect(y.shape).toEqual([1, 2, 8]);
    expect(() => new WeightQuantizer([4, 6], { granularity: { group: 4 } })).toThrow(/WeightQuantizer: axis 1 of size 6 \(shape \[4, 6\]\) does not split into groups of 4/);
  });
});

class Net extends Module {
  embed: Embedding;
  encoder: Sequential;
  conv: Conv2d;
  head: Linear;
  constructor() {
    super();
    this.embed = this.registerModule('embed', new Embedding(10, 8));
    this.encoder = this.registerModule('encoder', new Sequential(new Linear(8, 16), new ReLU(), new Linear(16, 8)));
    this.conv = this.registerModule('conv', new Conv2d(1, 2, 3));
    this.head = this.registerModule('head', new Linear(8, 3));
  }
  forward(x: Tensor): Tensor {
    return this.head.forward(this.encoder.forward(x));
  }
}

describe('prepareQAT', () => {
  it('replaces exactly the matching modules, honours skip lists and lists them in its summary', () => {
    manualSeed(4);
    const net = new Net();
    const headWeight = net.head.weight;
    const summary = prepareQAT(net, {
      rules: [
        { match: 'head', weight: { bits: 8 } },
        { match: /^encoder\.\d+$/, types: ['Linear'], weight: { bits: 4 }, input: { bits: 4, signed: false } },
      ],
      default: { weight: { bits: 6 } },
      skip: ['conv', 'encoder.2'],
    });
    expect(net.head).toBeInstanceOf(QuantLinear);
    expect(net.head.weight).toBe(headWeight); // shared, not copied
    expect((net.head as unknown as QuantLinear).weightQuantizer!.grid.label).toBe('int8');
    expect(net.encoder.at(0)).toBeInstanceOf(QuantLinear);
    expect((net.encoder.at(0) as QuantLinear).inputQuantizer!.grid.label).toBe('uint4');
    expect(net.encoder.at(2)).toBeInstanceOf(Linear);
    expect(net.conv).toBeInstanceOf(Conv2d);
    expect(net.embed).toBeInstanceOf(QuantEmbedding);
    expect(summary.quantized.sort()).toEqual(['embed', 'encoder.0', 'head']);
    expect(summary.skipped.sort()).toEqual(['conv', 'encoder.2']);
    const text = summary.toString();
    expect(text).toMatch(/head\s+Linear\s+27\s+int8 channel lsq learned\s+fp\s+0/);
    expect(text).toMatch(/encoder\.0\s+Linear\s+144\s+int4 channel lsq learned\s+uint4 tensor lsq learned\s+1/);
    expect(text).toMatch(/embed\s+Embedding\s+80\s+int6 channel lsq learned\s+fp\s+default/);
    expect(text).toMatch(/conv\s+Conv2d.*skipped/);
    expect(text).toMatch(/3 of 5 layers quantized/);
    expect(net.parameters()).toContain((net.head as unknown as QuantLinear).weightQuantizer!.scale);
  });

  it('matches globs within and across name parts', () => {
    manualSeed(5);
    const net = new Net();
    const s = prepareQAT(net, { rules: [{ match: 'enc*.*', weight: { bits: 4 } }] });
    expect(s.quantized).toEqual(['encoder.0', 'encoder.2']);
    const net2 = new Net();
    expect(prepareQAT(net2, { rules: [{ match: 'e*', weight: { bits: 4 } }] }).quantized).toEqual(['embed']);
    expect(prepareQAT(new Net(), { rules: [{ match: '**', types: ['Conv2d'], weight: { bits: 4 } }] }).quantized).toEqual(['conv']);
  });
});

const CASES: [string, QuantLayerConfig][] = [
  ['W8A8', { weight: { bits: 8 }, input: { bits: 8 } }],
  ['W4A4 per-channel', { weight: { bits: 4, granularity: 'channel' }, input: { bits: 4, signed: false } }],
  ['W4A4 per-group', { weight: { bits: 4, granularity: { group: 4 } }, input: { bits: 4, estimator: 'lsq+', signed: false } }],
  ['W4 asymmetric, A8 per-token', { weight: { bits: 4, asymmetric: true }, input: { bits: 8, granularity: 'token' } }],
  ['ternary absmean, A8 per-token', { weight: { grid: 'ternary' }, input: { bits: 8, granularity: 'token' } }],
  ['ternary median', { weight: { grid: 'ternary', scale: 'median' }, input: { bits: 8 } }],
  ['binary', { weight: { grid: 'binary' }, input: { bits: 8 } }],
];

/** A few SGD steps so scales and weights move away from their initial values. */
function train(m: Module, x: Tensor, steps = 3): void {
  m.train();
  for (let i = 0; i < steps; i++) {
    m.zeroGrad();
    (m as unknown as { forward(x: Tensor): Tensor }).forward(x).square().mean().backward();
    noGrad(() => {
      for (const p of m.parameters()) if (p.grad) p.sub_(p.grad.mul(0.05));
    });
  }
  m.eval();
}

describe('convert', () => {
  for (const [name, cfg] of CASES) {
    it(`reproduces the fake-quantized eval output bit for bit: Linear and Conv2d, ${name}`, () => {
      manualSeed(6);
      const lin = new Sequential(QuantLinear.from(new Linear(8, 5), cfg));
      const x = randn([4, 8]);
      train(lin, x);
      const want = lin.forward(x);
      const codesBefore = (lin.at(0) as QuantLinear).weightQuantizer!.codes((lin.at(0) as QuantLinear).weight);
      expect(convert(lin, { kernel: 'dequantize' }).converted).toEqual(['0']);
      const ql = lin.at(0) as QuantizedLinear;
      expect(ql).toBeInstanceOf(QuantizedLinear);
      expect(ql.weightCodes.dtype).toMatch(/^u?int8$/); // packed bytes below 5 bits
      expect(Array.from(ql.codes().dataSync())).toEqual(Array.from(codesBefore.dataSync()));
      expect(bits(lin.forward(x))).toEqual(bits(want));

      const grouped = typeof cfg.weight?.granularity === 'object';
      const convCfg = grouped ? { ...cfg, weight: { ...cfg.weight, granularity: { group: 6 } } } : cfg; // groups within the 18 inputs per filter
      const conv = new Sequential(QuantConv2d.from(new Conv2d(2, 4, 3, { padding: 1 }), convCfg));
      const xc = randn([2, 2, 4, 4]);
      train(conv, xc);
      const wantC = conv.forward(xc);
      convert(conv, { kernel: 'dequantize' });
      expect(conv.at(0)).toBeInstanceOf(QuantizedConv2d);
      expect(bits(conv.forward(xc))).toEqual(bits(wantC));
    });
  }

  it('runs an integer-accumulation path that matches up to float rounding, exactly for power-of-two scales', () => {
    manualSeed(7);
    const m = new Sequential(QuantLinear.from(new Linear(16, 6), { weight: { bits: 8, granularity: { group: 8 } }, input: { bits: 8 } }));
    const x = randn([3, 16]);
    train(m, x, 2);
    convert(m);
    const q = m.at(0) as QuantizedLinear;
    const ref = Array.from(q.forward(x).dataSync());
    Array.from(q.integerForward(x).dataSync()).forEach((v, i) => expect(v).toBeCloseTo(ref[i]!, 5));
    noGrad(() => {
      q.weightScale.fill_(1 / 64);
      q.inputScale!.fill_(1 / 32);
    });
    expect(bits(q.integerForward(x))).toEqual(bits(q.forward(x)));
  });

  it('keeps learned scales through a safetensors stateDict round trip, and converts the same', () => {
    manualSeed(8);
    const cfg: QATConfig = { default: { weight: { bits: 4 }, input: { bits: 4, signed: false } } };
    const a = new Sequential(new Linear(8, 8), new ReLU(), new Linear(8, 3));
    prepareQAT(a, cfg);
    const x = randn([6, 8]).abs();
    train(a, x);
    const bytes = serializeSafetensors(a.stateDict());
    const b = new Sequential(new Linear(8, 8), new ReLU(), new Linear(8, 3));
    prepareQAT(b, cfg);
    b.loadStateDict(deserializeSafetensors(bytes).tensors);
    b.eval();
    const sa = (a.at(2) as QuantLinear).weightQuantizer!.scale!;
    const sb = (b.at(2) as QuantLinear).weightQuantizer!.scale!;
    expect(bits(sb)).toEqual(bits(sa));
    expect(bits((b.at(0) as QuantLinear).inputQuantizer!.scale!)).toEqual(bits((a.at(0) as QuantLinear).inputQuantizer!.scale!));
    expect(bits(b.forward(x))).toEqual(bits(a.forward(x)));
    convert(a);
    convert(b);
    expect(bits(b.forward(x))).toEqual(bits(a.forward(x)));
    // the converted model's own state (integer codes) survives safetensors too
    const c = deserializeSafetensors(serializeSafetensors(a.stateDict())).tensors;
    expect(c['0.weightCodes']!.dtype).toBe('uint8'); // 4-bit codes, two per byte
    expect(c['0.weightCodes']!.numel()).toBe(32);
    expect(Array.from(c['0.weightCodes']!.dataSync())).toEqual(Array.from((a.at(0) as QuantizedLinear).weightCodes.dataSync()));
  });
});

describe('HESTIA soft forward on any finite grid', () => {
  for (const weight of [{ grid: 'nf4', granularity: 'channel' }, { grid: 'int', bits: 3, scale: 'absmean' }, { grid: 'codebook', levels: [-1, -0.3, 0, 0.3, 1], scale: 'absmean' }, { grid: 'binary' }, { grid: 'e2m1', scale: 'absmax' }] as WeightQuantConfig[]) {
    it(`${weight.grid}: differentiable through the scale (float64 gradcheck) and the hard grid at T = 0, P = 1`, () => {
      manualSeed(10);
      const w = randn([3, 8], { dtype: 'float64' }).requiresGrad_();
      const q = new WeightQuantizer(w.shape, { ...weight, soft: { temperature: 0.4, pressure: 0.6 } }, 'fc', 'float64');
      expect(gradcheck((v) => q.forward(v), [w]).ok).toBe(true);
      q.soft!.temperature = 0;
      q.soft!.pressure = 1;
      const hard = new WeightQuantizer(w.shape, weight, 'fc', 'float64');
      expect(Array.from(q.forward(w).dataSync())).toEqual(Array.from(hard.forward(w).dataSync()));
      q.soft!.temperature = 1e-4; // nearly hard: within a hair of the grid
      const soft = Array.from(q.forward(w).dataSync());
      Array.from(hard.forward(w).dataSync()).forEach((v, i) => expect(soft[i]).toBeCloseTo(v, 3));
    });
  }
});
