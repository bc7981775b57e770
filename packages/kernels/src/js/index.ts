/**
 * @file The js backend: the complete kernel table (the oracle every other backend is tested
 * against) over plain typed arrays.
 */
import type { Backend, BackendEntry, KernelTable } from '../backend.js';
import { ARRAY_TYPES, DTYPES, type TypedArray } from '../names.js';
import { col2im, im2col } from './conv.js';
import { binary, copy, fill, swigluBackward, unary, where } from './elementwise.js';
import { gather, indexAdd, indexSelect, scatterAdd } from './gather.js';
import { fpRound } from './fp-round.js';
import { fwht } from './hadamard.js';
import { loraMergePacked } from './lora.js';
import { loraBackward, loraMerge, matmul } from './matmul.js';
import { norm, normBackward, rope, softmax, softmaxBackward } from './norm.js';
import { adamStep } from './optim.js';
import { int8Matmul } from './int8-matmul.js';
import { packedGather, packedMatmul } from './packed.js';
import { sparse24Matmul } from './sparse24.js';
import { fakeQuantize, fakeQuantizeBackward } from './quant.js';
import { argReduce, reduce } from './reduce.js';

/** The js oracle's kernels: the readable reference every other backend is tested against, and runs whatever they decline. */
export const jsKernels: KernelTable<TypedArray> = {
  unary, binary, where, copy, fill, swigluBackward,
  reduce, argReduce,
  matmul, loraBackward, loraMerge, loraMergePacked,
  im2col, col2im,
  gather, scatterAdd, indexSelect, indexAdd,
  softmax, softmaxBackward, norm, normBackward, rope,
  adamStep,
  fakeQuantize, fakeQuantizeBackward, fwht, fpRound,
  packedMatmul, packedGather, sparse24Matmul, int8Matmul,
};

// alloc/free counts for memory(): buffers the caller drops without free stay counted
let liveBytes = 0;
let liveBuffers = 0;

/** The js backend: host typed arrays, every kernel from `jsKernels` (what `setBackend('js')` selects). */
export const jsBackend: Backend<TypedArray> = {
  name: 'js',
  dtypes: DTYPES,
  hostMemory: true,
  collected: true,
  alloc: (dtype, size) => {
    const data = new ARRAY_TYPES[dtype](size);
    liveBytes += data.byteLength;
    liveBuffers++;
    return data;
  },
  write: (data, _dtype, values) => data.set(values as never),
  readSync: (data, _dtype, size) => (data.length === size ? data : data.subarray(0, size)),
  read: async (data, _dtype, size) => (data.length === size ? data : data.subarray(0, size)),
  free: (data) => {
    liveBytes -= data.byteLength;
    liveBuffers--;
  },
  memory: () => ({ bytes: liveBytes, buffers: liveBuffers }),
  run: (kernel, inputs, out, params) => (jsKernels[kernel] as (i: typeof inputs, o: typeof out, p: typeof params) => void)(inputs, out, params),
  sync: async () => {},
  dispose: () => {},
};

/** js's line in the backend list (backends.ts): always available, one shared instance. */
export const jsEntry: BackendEntry<'js'> = {
  name: 'js',
  available: () => true,
  instance: () => jsBackend as Backend,
  create: () => jsBackend as Backend,
};
