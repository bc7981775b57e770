/**
 * @file The gpu backend as selection makes it in Node: webgpu (auto's first choice) in a worker
 * thread (gpu/remote.ts), so synchronous reads work. The shared equality cases (gpu-cases.ts)
 * against the js oracle through the worker, device residency, the js fallback (which in the
 * worker reads its device operands back asynchronously) and errors crossing back with their class.
 * Without a GPU, Dawn's OpenGL ES backend on Mesa gives the adapter: correctness, not speed. Where
 * webgpu does not open, one line says why and the suites are skipped.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, type Backend, type KernelArg, type TypedArray } from '@qgrad/kernels';
import { GPU_CASES, chainOnDevice, type GpuCaseContext } from './gpu-cases.js';

// auto selection: nothing forced (this file runs in its own worker)
delete process.env.QGRAD_GPU_MODE;

type GpuLike = Backend & { info(): { mode: string | null; message: string; tried: { mode: string; reason: string | null }[] }; deviceMemory(): { textures: number } };
const entry = BACKENDS.find((b) => b.name === 'gpu')!;
const selected = entry.instance() as GpuLike;
const remote = selected.info().mode === 'webgpu';
if (!remote) console.log(`gpu remote webgpu suites skipped: auto selection did not take webgpu (${selected.info().tried.find((t) => t.mode === 'webgpu')?.reason ?? selected.info().message})`);

// vitest ends this file's thread by terminating it, which would tear Dawn down mid-work in the
// nested worker (a native abort of the whole process): what the file opened, it releases
afterAll(() => selected.dispose());

describe.skipIf(!remote)('auto selection in Node: webgpu in a worker thread', () => {
  it('says what it picked and reads back synchronously', () => {
    expect(selected.info().message).toMatch(/webgpu mode in a worker thread \(synchronous reads too\)/);
    const x = selected.alloc('float32', 3);
    selected.write(x, 'float32', Float32Array.of(1, -2, 0.5));
    const y = selected.alloc('float32', 3);
    const arg = (data: unknown): KernelArg => ({ data, dtype: 'float32', shape: [3], strides: [1], offset: 0 });
    selected.run('unary', [arg(x)], arg(y), { op: 'exp' });
    const got = selected.readSync(y, 'float32', 3);
    [Math.E, Math.exp(-2), Math.exp(0.5)].forEach((v, i) => expect(Math.abs(got[i]! - v)).toBeLessThan(2e-6 * v));
    selected.free(x);
    selected.free(y);
  });
});

describe.skipIf(!remote)('gpu kernels through the webgpu worker equal the js oracle in float32', () => {
  let ctx!: GpuCaseContext;
  beforeAll(() => {
    ctx = { backend: entry.create(), placement: 'device buffers', runs: 1, maxError: new Map() };
  });
  afterAll(() => {
    console.log(`webgpu worker max |gpu − js| per kernel: ${[...ctx.maxError].map(([k, e]) => `${k} ${e.toExponential(1)}`).join(', ')}`);
    ctx.backend.dispose();
  });
  for (const c of GPU_CASES) it(c.name, () => c.run(ctx), 120_000);
});

describe.skipIf(!remote)('gpu backend storage through the webgpu worker', () => {
  it('keeps results on the device, counts and releases them, and names freed storage', () => {
    const b = entry.create() as GpuLike;
    const n = 500;
    const x = b.alloc('float32', n);
    b.write(x, 'float32', Float32Array.from({ length: n }, (_, i) => i / 8));
    const before = b.memory();
    const textures = b.deviceMemory().textures;
    const cur = chainOnDevice(b, x, n, 20);
    expect(b.memory().buffers).toBe(before.buffers + 1);
    expect(b.deviceMemory().textures - textures).toBe(2);
    const got = b.readSync(cur, 'float32', n);
    for (let i = 0; i < n; i++) expect(got[i]).toBe(Math.fround((21 * i) / 8));
    b.free(cur);
    b.free(x);
    expect(b.deviceMemory().textures).toBe(textures);
    expect(() => b.readSync(cur, 'float32', n)).toThrow(/no buffer|already freed/);
    expect(() => b.free(cur)).toThrow(/freed twice/);
    b.dispose();
  });

  it('runs what the gpu declines (float64) on js inside the worker, on device-resident operands', () => {
    const b = entry.create();
    const x = b.alloc('float64', 8);
    b.write(x, 'float64', Float64Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
    const o = b.alloc('float64', 8);
    const a = (data: unknown): KernelArg => ({ data, dtype: 'float64', shape: [2, 4], strides: [4, 1], offset: 0 });
    b.run('fwht', [a(x)], a(o), { blockSize: 4, normalize: false });
    expect(b.ranOn!('fwht', 'float64')).toBe('js');
    expect(Array.from(b.readSync(o, 'float64', 8) as TypedArray)).toEqual([6, -2, -4, 0, 22, -2, -4, 0]);
    // a device result as the js fallback's operand: read back in the worker, then the js kernel
    const f = b.alloc('float32', 8);
    b.write(f, 'float32', Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
    const g = b.alloc('float32', 8);
    const s = (data: unknown): KernelArg => ({ data, dtype: 'float32', shape: [8], strides: [1], offset: 0 });
    b.run('unary', [s(f)], s(g), { op: 'neg' });
    const idx = b.alloc('int32', 2);
    b.write(idx, 'int32', Int32Array.of(1, 0));
    const rows = b.alloc('float32', 8);
    const m = (data: unknown): KernelArg => ({ data, dtype: 'float32', shape: [2, 4], strides: [4, 1], offset: 0 });
    b.run('indexSelect', [m(g), { data: idx, dtype: 'int32', shape: [2], strides: [1], offset: 0 }], m(rows), { dim: 0 });
    expect(Array.from(b.readSync(rows, 'float32', 8))).toEqual([-4, -5, -6, -7, -0, -1, -2, -3]);
    b.dispose();
  });

  it('an error in the worker comes back with its class and message', () => {
    const b = entry.create();
    const table = b.alloc('float32', 12);
    b.write(table, 'float32', Float32Array.from({ length: 12 }, (_, i) => i));
    const ids = b.alloc('int32', 3);
    b.write(ids, 'int32', Int32Array.from([1, 4, 0]));
    const o = b.alloc('float32', 9);
    const run = () =>
      b.run('indexSelect', [{ data: table, dtype: 'float32', shape: [4, 3], strides: [3, 1], offset: 0 }, { data: ids, dtype: 'int32', shape: [3], strides: [1], offset: 0 }], { data: o, dtype: 'float32', shape: [3, 3], strides: [3, 1], offset: 0 }, { dim: 0 });
    expect(run).toThrow(new RangeError('indexSelect: index 4 is out of range [0, 4)'));
    b.dispose();
  });
});
