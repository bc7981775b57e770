/**
 * @file The Walsh–Hadamard transform along the last dim in blocks (QuEST's rotation): one
 * primitive over the `fwht` kernel. H is symmetric, so its backward is the same transform.
 */
import { runKernel } from '../dispatch.js';
import { floatType } from '../dtype.js';
import { defineFunction } from '../function.js';
import { Tensor } from '../tensor.js';
import { cast } from './elementwise.js';

/** Options of `hadamard`: the block size and whether the transform is orthonormal. */
export interface HadamardOptions {
  /** Block size along the last dim, a power of two dividing it (default: the whole last dim). */
  blockSize?: number;
  /** Scale by 1/√blockSize so the transform is orthonormal (default true). */
  normalize?: boolean;
}

const hadamardFn = defineFunction({
  name: 'hadamard',
  forward(ctx, x: Tensor, blockSize: number, normalize: boolean) {
    ctx.state = { blockSize, normalize };
    const xf = cast(x, floatType(x.dtype));
    return runKernel('fwht', [xf], [...x.shape], xf.dtype, { blockSize, normalize });
  },
  // y = x·H with H = Hᵀ (block diagonal), so dx = g·Hᵀ = g·H: the same transform
  backward: (ctx, g) => [hadamard(g, { blockSize: ctx.state.blockSize as number, normalize: ctx.state.normalize as boolean }), null, null],
});

/**
 * x·H along the last dim, H = blockdiag(H_b, …) the Sylvester Hadamard matrix of size b
 * (normalised by 1/√b by default: orthonormal and self-inverse).
 * @example hadamard(tensor([[1, 0, 0, 0]])).toArray(); // [[0.5, 0.5, 0.5, 0.5]]
 */
export function hadamard(x: Tensor, opts: HadamardOptions = {}): Tensor {
  if (x.ndim === 0) throw new Error('hadamard: input must have at least one dim, got a 0-d tensor');
  const n = x.shape[x.ndim - 1]!;
  const b = opts.blockSize ?? n;
  if (!Number.isInteger(b) || b < 1 || (b & (b - 1)) !== 0) throw new Error(`hadamard: blockSize must be a power of two, got ${b} (input shape [${x.shape.join(', ')}])`);
  if (n % b !== 0) throw new Error(`hadamard: last dim ${n} of input [${x.shape.join(', ')}] is not a multiple of blockSize ${b}`);
  return hadamardFn(x, b, opts.normalize ?? true);
}
