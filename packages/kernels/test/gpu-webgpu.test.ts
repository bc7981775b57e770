/**
 * @file The gpu backend in webgpu mode in Node, through Dawn (gpu/dawn.ts): the shared equality
 * cases (gpu-cases.ts) against the js oracle with operands in the backend's device buffers — webgpu
 * has only the asynchronous read-back, so the host-array placement of gpu.test.ts does not apply —
 * plus residency and the synchronous read's error. Without a GPU, Dawn's OpenGL ES backend on
 * Mesa (llvmpipe, surfaceless EGL) gives the adapter: this proves correctness, not speed. Where
 * no adapter answers, one line says why and the suite is skipped.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGpuBackend, type GpuBackend, type GpuBuffer } from '../src/gpu/index.js';
import type { KernelArg, TypedArray } from '@qgrad/kernels';
import { GPU_CASES, chainOnDevice, type GpuCaseContext } from './gpu-cases.js';

// this file runs in its own worker: the mode is read when a backend opens its device
process.env.QGRAD_GPU_MODE = 'webgpu';

/** Opens a webgpu backend and runs one kernel through to an async read: the adapter check. */
async function probe(): Promise<{ backend: GpuBackend | null; why: string }> {
  const b = createGpuBackend();
  const info = b.info();
  if (info.mode !== 'webgpu') {
    b.dispose();
    return { backend: null, why: info.message };
  }
  const x = b.alloc('float32', 4);
  b.write(x, 'float32', Float32Array.of(1.5, -2, 3, 65537));
  const y = b.alloc('float32', 4);
  const arg = (data: GpuBuffer | TypedArray): KernelArg<GpuBuffer | TypedArray> => ({ data, dtype: 'float32', shape: [4], strides: [1], offset: 0 });
  try {
    b.run('unary', [arg(x)], arg(y), { op: 'neg' });
    const got = Array.from(await b.read(y, 'float32', 4));
    if (got.join() !== '-1.5,2,-3,-65537') throw new Error(`a probe kernel read back [${got.join(', ')}]`);
    return { backend: b, why: '' };
  } catch (e) {
    b.dispose();
    return { backend: null, why: (e as Error).message.split('\n')[0]! };
  } finally {
    b.free(x);
    b.free(y);
  }
}

const opened = await probe();
if (!opened.backend) console.log(`gpu webgpu (Dawn) suite skipped: ${opened.why}`);
else opened.backend.dispose();

describe.skipIf(!opened.backend)('gpu kernels in webgpu mode (Node, Dawn) equal the js oracle in float32', () => {
  let ctx!: GpuCaseContext;
  beforeAll(() => {
    ctx = { backend: createGpuBackend(), placement: 'device buffers', runs: 1, maxError: new Map() };
  });
  afterAll(() => {
    console.log(`webgpu (Dawn) max |gpu − js| per kernel: ${[...ctx.maxError].map(([k, e]) => `${k} ${e.toExponential(1)}`).join(', ')}`);
    ctx.backend.dispose();
  });

  for (const c of GPU_CASES) it(c.name, () => c.run(ctx), 120_000);
});

describe.skipIf(!opened.backend)('gpu backend storage in webgpu mode', () => {
  it('chains kernels on the device, reads back only asynchronously, and releases what it frees', async () => {
    const b = createGpuBackend();
    expect(b.info().message).toMatch(/webgpu mode.*asynchronous/);
    const n = 300;
    const x = b.alloc('float32', n);
    b.write(x, 'float32', Float32Array.from({ length: n }, (_, i) => i / 8));
    const textures = b.deviceMemory().textures;
    const cur = chainOnDevice(b, x, n, 20);
    // x uploaded and the last result: nothing else left on the device
    expect(b.deviceMemory().textures - textures).toBe(2);
    expect(() => b.readSync(cur, 'float32', n)).toThrow(/only asynchronously.*await backend\.read/);
    const got = await b.read(cur, 'float32', n);
    for (let i = 0; i < n; i++) expect(got[i]).toBe(Math.fround((21 * i) / 8));
    b.free(cur);
    b.free(x);
    expect(b.deviceMemory().textures).toBe(0);
    b.dispose();
  });
});
