/**
 * @file core's int8Matmul op: the int32 accumulator and the scaled float out, on transposed views,
 * on every available CPU backend alike, and its errors.
 */
import { describe, expect, it } from 'vitest';
import { Generator, int8Matmul, randint, tensor, withBackend } from '@qgrad/core';

describe('int8Matmul', () => {
  it('gives the exact int32 product, and acc·(sa·sb) with scales', () => {
    const a = tensor([[1, -2], [-128, 127]], { dtype: 'int8' });
    const b = tensor([[3, -128], [4, 127]], { dtype: 'int8' });
    const acc = int8Matmul(a, b);
    expect(acc.dtype).toBe('int32');
    expect(acc.toArray()).toEqual([[-5, -382], [124, 16384 + 16129]]);
    const y = int8Matmul(a, b, tensor([0.5, 2]), tensor([0.25, 1]));
    expect(y.dtype).toBe('float32');
    expect(y.toArray()).toEqual([[-0.625, -191], [62, 2 * 32513]]);
  });

  it('reads transposed views and agrees across the js and wasm backends', () => {
    const run = () => {
      const a = randint(-128, 128, [37, 50], { generator: new Generator(2) }).to('int8');
      const bt = randint(-128, 128, [23, 50], { generator: new Generator(3) }).to('int8');
      return int8Matmul(a, bt.transpose(0, 1)).toArray();
    };
    expect(withBackend('wasm', run)).toEqual(withBackend('js', run));
  });

  it('quantizes float operands with the scales as it packs them: the same as multiplying their int8 codes', () => {
    const x = tensor([[0.3, -1.27, 2, 0.015], [0.5, 0.025, -0.075, 9]]);
    const w = tensor([[1, -2], [0.5, 0.25], [-3, 3], [0.02, 0.06]]);
    const [sx, sw] = [tensor([0.01, 0.05]), tensor([0.02, 0.03])];
    // codes clamp(round½even(x / s), ±127) by hand: 0.015/0.01 = 1.5 → 2 (ties to even), 9/0.05 = 180 → 127
    const qx = tensor([[30, -127, 127, 2], [10, 0, -2, 127]], { dtype: 'int8' });
    const qw = tensor([[50, -67], [25, 8], [-127, 100], [1, 2]], { dtype: 'int8' });
    expect(int8Matmul(x, w, sx, sw).toArray()).toEqual(int8Matmul(qx, qw, sx, sw).toArray());
  });

  it('names the shapes or the missing scale in its errors', () => {
    const a = tensor([[1, 2]], { dtype: 'int8' });
    expect(() => int8Matmul(a, tensor([[1, 2]], { dtype: 'int8' }))).toThrow(/int8Matmul: inner sizes differ: a \[1, 2\] · b \[1, 2\]/);
    expect(() => int8Matmul(a, a.transpose(0, 1), tensor([1]))).toThrow(/int8Matmul: give both scales/);
    expect(() => int8Matmul(tensor([1, 2], { dtype: 'int8' }), a)).toThrow(/int8Matmul: a and b must be 2-D/);
  });
});
