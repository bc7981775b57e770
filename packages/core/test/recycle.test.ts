/**
 * @file Buffer recycling (dispatch.ts, the backward pass, scoped): results are the same
 * with and without it, bit for bit, over repeated passes that reuse dirty buffers; tensors that
 * escape a pass (results, leaf .grad, hook arguments, retained gradients) stay intact; using a
 * recycled buffer throws.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { Generator, gradOf as grad, scoped, setBufferRecycling, Tensor } from "@qgrad/core";

afterEach(() => setBufferRecycling(true));

/** A small network with shared subexpressions, a tied weight, broadcasting, views, matmuls and reductions. */
function lossOf(params: Tensor[], x: Tensor): Tensor {
  const [w1, b1, w2, g] = params as [Tensor, Tensor, Tensor, Tensor];
  const h = q.linear(x, w1, b1); // [8, 16, 64]
  const a = q.rmsNorm(h.mul(q.sigmoid(h)), [64], g); // silu, norm
  const s = q.softmax(q.matmul(a, a.transpose(-1, -2)).mul(0.1), -1); // [8, 16, 16]
  const y = q.matmul(s, a).add(a); // residual: the gradient of a arrives twice
  const z = q.linear(y.reshape(-1, 64), w2); // [128, 10]
  const tied = q.linear(a.reshape(-1, 64), w2).mean(); // w2 used twice: its gradient is a sum of two partials
  return q.crossEntropy(z, q.tensor(Array.from({ length: 128 }, (_, i) => i % 10), { dtype: 'int32' })).add(z.pow(2).mean()).add(tied);
}

function run(steps: number): number[][] {
  const g = new Generator(3);
  const params = [q.randn([64, 32], { generator: g }), q.randn([64], { generator: g }), q.randn([10, 64], { generator: g }), q.rand([64], { generator: g })].map((p) => p.mul(0.2).requiresGrad_(true));
  const x = q.randn([8, 16, 32], { generator: g });
  const out: number[][] = [];
  for (let s = 0; s < steps; s++) {
    for (const p of params) p.grad = null;
    const loss = lossOf(params, x);
    loss.backward();
    out.push([loss.item(), ...params.flatMap((p) => [...p.grad!.dataSync()])]);
    q.noGrad(() => params.forEach((p) => p.sub_(p.grad!.mul(0.01))));
  }
  return out;
}

describe('buffer recycling', () => {
  it('gives bit-identical losses and gradients to running without it, over passes that reuse buffers', () => {
    setBufferRecycling(false);
    const ref = run(4);
    setBufferRecycling(true);
    const got = run(4);
    expect(got.length).toBe(ref.length);
    for (let s = 0; s < ref.length; s++) expect(got[s]).toEqual(ref[s]);
  });

  it('keeps gradients that escape a pass: leaf .grad, functional results, hook arguments, retained grads', () => {
    const x = q.randn([64, 64]).requiresGrad_(true);
    const seen: Tensor[] = [];
    const h = x.mul(2);
    h.registerHook((g) => void seen.push(g));
    const m = h.exp();
    m.retainGrad();
    m.sin().sum().backward();
    const [gx] = grad([x.mul(3).sum()], [x]);
    const snapshot = [x.grad!.dataSync(), seen[0]!.dataSync(), m.grad!.dataSync(), gx!.dataSync()];
    // more passes that would reuse any wrongly recycled buffer (into a fresh x.grad)
    const leafGrad = x.grad!;
    x.grad = null;
    for (let i = 0; i < 3; i++) x.mul(5).exp().mul(x).sum().backward();
    expect(leafGrad.dataSync()).toEqual(snapshot[0]);
    expect(seen[0]!.dataSync()).toEqual(snapshot[1]);
    expect(m.grad!.dataSync()).toEqual(snapshot[2]);
    expect(gx!.dataSync()).toEqual(snapshot[3]);
    expect([...snapshot[3]!].every((v) => v === 3)).toBe(true);
  });

  it('keeps everything under createGraph, so double backward still works', () => {
    const x = q.tensor([0.5, -1.5], { dtype: 'float64', requiresGrad: true });
    const [g] = grad([x.pow(3).sum()], [x], { createGraph: true });
    const [h] = grad([g!.sum()], [x]);
    expect(h!.toArray()).toEqual([3, -9]); // d²/dx² x³ = 6x
  });

  it('scoped releases what the function made except what it keeps, and later use throws', () => {
    const a = q.randn([128, 64]);
    let temp: Tensor | null = null;
    const kept = scoped(
      () => {
        temp = a.mul(2);
        return temp.add(1);
      },
      (r) => [r],
      'the test scope',
    );
    expect(kept.sub(a.mul(2)).dataSync().every((v) => Math.abs(v - 1) < 1e-6)).toBe(true);
    expect(() => temp!.add(1)).toThrow(/used after the test scope released its buffer/);
  });
});
