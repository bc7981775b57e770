/**
 * @file gpu batched matmul over strided views (transposes and broadcast batches are strides):
 * one output element per thread, the K loop unrolled by four. gpu.js exposes no shared memory,
 * so the "tile" is the unrolled strip each thread reads; a WebGPU workgroup-tiled kernel would
 * need raw WGSL, which gpu.js does not take.
 */
import { collapse, numel } from '../layout.js';
import { type Call, type GpuArg, MAX_INDEX, MAX_LOOP, coordinates, lit, offsetOf, store, writable } from './operands.js';

export function matmulGpu(call: Call, [a, b]: readonly GpuArg[], out: GpuArg): boolean {
  if (a!.dtype !== 'float32' || b!.dtype !== 'float32' || out.dtype !== 'float32') return false;
  const n = numel(out.shape);
  const r = out.shape.length;
  if (n === 0 || n > MAX_INDEX || !writable(out) || r < 2) return false;
  const K = a!.shape[r - 1]!;
  // the inner loop steps 4 at a time
  if (K === 0 || K > MAX_INDEX || K / 4 > MAX_LOOP) return false;
  // batch dims collapse together; the thread index splits into (batch…, m, n)
  const batch = collapse(out.shape.slice(0, r - 2), [a!.strides.slice(0, r - 2), b!.strides.slice(0, r - 2)]);
  const shape = [...batch.shape, out.shape[r - 2]!, out.shape[r - 1]!];
  const nb = batch.shape.length;
  const aStrides = [...batch.strides[0]!, a!.strides[r - 2]!, 0];
  const bStrides = [...batch.strides[1]!, 0, b!.strides[r - 1]!];
  const [sak, sbk] = [a!.strides[r - 1]!, b!.strides[r - 2]!];
  const K4 = K - (K % 4);
  const term = (j: number) => `a[ao + ${lit(j)} * ${lit(sak)}] * b[bo + ${lit(j)} * ${lit(sbk)}]`;
  const source = `function (a, b) {
const i = this.thread.x;
${coordinates('i', shape, 'c')}
const a0 = ${offsetOf(aStrides, a!.offset, 'c')};
const b0 = ${offsetOf(bStrides, b!.offset, 'c')};
let sum = 0.0;
for (let k = 0; k < ${K4}; k += 4) {
  const ao = a0 + k * ${lit(sak)};
  const bo = b0 + k * ${lit(sbk)};
  sum += ${term(0)} + ${term(1)} + ${term(2)} + ${term(3)};
}
${Array.from({ length: K - K4 }, (_, j) => `sum += a[a0 + ${lit((K4 + j) * sak)}] * b[b0 + ${lit((K4 + j) * sbk)}];`).join('\n')}
return sum;
}`;
  void nb;
  store(call, out, call.run(source, n, [a!, b!]));
  return true;
}
