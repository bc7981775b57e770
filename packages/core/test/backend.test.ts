import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';

describe('backend selection', () => {
  it('defaults to wasm with js selectable, like tf.setBackend', () => {
    expect(q.availableBackends()).toEqual(expect.arrayContaining(['js', 'wasm']));
    expect(q.getBackend()).toBe(process.env.QGRAD_BACKEND === 'js' ? 'js' : 'wasm');
    q.withBackend('js', () => {
      expect(q.getBackend()).toBe('js');
      expect(q.zeros([2]).device).toBe('js');
    });
    expect(() => q.setBackend('gpu')).toThrow(/setBackend: backend 'gpu' is not available \(have: js, wasm/);
  });

  it('host-memory backends take each other’s tensors and agree to the bit on elementwise float32', () => {
    const a = q.withBackend('js', () => q.randn([3, 5]));
    const b = q.withBackend('wasm', () => q.randn([5]));
    const onWasm = q.withBackend('wasm', () => a.mul(b).add(1));
    const onJs = q.withBackend('js', () => q.tensor(a.dataSync(), { shape: [3, 5] }).mul(q.tensor(b.dataSync())).add(1));
    expect(Array.from(onWasm.dataSync())).toEqual(Array.from(onJs.dataSync()));
  });

  it('ops run on the backend of their first input', () => {
    const x = q.withBackend('js', () => q.ones([4]));
    expect(q.withBackend('wasm', () => x.exp()).device).toBe('js');
  });
});
