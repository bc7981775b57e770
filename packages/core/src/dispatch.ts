/**
 * @file The single dispatch point: every kernel call from core goes through `runKernel`, so a
 * later lazy/fusing engine has one place to hook into. Also tensor allocation and shape helpers.
 */
import { contiguousStrides, numel, type DType, type KernelArg, type KernelName, type KernelParams } from '@qgrad/kernels';
import { currentBackend } from './backend.js';
import { Tensor, type Storage } from './tensor.js';

export function argOf(t: Tensor): KernelArg {
  return { data: t.storage.data, dtype: t.dtype, shape: t.shape, strides: t.strides, offset: t.offset };
}

/** A fresh contiguous tensor on `like`'s backend (or the current one), contents unspecified. */
export function empty(shape: number[], dtype: DType, like?: Tensor): Tensor {
  const backend = like ? like.storage.backend : currentBackend();
  const size = numel(shape);
  const storage: Storage = { backend, data: backend.alloc(dtype, size), dtype, size, version: 0 };
  return new Tensor(storage, shape, contiguousStrides(shape), 0);
}

/** Runs `kernel` on `inputs` into a fresh tensor of `shape` and `dtype`. */
export function runKernel<K extends KernelName>(kernel: K, inputs: Tensor[], shape: number[], dtype: DType, params: KernelParams[K]): Tensor {
  const out = empty(shape, dtype, inputs[0]);
  const backend = out.storage.backend;
  for (const t of inputs) {
    if (t.storage.backend !== backend && !(backend.hostMemory && t.storage.backend.hostMemory)) {
      throw new Error(`${kernel}: inputs live on different backends (${inputs.map((i) => i.device).join(', ')}); move them with .to(backend) first`);
    }
  }
  backend.run(kernel, inputs.map(argOf), argOf(out), params);
  return out;
}

/** Runs `kernel` writing into an existing (possibly strided) tensor, bumping its version. */
export function runKernelInto<K extends KernelName>(kernel: K, inputs: Tensor[], out: Tensor, params: KernelParams[K]): void {
  out.storage.backend.run(kernel, inputs.map(argOf), argOf(out), params);
  out.storage.version++;
}

/** NumPy/PyTorch broadcasting of two shapes; throws naming the op and both shapes. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) {
      throw new Error(`${op}: shapes [${a.join(', ')}] and [${b.join(', ')}] cannot be broadcast together (dim ${i}: ${x} vs ${y})`);
    }
    out[i] = x === 1 ? y : x;
  }
  return out;
}

/** Normalises a possibly negative dim against `ndim`, naming the op on error. */
export function normDim(op: string, dim: number, ndim: number): number {
  const n = Math.max(ndim, 1);
  if (!Number.isInteger(dim) || dim < -n || dim >= n) throw new RangeError(`${op}: dim ${dim} is out of range for a tensor of ${ndim} dims`);
  return dim < 0 ? dim + n : dim;
}

export { numel, contiguousStrides };
