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
