import { describe, expect, it } from 'vitest';
import { Generator, manualSeed, memory, noGrad, withBackend, randn, tensor, type Tensor } from '@qgrad/core';
import { Linear, Module, SGD, Sequential, trainStep } from '@qgrad/nn';
import {
  calibrateHestia, cosineSchedule, exponentialSchedule, HESTIA_T0, HestiaScheduler, hessianTempScales, hestiaPressure, hestiaTemperature,
  hutchinsonTrace, linearSchedule, prepareQAT, QATPhase, QuantLinear, qatStartStep, wsdSchedule,
} from '@qgrad/quant';

describe('temperature schedules', () => {
  it('take their values at the key steps', () => {
    const lin = linearSchedule({ start: 1, end: 0, steps: 10 });
    expect([0, 5, 10, 20].map(lin)).toEqual([1, 0.5, 0, 0]);
    const cos = cosineSchedule({ start: 1, end: 0, steps: 10 });
    expect(cos(0)).toBe(1);
    expect(cos(5)).toBeCloseTo(0.5, 12);
    expect(cos(2.5)).toBeCloseTo((1 + Math.SQRT1_2) / 2, 12);
    expect(cos(10)).toBeCloseTo(0, 12);
    const exp = exponentialSchedule({ start: 1, end: 0.01, steps: 2 });
    expect(exp(1)).toBeCloseTo(0.1, 12);
    expect(exp(2)).toBeCloseTo(0.01, 12);
    expect(() => exponentialSchedule({ start: 1, end: 0, steps: 2 })).toThrow(/must be > 0/);
  });

  it("follows HESTIA's pressure and temperature schedule", () => {
    expect(hestiaPressure(0.1, 0.2)).toBeCloseTo(0.5, 12);
    expect(hestiaPressure(0.2, 0.2)).toBe(1);
    expect(hestiaPressure(0.9, 0.2)).toBe(1);
    const o = { annealRatio: 0.8, compressRatio: 0.2 };
    expect(hestiaTemperature(0.1, o, 0.7)).toBeCloseTo(HESTIA_T0 * 0.7, 12); // constant phase: T₀·ts
    expect(hestiaTemperature(0.6, o, 0.7)).toBeCloseTo(HESTIA_T0 * 0.5 * 0.7, 12); // halfway through the cosine anneal
    expect(hestiaTemperature(0.6, { ...o, style: 'cosine' }, 0.7)).toBeCloseTo(HESTIA_T0 * 0.5, 12); // ts dropped (HESTIA's code)
    expect(hestiaTemperature(0.6, { ...o, style: 'linear' }, 0.7)).toBeCloseTo(HESTIA_T0 * 0.5, 12);
    expect(hestiaTemperature(1, o, 0.7)).toBeCloseTo(0, 12);
    expect(() => hestiaTemperature(0.5, { annealRatio: 0.9, compressRatio: 0.2 })).toThrow(/must be ≤ 1/);
  });

  it('reproduces T₀ ≈ 0.3509 as the MSE-optimal ternary temperature for u ~ N(0, π/2)', () => {
    // ũ(u; T) = sinh(2u/T)/(cosh(2u/T) + ½e^{1/T}); minimise E[(ũ − u)²] by quadrature + golden search
    const sd = Math.sqrt(Math.PI / 2);
    const mse = (T: number) => {
      let acc = 0;
      const h = 0.01;
      for (let u = -6 * sd; u <= 6 * sd; u += h) {
        const a = 2 * u / T;
        const ut = Math.abs(a) > 30 ? Math.sign(a) : Math.sinh(a) / (Math.cosh(a) + 0.5 * Math.exp(1 / T));
        acc += (ut - u) ** 2 * Math.exp(-(u * u) / (2 * sd * sd)) * h;
      }
      return acc / (sd * Math.sqrt(2 * Math.PI));
    };
    let [lo, hi] = [0.1, 2];
    for (let i = 0; i < 50; i++) {
      const m1 = lo + (hi - lo) * 0.382;
      const m2 = lo + (hi - lo) * 0.618;
      if (mse(m1) < mse(m2)) hi = m2;
      else lo = m1;
    }
    expect((lo + hi) / 2).toBeCloseTo(HESTIA_T0, 3);
  });
});

describe('Hessian-trace temperatures (HESTIA)', () => {
  it('estimates the trace of a diagonal Hessian exactly', () => {
    const w = tensor([0.5, -1, 2], { dtype: 'float64', requiresGrad: true });
    const a = tensor([1, 3, 5], { dtype: 'float64' });
    const v = tensor([[1, 2], [3, 4]], { dtype: 'float64', requiresGrad: true });
    const [tw, tv] = hutchinsonTrace(() => w.square().mul(a).sum().add(v.pow(4).sum()), [w, v], { samples: 3, generator: new Generator(1) });
    expect(tw).toBeCloseTo(2 * 9, 10); // H = diag(2a)
    expect(tv).toBeCloseTo(12 * (1 + 4 + 9 + 16), 8); // d²v⁴ = 12v²
  });

  it('maps higher traces to smaller scales within (e^{−α}, 1), and α = 0 to 1', () => {
    const s = hessianTempScales([1, 10, 100]);
    expect(s[0]!).toBeGreaterThan(s[1]!);
    expect(s[1]!).toBeGreaterThan(s[2]!);
    for (const v of s) expect(v > Math.exp(-0.5) && v < 1).toBe(true);
    expect(hessianTempScales([1, 10], { alpha: 0 })).toEqual([1, 1]);
  });

  it('makes the higher-curvature layer of a tiny model colder', () => {
    manualSeed(11);
    class Two extends Module {
      a: Linear;
      b: Linear;
      constructor() {
        super();
        this.a = this.registerModule('a', new Linear(4, 3, { bias: false }));
        this.b = this.registerModule('b', new Linear(4, 3, { bias: false }));
      }
      forward(x: Tensor): Tensor {
        return this.a.forward(x).add(this.b.forward(x).mul(10)); // b's curvature is 100× a's
      }
    }
    const net = new Two();
    prepareQAT(net, { default: { weight: { grid: 'ternary', granularity: 'tensor', soft: { temperature: 0.35 } } } });
    const x = randn([16, 4]);
    const cal = calibrateHestia(net, () => net.forward(x).square().mean(), { samples: 4, generator: new Generator(2) });
    const [ca, cb] = cal;
    expect(ca!.name).toBe('a');
    expect(cb!.trace).toBeGreaterThan(ca!.trace * 20);
    expect(cb!.tempScale).toBeLessThan(ca!.tempScale);
    const sched = new HestiaScheduler(net, 100);
    sched.step(10);
    const wqa = (net.a as unknown as QuantLinear).weightQuantizer!;
    const qa = wqa.soft!;
    const qb = (net.b as unknown as QuantLinear).weightQuantizer!.soft!;
    expect(qa.pressure).toBe(0.5);
    expect(qb.effectiveTemperature).toBeLessThan(qa.effectiveTemperature); // colder
    expect(qb.effectiveTemperature).toBeCloseTo(HESTIA_T0 * cb!.tempScale, 12);
    sched.step(100);
    expect(qa.temperature).toBe(0);
    // at T = 0, P = 1 the quantizer is the hard absmean ternary
    const w = wqa.forward(net.a.weight);
    const m = net.a.weight.abs().mean().item();
    for (const v of w.dataSync()) expect([-m, 0, m].some((l) => Math.abs(l - v) < 1e-6)).toBe(true);
  });
});

describe('HESTIA inside training scopes', () => {
  it('trains through trainStep with the soft forward on, and calibration leaves nothing live', () => {
    // on wasm, where buffers of 4096 elements or more are counted by memory() until released
    withBackend('wasm', () => {
      manualSeed(12);
      const net = new Sequential(new Linear(64, 64, { bias: false }), new Linear(64, 2, { bias: false }));
      prepareQAT(net, { default: { weight: { grid: 'ternary', granularity: 'tensor', soft: { temperature: 0.35 } } } });
      const x = randn([64, 64]);
      const calibrate = () => calibrateHestia(net, () => net.forward(x).square().mean(), { samples: 3, generator: new Generator(3) });
      calibrate(); // makes the model's lazy caches (e.g. transposed weights) once
      const before = memory().buffers;
      calibrate();
      // each probe's double-backward graph is released as the probe ends, not left to the collector
      expect(memory().buffers).toBe(before);
      const opt = new SGD(net.parameters(), { lr: 0.01 });
      const sched = new HestiaScheduler(net, 10);
      sched.step(2); // T > 0, P < 1: the soft forward and its cached level table are in use
      // the level table made lazily inside the first step stays usable in the next ones
      const losses = [0, 1, 2].map(() =>
        trainStep(net, opt, () => {
          const l = net.forward(x).square().mean();
          opt.zeroGrad();
          l.backward();
          opt.step();
          return l.item();
        }),
      );
      expect(losses.every(Number.isFinite)).toBe(true);
    });
  });
});

describe('training schedules', () => {
  it('switches from full precision to QAT at a fraction of the steps, re-initialising scales', () => {
    manualSeed(12);
    const model = new Sequential(new Linear(4, 4));
    prepareQAT(model, { default: { weight: { bits: 4, granularity: 'tensor' }, input: { bits: 8 } } });
    const q = model.at(0) as QuantLinear;
    const phase = QATPhase.fromFraction(model, { totalSteps: 10, switchAt: 0.3 });
    expect(qatStartStep({ totalSteps: 10, switchAt: 0.3 })).toBe(3);
    expect(phase.step(0)).toBe(false);
    expect(q.weightQuantizer!.enabled).toBe(false);
    const x = randn([2, 4]);
    expect(Array.from(q.forward(x).dataSync())).toEqual(Array.from(noGrad(() => x.matmul(q.weight.t()).add(q.bias!)).dataSync()));
    noGrad(() => q.weight.mul_(3)); // "training" moves the weights
    phase.step(1);
    phase.step(2);
    expect(phase.step(3)).toBe(true);
    expect(q.weightQuantizer!.enabled).toBe(true);
    expect(q.weightQuantizer!.scale!.item()).toBeCloseTo((2 * q.weight.abs().mean().item()) / Math.sqrt(7), 6);
    expect(q.inputQuantizer!.isInitialized).toBe(false); // re-initialised from the next batch
  });

  it('fuses QAT with the learning-rate cooldown of a warmup–stable–decay schedule', () => {
    const lr = wsdSchedule({ lr: 1, totalSteps: 100, warmupSteps: 10, cooldownFraction: 0.2 });
    expect(lr(0)).toBeCloseTo(0.1, 12);
    expect(lr(9)).toBe(1);
    expect(lr(50)).toBe(1);
    expect(lr.cooldownStart).toBe(80);
    expect(lr(90)).toBeCloseTo(0.5, 12);
    expect(lr(100)).toBe(0);
    const phase = new QATPhase(new Sequential(new Linear(2, 2)), lr.cooldownStart);
    expect([79, 80].map((s) => phase.isQAT(s))).toEqual([false, true]);
  });
});
