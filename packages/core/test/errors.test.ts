/** Errors a user can act on (issue 12): each names the op, what was given and what is allowed. */
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';

describe('reshape and view errors', () => {
  it('quote the shape as written when two dims are -1, and say only one may be', () => {
    expect(() => q.zeros([2, 3]).reshape([-1, -1])).toThrow('reshape: shape [-1, -1] is invalid for input of shape [2, 3] (6 elements): only one dim may be -1 (dims 0 and 1 are)');
  });

  it('name the op, the input shape and the requested shape for bad sizes and counts', () => {
    const x = q.zeros([2, 3]);
    expect(() => x.reshape([2.5, 2])).toThrow(/^reshape: shape \[2\.5, 2\] is invalid for input of shape \[2, 3\] \(6 elements\): size 2\.5 at dim 0 is not/);
    expect(() => x.reshape([-2, -3])).toThrow(/^reshape: shape \[-2, -3\] is invalid for input of shape \[2, 3\] .*: size -2 at dim 0 is not a non-negative integer/);
    expect(() => x.reshape([NaN, 6])).toThrow(/^reshape: shape \[NaN, 6\] is invalid .*: size NaN at dim 0/);
    expect(() => x.reshape([4, 2])).toThrow('reshape: shape [4, 2] is invalid for input of shape [2, 3] (6 elements): that shape holds 8 elements');
    expect(() => x.reshape([4, -1])).toThrow('reshape: shape [4, -1] is invalid for input of shape [2, 3] (6 elements): 6 elements do not split into a whole number of blocks of 4');
    expect(() => q.zeros([0, 3]).reshape([0, -1])).toThrow(/^reshape: shape \[0, -1\] is invalid for input of shape \[0, 3\] .*: the -1 cannot be inferred/);
    expect(() => x.view(-1, -1)).toThrow(/^view: shape \[-1, -1\] is invalid for input of shape \[2, 3\] .*: only one dim may be -1/);
  });

  it('still infer one -1, including around size-0 and size-1 dims', () => {
    expect(q.zeros([2, 3]).reshape([-1]).shape).toEqual([6]);
    expect(q.zeros([2, 3]).reshape([3, -1, 1]).shape).toEqual([3, 2, 1]);
    expect(q.zeros([0, 3]).reshape([-1, 3]).shape).toEqual([0, 3]);
    expect(q.zeros([]).reshape([-1]).shape).toEqual([1]);
  });
});

describe('unsupported dtypes', () => {
  const supported = /supported dtypes are float32, float64, int32, int8, uint8$/;
  const bad = 'float16' as q.DType;

  it('are named, with the op and the supported list, by cast and Tensor.to', () => {
    const x = q.ones([2]);
    expect(() => q.cast(x, bad)).toThrow(TypeError);
    expect(() => q.cast(x, bad)).toThrow(/^cast: unsupported dtype 'float16' \(no half precision: use float32\); supported dtypes are/);
    expect(() => q.cast(x, bad)).toThrow(supported);
    expect(() => x.to(bad)).toThrow(/'float16'.*float32, float64, int32, int8, uint8/);
    expect(() => q.cast(x, 'int64' as q.DType)).toThrow(/^cast: unsupported dtype 'int64' \(use int32\)/);
  });

  it('are named by every creation function that takes { dtype }', () => {
    const opts = { dtype: bad };
    const calls: [string, () => unknown][] = [
      ['tensor', () => q.tensor([1, 2], opts)],
      ['tensor', () => q.tensor(new Float32Array(2), opts)],
      ['full', () => q.full([2], 3, opts)],
      ['zeros', () => q.zeros([2], opts)],
      ['ones', () => q.ones([2], opts)],
      ['fullLike', () => q.zerosLike(q.ones([2]), opts)],
      ['arange', () => q.arange(0, 4, 1, opts)],
      ['linspace', () => q.linspace(0, 1, 5, opts)],
      ['eye', () => q.eye(3, 3, opts)],
      ['rand', () => q.rand([2], opts)],
      ['randn', () => q.randn([2], opts)],
      ['randint', () => q.randint(0, 4, [2], opts)],
      ['randn', () => q.randnLike(q.ones([2]), opts)],
    ];
    for (const [op, call] of calls) {
      expect(call, op).toThrow(new RegExp(`^${op}: unsupported dtype 'float16'.*${supported.source}`));
    }
    expect(() => q.zeros([2], { dtype: undefined as unknown as q.DType })).not.toThrow(); // absent means the default
  });
});

describe('invalid shapes in creation functions', () => {
  it('name the op and the whole shape for negative, fractional and NaN sizes', () => {
    const calls: [string, (s: number[]) => unknown][] = [
      ['zeros', (s) => q.zeros(s)],
      ['ones', (s) => q.ones(s)],
      ['full', (s) => q.full(s, 1)],
      ['rand', (s) => q.rand(s)],
      ['randn', (s) => q.randn(s)],
      ['randint', (s) => q.randint(0, 3, s)],
      ['tensor', (s) => q.tensor(new Float32Array(6), { shape: s })],
    ];
    for (const [op, call] of calls) {
      expect(() => call([2, -3]), op).toThrow(`${op}: invalid shape [2, -3]: size -3 at dim 1 is not a non-negative integer`);
      expect(() => call([2.5, 2]), op).toThrow(`${op}: invalid shape [2.5, 2]: size 2.5 at dim 0`);
      expect(() => call([NaN]), op).toThrow(`${op}: invalid shape [NaN]: size NaN at dim 0`);
    }
    // [-2, -3] holds 6 elements by count, yet is no shape
    expect(() => q.tensor([1, 2, 3, 4, 5, 6], { shape: [-2, -3] })).toThrow(/^tensor: invalid shape \[-2, -3\]/);
    expect(() => q.eye(2.5)).toThrow(/^eye: invalid shape \[2\.5, 2\.5\]/);
    expect(() => q.linspace(0, 1, -1)).toThrow(/^linspace: invalid shape \[-1\]/);
  });

  it('reject arange bounds that are not finite instead of returning an empty or huge tensor', () => {
    expect(() => q.arange(0, NaN)).toThrow('arange: start, end and step must be finite numbers, got (0, NaN, 1)');
    expect(() => q.arange(0, Infinity)).toThrow(/^arange: .*got \(0, Infinity, 1\)/);
  });

  it('name the op and shape when a host array that large cannot be made', () => {
    // 2^52 elements is past every engine's typed-array limit, so nothing is ever allocated here
    expect(() => q.randn([2 ** 26, 2 ** 26])).toThrow(/^randn: cannot allocate 4503599627370496 float32 elements .* for shape \[67108864, 67108864\]/);
    expect(() => q.arange(0, 2 ** 52)).toThrow(/^arange: cannot allocate 4503599627370496 int32 elements/);
  });

  it('still accept empty and zero-size shapes', () => {
    expect(q.zeros([]).shape).toEqual([]);
    expect(q.randn([0, 3]).shape).toEqual([0, 3]);
    expect(q.eye(0).shape).toEqual([0, 0]);
  });
});
