import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import { Embedding, Linear, Module, ModuleDict, ModuleList, Parameter, ReLU, Sequential, LayerNorm, Dropout } from '@qgrad/nn';

class Affine extends Module {
  weight: Tensor;
  bias: Tensor | null;
  step: Tensor;
  scratch: Tensor;
  constructor(n: number) {
    super();
    this.weight = this.registerParameter('weight', q.ones([n]));
    this.bias = this.registerParameter('bias', null);
    this.step = this.registerBuffer('step', q.zeros([1], { dtype: 'int32' }));
    this.scratch = this.registerBuffer('scratch', q.zeros([n]), false);
  }
  forward(x: Tensor): Tensor {
    return x.mul(this.weight);
  }
}

class Net extends Module {
  body: Sequential;
  head: Linear;
  norm: Affine;
  constructor() {
    super();
    this.body = this.registerModule('body', new Sequential(new Linear(3, 4), new ReLU(), new Linear(4, 4)));
    this.head = this.registerModule('head', new Linear(4, 2, { bias: false }));
    this.norm = this.registerModule('norm', new Affine(2));
  }
  forward(x: Tensor): Tensor {
    return this.norm.forward(this.head.forward(this.body.forward(x)));
  }
}

describe('Module registration and traversal', () => {
  it('namedParameters lists dotted names in registration order, skipping null parameters', () => {
    const net = new Net();
    expect([...net.namedParameters()].map(([n]) => n)).toEqual(['body.0.weight', 'body.0.bias', 'body.2.weight', 'body.2.bias', 'head.weight', 'norm.weight']);
    expect(net.parameters().every((p) => p.requiresGrad && p.isLeaf)).toBe(true);
    expect([...net.namedBuffers()].map(([n]) => n)).toEqual(['norm.step', 'norm.scratch']);
    expect([...net.namedModules()].map(([n]) => n)).toEqual(['', 'body', 'body.0', 'body.1', 'body.2', 'head', 'norm']);
    expect([...net.namedChildren()].map(([n]) => n)).toEqual(['body', 'head', 'norm']);
  });

  it('a parameter shared by two modules is listed and counted once but saved under both names', () => {
    const emb = new Embedding(5, 3);
    const out = new Linear(3, 5, { bias: false });
    out.weight = emb.weight; // weight tying
    const m = new ModuleDict({ emb, out });
    expect(m.parameters()).toHaveLength(1);
    expect(m.numParameters()).toBe(15);
    expect(Object.keys(m.stateDict())).toEqual(['emb.weight', 'out.weight']);
  });

  it('reassigning a registered field is seen by the registry', () => {
    const l = new Linear(2, 2);
    const w = Parameter(q.zeros([2, 2]));
    l.weight = w;
    expect(l.parameters()[0]).toBe(w);
  });

  it('registration rejects duplicate names, dotted names and names that shadow methods', () => {
    class Bad extends Module {
      constructor(kind: number) {
        super();
        if (kind === 0) {
          this.registerParameter('w', q.ones([1]));
          this.registerBuffer('w', q.ones([1]));
        } else if (kind === 1) this.registerModule('a.b', new ReLU());
        else this.registerModule('train', new ReLU());
      }
    }
    expect(() => new Bad(0)).toThrow("registerBuffer: 'w' is already registered on Bad");
    expect(() => new Bad(1)).toThrow("registerModule: name 'a.b' must be non-empty and contain no '.'");
    expect(() => new Bad(2)).toThrow("registerModule: 'train' would shadow a method or property of Bad");
    expect(() => new ModuleDict({ keys: new ReLU() })).toThrow(/would shadow/);
  });

  it('train and eval switch every descendant', () => {
    const net = new Net();
    net.eval();
    expect([...net.modules()].every((m) => !m.training)).toBe(true);
    net.train();
    expect([...net.modules()].every((m) => m.training)).toBe(true);
  });

  it('zeroGrad clears the gradients of every parameter', () => {
    const net = new Net();
    net.forward(q.randn([2, 3])).sum().backward();
    expect(net.parameters().every((p) => p.grad !== null)).toBe(true);
    net.zeroGrad();
    expect(net.parameters().every((p) => p.grad === null)).toBe(true);
  });

  it('apply visits children before parents and numParameters counts elements', () => {
    const net = new Net();
    const order: string[] = [];
    net.apply((m) => order.push(m.constructor.name));
    expect(order).toEqual(['Linear', 'ReLU', 'Linear', 'Sequential', 'Linear', 'Affine', 'Net']);
    expect(net.numParameters()).toBe(3 * 4 + 4 + 4 * 4 + 4 + 4 * 2 + 2);
    net.head.requiresGrad_(false);
    expect(net.numParameters(true)).toBe(net.numParameters() - 8);
  });

  it('to(float64) casts floating parameters and buffers, leaving integer buffers alone', () => {
    const net = new Net().double();
    expect(net.parameters().every((p) => p.dtype === 'float64' && p.requiresGrad && p.isLeaf)).toBe(true);
    expect(net.norm.step.dtype).toBe('int32');
    expect(net.norm.scratch.dtype).toBe('float64');
    expect(net.forward(q.randn([1, 3], { dtype: 'float64' })).dtype).toBe('float64');
  });

  it('toString prints a PyTorch-style tree', () => {
    const net = new Net();
    expect(net.toString()).toBe(
      [
        'Net(',
        '  (body): Sequential(',
        '    (0): Linear(inFeatures=3, outFeatures=4, bias=true)',
        '    (1): ReLU()',
        '    (2): Linear(inFeatures=4, outFeatures=4, bias=true)',
        '  )',
        '  (head): Linear(inFeatures=4, outFeatures=2, bias=false)',
        '  (norm): Affine()',
        ')',
      ].join('\n'),
    );
    expect(new LayerNorm(4).toString()).toBe('LayerNorm([4], eps=0.00001, elementwiseAffine=true)');
    expect(new Dropout(0.1).toString()).toBe('Dropout(p=0.1)');
  });
});

describe('state dicts', () => {
  it('stateDict holds parameters and persistent buffers, sharing storage with the model', () => {
    const net = new Net();
    const sd = net.stateDict();
    expect(Object.keys(sd)).toEqual(['body.0.weight', 'body.0.bias', 'body.2.weight', 'body.2.bias', 'head.weight', 'norm.weight', 'norm.step']);
    expect(sd['head.weight']!.requiresGrad).toBe(false);
    q.noGrad(() => net.head.weight.fill_(3));
    expect(sd['head.weight']!.toArray()).toEqual([[3, 3, 3, 3], [3, 3, 3, 3]]);
  });

  it('loadStateDict copies values in place so a second model computes the same function', () => {
    q.manualSeed(1);
    const a = new Net();
    const b = new Net();
    const x = q.randn([5, 3]);
    expect(a.forward(x).sub(b.forward(x)).abs().amax().item()).toBeGreaterThan(0);
    const w = b.head.weight;
    const res = b.loadStateDict(a.stateDict());
    expect(res).toEqual({ missingKeys: [], unexpectedKeys: [] });
    expect(b.head.weight).toBe(w);
    expect(Array.from(b.forward(x).dataSync())).toEqual(Array.from(a.forward(x).dataSync()));
  });

  it('a state dict survives a safetensors round trip', () => {
    const a = new Net();
    const b = new Net();
    b.loadStateDict(q.deserializeSafetensors(q.serializeSafetensors(a.stateDict())).tensors);
    const x = q.randn([2, 3]);
    expect(Array.from(b.forward(x).dataSync())).toEqual(Array.from(a.forward(x).dataSync()));
  });

  it('size mismatches are named with both shapes and nothing is written', () => {
    const small = new Sequential(new Linear(2, 4));
    const big = new Sequential(new Linear(3, 4));
    const before = Array.from(small.at(0).parameters()[1]!.dataSync());
    expect(() => small.loadStateDict(big.stateDict())).toThrow('loadStateDict: size mismatch for 0.weight: checkpoint [4, 3], model [4, 2]');
    expect(Array.from(small.at(0).parameters()[1]!.dataSync())).toEqual(before);
  });

  it('missing and unexpected keys are listed; strict false returns them instead', () => {
    const net = new Net();
    const sd = net.stateDict();
    delete sd['body.0.bias'];
    delete sd['norm.step'];
    sd['extra.weight'] = q.ones([1]);
    let msg = '';
    try {
      net.loadStateDict(sd);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toContain('loadStateDict: missing keys: body.0.bias, norm.step');
    expect(msg).toContain('loadStateDict: unexpected keys: extra.weight');
    expect(msg).toContain('(loading into Net)');
    expect(net.loadStateDict(sd, { strict: false })).toEqual({ missingKeys: ['body.0.bias', 'norm.step'], unexpectedKeys: ['extra.weight'] });
  });

  it('loading casts to the model dtype', () => {
    const l = new Linear(2, 1);
    l.loadStateDict({ weight: q.tensor([[1, 2]], { dtype: 'float64' }), bias: q.tensor([0.5], { dtype: 'float64' }) });
    expect(l.weight.dtype).toBe('float32');
    expect(l.forward(q.tensor([[1, 1]])).toArray()).toEqual([[3.5]]);
  });
});

describe('containers', () => {
  it('Sequential chains forward and indexes like an array', () => {
    const s = new Sequential(new Linear(2, 3), new ReLU());
    expect(s.length).toBe(2);
    expect(s.at(-1)).toBeInstanceOf(ReLU);
    expect([...s].map((m) => m.constructor.name)).toEqual(['Linear', 'ReLU']);
    expect(s.forward(q.randn([4, 2])).shape).toEqual([4, 3]);
    expect(() => s.at(2)).toThrow('Sequential.at: index 2 is out of range for 2 layers');
  });

  it('ModuleList registers children under their indices', () => {
    const l = new ModuleList([new Linear(2, 2), new Linear(2, 2)]);
    l.append(new Linear(2, 1));
    expect(l.length).toBe(3);
    expect(Object.keys(l.stateDict())).toEqual(['0.weight', '0.bias', '1.weight', '1.bias', '2.weight', '2.bias']);
    expect(l.at(-1).parameters()[0]!.shape).toEqual([1, 2]);
  });

  it('ModuleDict keeps insertion order and replaces on set', () => {
    const d = new ModuleDict<Module>({ a: new ReLU(), b: new Linear(1, 1) });
    d.set('a', new Linear(2, 2));
    expect(d.keys()).toEqual(['a', 'b']);
    expect(Object.keys(d.stateDict())).toEqual(['a.weight', 'a.bias', 'b.weight', 'b.bias']);
    expect(d.get('zz')).toBeUndefined();
  });
});
