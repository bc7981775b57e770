/**
 * @file `loraLinear`, the merged-weight forward of a LoRA layer: its values and gradients equal
 * PEFT's two-branch form, it passes gradcheck and gradgradcheck in every input, and QLoRA layers
 * train through it only when the adapter sees the layer's own input (no dropout).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { assertAllclose, gradcheck, gradgradcheck } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';
import { Linear, Module } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const rnd = (s: number[], g: q.Generator, dtype: 'float32' | 'float64' = 'float64') => q.randn(s, { generator: g, dtype });
/** PEFT's forward: base branch plus the scaled adapter branch. */
const twoBranch = (x: Tensor, w0: Tensor, a: Tensor, b: Tensor, s: number, bias?: Tensor) => q.linear(x, w0, bias).add(q.linear(q.linear(x, a), b).mul(s));
const problem = fc.record({
  lead: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 2 }),
  inF: fc.integer({ min: 2, max: 7 }),
  out: fc.integer({ min: 2, max: 7 }),
  r: fc.integer({ min: 1, max: 4 }),
  s: fc.double({ min: 0.1, max: 4, noNaN: true }),
  seed: fc.nat(1000),
});

describe('loraLinear', () => {
  it('passes gradcheck and gradgradcheck in x, w0, lora_A, lora_B and the bias (float64, random shapes)', () => {
    fc.assert(
      fc.property(problem, ({ lead, inF, out, r, s, seed }) => {
        const g = new q.Generator(seed);
        const ins = [rnd([...lead, inF], g), rnd([out, inF], g), rnd([r, inF], g), rnd([out, r], g), rnd([out], g)];
        const f = (x: Tensor, w0: Tensor, a: Tensor, b: Tensor, bias: Tensor) => Q.loraLinear(x, w0, a, b, s, bias);
        gradcheck(f, ins);
        gradgradcheck((...xs: Tensor[]) => f(xs[0]!, xs[1]!, xs[2]!, xs[3]!, xs[4]!).pow(2), ins);
      }),
      { numRuns: 15 },
    );
  });

  it('equals the two-branch form in values and gradients (float32, max |Δ| ≤ 1e-5 relative)', () => {
    fc.assert(
      fc.property(problem, fc.boolean(), ({ lead, inF, out, r, s, seed }, withBias) => {
        const g = new q.Generator(seed);
        const [x, w0, a, b, bias] = [rnd([...lead, inF], g, 'float32'), rnd([out, inF], g, 'float32'), rnd([r, inF], g, 'float32'), rnd([out, r], g, 'float32'), rnd([out], g, 'float32')];
        const gy = rnd([...lead, out], g, 'float32');
        const run = (f: typeof twoBranch) => {
          const leaves = [x, a, b].map((t) => t.detach().requiresGrad_(true));
          const y = f(leaves[0]!, w0, leaves[1]!, leaves[2]!, s, withBias ? bias : undefined);
          y.backward(gy);
          return [y.detach(), ...leaves.map((l) => l.grad!)];
        };
        const want = run(twoBranch);
        const got = run((x2, w, a2, b2, s2, bi) => Q.loraLinear(x2, w, a2, b2, s2, bi));
        got.forEach((t, i) => {
          const scale = Math.max(1, want[i]!.abs().max().item());
          assertAllclose(t, want[i]!, { atol: 1e-5 * scale, rtol: 0 });
        });
      }),
      { numRuns: 30 },
    );
  });

  it('gives no gradient to a frozen w0 or lora_A and still the right ones to the rest', () => {
    const g = new q.Generator(3);
    const x = rnd([5, 6], g).requiresGrad_(true);
    const [w0, a] = [rnd([4, 6], g), rnd([2, 6], g)];
    const b = rnd([4, 2], g).requiresGrad_(true);
    Q.loraLinear(x, w0, a, b, 0.5).pow(2).sum().backward();
    const [x2, b2] = [x.detach().requiresGrad_(true), b.detach().requiresGrad_(true)];
    twoBranch(x2, w0, a, b2, 0.5).pow(2).sum().backward();
    assertAllclose(x.grad!, x2.grad!, { atol: 1e-12 });
    assertAllclose(b.grad!, b2.grad!, { atol: 1e-12 });
    expect(w0.grad).toBeNull();
    expect(a.grad).toBeNull();
  });

  it('names the shapes or dtypes that do not fit', () => {
    const g = new q.Generator(0);
    const [x, w0, a, b] = [rnd([3, 6], g), rnd([4, 6], g), rnd([2, 6], g), rnd([4, 2], g)];
    expect(() => Q.loraLinear(x, w0, rnd([2, 5], g), b, 1)).toThrow(/loraLinear: weight \[4, 6\], lora_A \[2, 5\] and lora_B \[4, 2\] do not fit/);
    expect(() => Q.loraLinear(x, w0, a, rnd([4, 3], g), 1)).toThrow(/lora_B \[4, 3\] do not fit/);
    expect(() => Q.loraLinear(rnd([3, 5], g), w0, a, b, 1)).toThrow(/loraLinear: input of shape \[3, 5\] has 5 features but the weight \[4, 6\] expects 6/);
    expect(() => Q.loraLinear(x.float(), w0, a, b, 1)).toThrow(/loraLinear: input float32, weight float64, lora_A float64 and lora_B float64 must share one dtype/);
  });
});

/** The names of the ops on the autograd graph behind t. */
function opsBehind(t: Tensor): Set<string> {
  const seen = new Set<NonNullable<Tensor['gradFn']>>();
  const todo = t.gradFn ? [t.gradFn] : [];
  while (todo.length) {
    const node = todo.pop()!;
    if (seen.has(node)) continue;
    seen.add(node);
    for (const e of node.edges) if (e?.node) todo.push(e.node);
  }
  return new Set([...seen].map((n) => n.name));
}

describe('QLoRA layers and loraLinear', () => {
  class Net extends Module {
    fc: Linear;
    constructor(g: q.Generator) {
      super();
      this.fc = this.registerModule('fc', new Linear(64, 12, { generator: g }));
    }
    forward(x: Tensor): Tensor {
      return this.fc.forward(x);
    }
  }

  it('train through the merged weight without dropout, and through two branches with it: the same gradients where dropout is inert', () => {
    const grads = (dropout: number) => {
      const g = new q.Generator(5);
      const m = Q.loraQuant(new Net(g), { method: 'qlora', rank: 3, alpha: 6, dropout, targets: ['fc'], generator: new q.Generator(6) });
      const [, layer] = Q.loraLayers(m)[0]!;
      q.noGrad(() => layer.loraB.copy_(q.randn(layer.loraB.shape, { generator: g }).mul(0.1)));
      // p = 1e-30 keeps every element (scaled by 1/(1-p) = 1): the two-branch path with the same values
      const x = q.randn([2, 5, 64], { generator: g });
      const y = m.forward(x);
      const ops = opsBehind(y);
      y.pow(2).sum().backward();
      return { ops, grads: [layer.loraA.grad!, layer.loraB.grad!] };
    };
    const [fused, branches] = [grads(0), grads(1e-30)];
    expect(fused.ops.has('loraLinear')).toBe(true);
    expect(branches.ops.has('loraLinear')).toBe(false);
    fused.grads.forEach((t, i) => assertAllclose(t, branches.grads[i]!, { atol: 1e-4, rtol: 1e-4 }));
  });

  it('dequantize the base from cached scales bit for bit as from a fresh decode, and follow any write to or replacement of a base buffer', () => {
    const bits = (t: Tensor) => Array.from(t.contiguous().dataSync());
    const layerOf = (seed: number) => Q.loraLayers(Q.loraQuant(new Net(new q.Generator(seed)), { method: 'qlora', rank: 3, alpha: 6, targets: ['fc'] }))[0]![1] as Q.QLoraLinear;
    const [l, other] = [layerOf(1), layerOf(2)];
    // before any baseWeight call nothing is cached: dequantizedWeight decodes the scales afresh
    const fresh = [l, other].map((m) => bits(m.baseLayer.dequantizedWeight()));
    expect(bits(l.baseWeight())).toEqual(fresh[0]);
    expect(bits(l.baseWeight())).toEqual(fresh[0]);
    const cached = l.baseLayer.packedWeight();
    expect(l.baseLayer.packedWeight()).toBe(cached);
    // in-place writes to every base buffer (the other layer's codes and double-quantized scales)
    const buffers = Object.entries(l.baseState()).filter(([k]) => k !== 'bias');
    expect(buffers.map(([k]) => k)).toEqual(expect.arrayContaining(['weightCodes', 'weightScale', 'weightScaleSecond']));
    q.noGrad(() => { for (const [k, t] of buffers) t.copy_(other.baseState()[k]!); });
    expect(l.baseLayer.packedWeight()).not.toBe(cached);
    expect(bits(l.baseWeight())).toEqual(fresh[1]);
    // a write to one buffer alone (the second-level scales) reaches W0 too
    const before = bits(l.baseWeight());
    q.noGrad(() => l.baseLayer.weightScaleSecond!.mul_(2));
    expect(bits(l.baseWeight())).not.toEqual(before);
    // a replaced buffer: back to the first layer's own base
    const first = layerOf(1);
    for (const [k] of buffers) (l.baseLayer as unknown as Record<string, Tensor>)[k] = first.baseState()[k]!.clone();
    expect(bits(l.baseWeight())).toEqual(fresh[0]);
  });

  it('merge the packed base straight from its codes (loraLinearPacked) bit for bit as loraLinear on baseWeight(), in values, gradients and a backward that builds a graph', () => {
    const bits = (t: Tensor) => Array.from(t.contiguous().dataSync());
    const g = new q.Generator(9);
    const m = Q.loraQuant(new Net(g), { method: 'qlora', rank: 3, alpha: 6, targets: ['fc'], generator: new q.Generator(10) });
    const [, layer] = Q.loraLayers(m)[0]! as [string, Q.QLoraLinear];
    q.noGrad(() => layer.loraB.copy_(q.randn(layer.loraB.shape, { generator: g }).mul(0.1)));
    const packed = layer.baseLayer.packedWeight()!;
    expect(packed).not.toBeNull();
    const x0 = q.randn([2, 5, 64], { generator: g });
    const run = (f: (x: Tensor, a: Tensor, b: Tensor) => Tensor) => {
      const [x, a, b] = [x0, layer.loraA, layer.loraB].map((t) => t.detach().requiresGrad_(true));
      const y = f(x!, a!, b!);
      // first-order gradients, then the gradient of their norm (double backward through loraLinear)
      const [gx, ga, gb] = q.gradOf([y.pow(2).sum()], [x!, a!, b!], { createGraph: true });
      const [ggx, gga, ggb] = q.gradOf([gx!.pow(2).sum().add(ga!.pow(2).sum()).add(gb!.pow(2).sum())], [x!, a!, b!]);
      return [y, gx!, ga!, gb!, ggx!, gga!, ggb!].map(bits);
    };
    const fused = run((x, a, b) => Q.loraLinearPacked(x, { weight: packed, w0: () => layer.baseWeight() }, a, b, layer.scaling, layer.baseLayer.bias));
    const plain = run((x, a, b) => Q.loraLinear(x, layer.baseWeight(), a, b, layer.scaling, layer.baseLayer.bias));
    fused.forEach((v, i) => expect(v).toEqual(plain[i]));
    // the layer's own forward takes the packed path
    expect(bits(layer.forward(x0))).toEqual(bits(Q.loraLinear(x0, layer.baseWeight(), layer.loraA, layer.loraB, layer.scaling, layer.baseLayer.bias)));
  });
});
