import { afterEach, describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { AnomalyError, detectAnomaly, noGrad, ones, setDetectAnomaly, tensor, type Tensor } from '@qgrad/core';
import { Linear, Llama, Module, ReLU, Sequential, type LlamaConfig } from '@qgrad/nn';

const cfg: LlamaConfig = {
  vocabSize: 16, dim: 8, nLayers: 3, nHeads: 2, nKvHeads: 1, hiddenDim: 16, maxSeqLen: 8,
  normEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false,
};

function anomalyMessage(fn: () => unknown): string {
  try {
    detectAnomaly(fn);
  } catch (e) {
    expect(e).toBeInstanceOf(AnomalyError);
    return (e as Error).message;
  }
  throw new Error('expected an AnomalyError');
}

afterEach(() => setDetectAnomaly(false));

describe('anomaly mode inside nn modules', () => {
  it('names the module path and the user line when a norm weight holds NaN in forward', () => {
    const llama = new Llama(cfg);
    noGrad(() => llama.model.layers.at(2).input_layernorm.weight!.fill_(NaN));
    const msg = anomalyMessage(() => llama.forward(tensor([[1, 2, 3]], { dtype: 'int32' })));
    expect(msg).toMatch(/forward of '\w+' produced NaN or Inf/);
    expect(msg).toContain("in module 'model.layers.2.input_layernorm' (RMSNorm in Llama)");
    expect(msg).toMatch(/norm\.ts:\d+/); // the library line that ran the op is still given
    expect(msg).toMatch(/called from user code at .*anomaly\.test\.ts:\d+/);
  });

  it('names the module and user line recorded when the op was created, for a backward anomaly', () => {
    // finite forward, gradient overflow in the second Linear's backward: 1e25 · 1e20 · 3 > float32 max
    const model = new Sequential(new Linear(3, 3, { bias: false }), new ReLU(), new Linear(3, 3, { bias: false }));
    noGrad(() => {
      (model.at(0) as Linear).weight.fill_(1e-25);
      (model.at(2) as Linear).weight.fill_(1e20);
    });
    const msg = anomalyMessage(() => model.forward(ones([1, 3])).sum().mul(1e25).backward());
    expect(msg).toMatch(/backward of '\w+' returned NaN or Inf/);
    expect(msg).toContain("in module '2' (Linear in Sequential)");
    expect(msg).toMatch(/called from user code at .*anomaly\.test\.ts:\d+/);
  });

  it('names the root module by its class', () => {
    class Log extends Module {
      forward(x: Tensor): Tensor {
        return x.log();
      }
    }
    const msg = anomalyMessage(() => new Log().forward(tensor([-1])));
    expect(msg).toContain('in module Log');
  });

  it('keeps no module stack with anomaly mode off, and unwinds it after an error', () => {
    const seen: (string | null)[] = [];
    class Probe extends Module {
      forward(x: Tensor): Tensor {
        seen.push(q.currentModulePath());
        return x;
      }
    }
    class Outer extends Module {
      inner = this.registerModule('inner', new Probe());
      forward(x: Tensor): Tensor {
        return this.inner.forward(x);
      }
    }
    const m = new Outer();
    m.forward(ones([1]));
    detectAnomaly(() => m.forward(ones([1])));
    expect(seen).toEqual([null, "'inner' (Probe in Outer)"]);
    expect(() => anomalyMessage(() => new Sequential(new Linear(1, 1)).forward(tensor([[NaN]])))).not.toThrow();
    expect(q.currentModulePath()).toBe(null);
  });
});
