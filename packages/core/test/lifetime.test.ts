/**
 * @file What the user can still reach is never recycled: retained gradients over several passes,
 * tensors made inside gradient hooks, read() after recycling; backward's options as PyTorch
 * spells them; the allocation limit; moving tensors between backends.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { dispose, keep, memory, setMaxTensorBytes, Tensor, tidy, withBackend } from '@qgrad/core';

// above the pool's minimum size, so recycled buffers really are handed to later tensors
const N = 8192;
const input = () => q.randn([N], { generator: new q.Generator(1) }).requiresGrad_(true);

describe('tensors the user keeps across backward passes', () => {
  it('retainGrad over two backward passes accumulates into a readable .grad', () => {
    const x = input();
    const h = x.mul(3);
    h.retainGrad();
    const y = h.sin().sum();
    y.backward(undefined, { retainGraph: true });
    const first = Array.from(h.grad!.dataSync());
    y.backward();
    // more passes that would reuse a wrongly recycled buffer
    for (let i = 0; i < 3; i++) x.mul(2).exp().sum().backward();
    expect(Array.from(h.grad!.dataSync())).toEqual(first.map((v) => Math.fround(v + v)));
  });

  it('keeps tensors created inside a gradient hook, read through .data and read()', async () => {
    const x = input();
    const h = x.mul(2);
    const kept: Tensor[] = [];
    h.registerHook((g) => void kept.push(g.mul(2), g.add(1)));
    h.cos().sum().backward();
    const expected = Array.from(x.dataSync(), (v) => Math.fround(-Math.sin(Math.fround(2 * v))));
    for (let i = 0; i < 3; i++) x.mul(5).tanh().mul(x).sum().backward();
    expect(Array.from(await kept[0]!.data())).toEqual(expected.map((v) => Math.fround(2 * v)));
    expect(Array.from(kept[1]!.dataSync())).toEqual(expected.map((v) => Math.fround(v + 1)));
  });

  it('keeps tensors created inside a leaf hook and replacement gradients a hook returns', () => {
    const x = input();
    const seen: Tensor[] = [];
    x.registerHook((g) => {
      seen.push(g.neg());
      return g.mul(0.5);
    });
    x.square().sum().backward();
    for (let i = 0; i < 3; i++) x.mul(3).sum().backward();
    expect(Array.from(seen[0]!.dataSync())).toEqual(Array.from(x.dataSync(), (v) => -Math.fround(2 * v)));
  });
});

describe('leaf hooks', () => {
  it('run once on the summed gradient of a leaf used twice, as in PyTorch', () => {
    const x = q.tensor([1, -2, 3], { requiresGrad: true });
    const seen: number[][] = [];
    x.registerHook((g) => {
      seen.push(g.toArray() as number[]);
      return g.clamp(-3, 3); // a clip on the whole gradient, not on each partial
    });
    x.mul(x).sum().backward(); // two partials of x each
    expect(seen).toEqual([[2, -4, 6]]);
    expect(x.grad!.toArray()).toEqual([2, -3, 3]);
    const [gx] = q.gradOf([x.mul(x).sum()], [x]);
    expect(seen[1]).toEqual([2, -4, 6]);
    expect(gx!.toArray()).toEqual([2, -3, 3]);
  });
});

describe('use after release', () => {
  it('await data() throws like dataSync() instead of returning another tensor\'s values', async () => {
    let t: Tensor | null = null;
    tidy('inner', () => {
      t = q.randn([N]).mul(2);
    });
    q.randn([N]).mul(3); // takes the pooled buffer
    await expect(t!.data()).rejects.toThrow(/data: a float32 tensor of shape \[8192\] made by '\w+' was used after the tidy\('inner'\) that created it ended; return it from the function \(or keep\(\) it\)/);
    expect(() => t!.dataSync()).toThrow(/dataSync: .*tidy\('inner'\)/);
  });
});

describe('tidy, keep, dispose and memory()', () => {
  it('tidy releases what is neither returned nor kept; results nested in arrays and objects survive', () => {
    const x = q.randn([64, 64]);
    let inner: Tensor | null = null;
    let cached: Tensor | null = null;
    const before = memory().buffers;
    const { a, list } = tidy(() => {
      inner = x.mul(2);
      cached = keep(x.mul(4));
      return { a: inner.add(1), list: [x.sub(1), new Map([['m', x.neg()]])] };
    });
    expect(() => inner!.dataSync()).toThrow(/tidy/);
    expect(cached!.dataSync()[0]).toBe(Math.fround(x.dataSync()[0]! * 4));
    expect(a.dataSync()[0]).toBe(Math.fround(Math.fround(x.dataSync()[0]! * 2) + 1));
    expect((list[1] as Map<string, Tensor>).get('m')!.dataSync()[0]).toBe(-x.dataSync()[0]!);
    expect(memory().buffers - before).toBe(4); // a, x - 1, -x and the kept one
  });

  it('a nested tidy hands its result to the enclosing one, which releases it unless it returns it too', () => {
    const before = memory().buffers;
    for (let i = 0; i < 5; i++) tidy(() => void tidy(() => q.randn([N])).sum());
    expect(memory().buffers).toBe(before);
    // returned through both scopes, it survives; a tensor made before them is never released by them
    const outside = q.randn([N]);
    const [inner, same] = tidy(() => tidy(() => [q.randn([N]).mul(2), outside]));
    expect(memory().buffers).toBe(before + 2);
    expect(same).toBe(outside);
    expect(inner!.dataSync().length).toBe(N);
    expect(outside.dataSync().length).toBe(N);
    dispose([inner, outside]);
    expect(memory().buffers).toBe(before);
  });

  it('tidy keeps leaf gradients written by a backward pass inside it', () => {
    const w = q.randn([32, 32]).requiresGrad_(true);
    const loss = tidy(() => {
      const l = w.mul(w).sum();
      l.backward();
      return l.item();
    });
    expect(loss).toBeGreaterThan(0);
    expect(w.grad!.sub(w.mul(2)).abs().max().item()).toBe(0);
  });

  it('tidy refuses an async function', () => {
    expect(() => tidy(async () => q.ones([2]))).toThrow(/tidy: the function returned a Promise/);
  });

  it('dispose releases at once, memory() counts it, and a later use names dispose()', () => {
    const before = memory();
    const t = q.randn([100, 100], { dtype: 'float64' });
    expect(memory().buffers).toBe(before.buffers + 1);
    expect(memory().bytes).toBe(before.bytes + 80000);
    const v = t.reshape(-1);
    dispose([t]);
    expect(memory().buffers).toBe(before.buffers);
    expect(() => v.sum()).toThrow(/was used after dispose\(\) released it/);
  });

  it('does not track small tensors: they are garbage-collected arrays, cheap to drop', () => {
    const a = q.ones([4]);
    const before = memory().buffers;
    for (let i = 0; i < 1000; i++) a.add(i);
    expect(memory().buffers).toBe(before);
    expect(a.storage.owned).toBe(false);
    expect(q.ones([4096]).storage.owned).toBe(q.getBackend() !== 'js'); // wasm heap block: tracked
  });

  it('a training loop holds live buffers flat from one step to the next', () => {
    const g = new q.Generator(0);
    const w = q.randn([64, 64], { generator: g }).requiresGrad_(true);
    const x = q.randn([32, 64], { generator: g });
    const counts: number[] = [];
    for (let step = 0; step < 6; step++) {
      tidy(() => {
        dispose(w.grad);
        w.grad = null;
        const loss = x.matmul(w).relu().square().mean();
        loss.backward();
        q.noGrad(() => w.sub_(w.grad!.mul(0.01)));
      });
      counts.push(memory().buffers);
    }
    expect(new Set(counts).size).toBe(1); // w, x and w.grad only: every activation was released
  });
});

describe('backward options', () => {
  it('accepts an options object alone, as backward(create_graph=True) reads in PyTorch', () => {
    const w = q.tensor([0.5, -1, 2], { dtype: 'float64', requiresGrad: true });
    w.pow(3).sum().backward({ createGraph: true });
    const g = w.grad!;
    expect(g.requiresGrad).toBe(true);
    w.grad = null;
    g.sum().backward();
    expect(w.grad!.toArray()).toEqual([3, -6, 12]); // d/dw Σ 3w² = 6w
  });

  it('accepts (grad, options) and (null, options), and rejects what is neither', () => {
    const x = q.tensor([1, 2], { requiresGrad: true });
    const y = x.mul(x);
    y.backward(q.tensor([1, 1]), { retainGraph: true });
    y.sum().backward(null, {});
    expect(x.grad!.toArray()).toEqual([4, 8]);
    expect(() => y.sum().backward({ creatGraph: true } as never)).toThrow(/backward: unknown option 'creatGraph' \(known: createGraph, retainGraph\)/);
    expect(() => y.backward([1, 1] as never)).toThrow(/backward: expected a gradient Tensor or an options object .* got an array/);
    expect(() => y.sum().backward({} as never, {})).toThrow(/options were given twice/);
  });
});

describe('allocation limit', () => {
  let prev = 0;
  afterEach(() => void (prev && setMaxTensorBytes(prev)));
  it('is a clear error before any allocation, naming the op, shape, size and how to raise it', () => {
    expect(() => q.zeros([1e5, 1e5])).toThrow(/a float32 tensor of shape \[100000, 100000\] needs 37\.3 GiB, more than the limit of .* GiB .*setMaxTensorBytes\(\) or QGRAD_MAX_TENSOR_BYTES/);
    const a = q.ones([16, 16]);
    const b = q.ones([16, 17]);
    prev = setMaxTensorBytes(1024);
    expect(q.ones([256]).numel()).toBe(256); // exactly 1 KiB
    expect(() => q.ones([257])).toThrow(/^empty: a float32 tensor of shape \[257\] needs 1028 bytes, more than the limit of 1024 bytes/);
    expect(() => a.matmul(b)).toThrow(/^matmul: a float32 tensor of shape \[16, 17\]/);
    expect(() => setMaxTensorBytes(0)).toThrow(/setMaxTensorBytes: the limit must be a positive number of bytes, got 0/);
  });
});

describe('moving between backends', () => {
  it('x.to(backend) copies to that backend and sends the gradient back', () => {
    const x = withBackend('wasm', () => q.tensor([1, 2, 3], { requiresGrad: true }));
    const y = x.to('js');
    expect(y.device).toBe('js');
    expect(x.to('wasm')).toBe(x);
    y.mul(y).sum().backward();
    expect(x.grad!.device).toBe('wasm');
    expect(x.grad!.toArray()).toEqual([2, 4, 6]);
  });

  it('names both vocabularies for a target that is neither a dtype nor a backend', () => {
    expect(() => q.ones([2]).to('float16' as never)).toThrow(/to: 'float16' is neither a dtype \(float32, float64, int32, int8, uint8\) nor a backend \(js, wasm, gpu\)/);
  });

  it('tells how to move tensors when an op mixes backends', () => {
    const a = withBackend('js', () => q.ones([2]));
    const b = withBackend('wasm', () => q.ones([2]));
    expect(() => q.cat([a, b])).toThrow(/cat: inputs live on different backends \(js, wasm\); move them to one with \.to\('js'\) first/);
    expect(q.cat([a, b.to('js')]).toArray()).toEqual([1, 1, 1, 1]);
  });
});
