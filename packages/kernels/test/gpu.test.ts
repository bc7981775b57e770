/**
 * @file The gpu backend against the js oracle in float32 (gpu-cases.ts: fast-check, random shapes,
 * transposed, offset and broadcast views), each suite twice: operands in host arrays (uploaded per call) and
 * operands in the backend's own device buffers, chained on the device. Plus device residency
 * (alloc/write/readSync/free, memory counts, textures released), and the one-time fallback
 * warning. Where no gpu mode works (no display, no `gl` build), one line says why and the suites
 * are skipped; CI runs this file under `xvfb-run -a` (.ci/run).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BACKENDS, type Backend, type KernelArg, type TypedArray } from '@qgrad/kernels';
import { openDevice } from '../src/gpu/device.js';

// the headless-gl suite (webgpu has gpu-webgpu.test.ts and gpu-remote.test.ts); this file runs in its own worker
process.env.QGRAD_GPU_MODE = 'headlessgl';
import { GPU_CASES, chainOnDevice, type GpuCaseContext, type Placement } from './gpu-cases.js';
import { mismatch } from './helpers.js';

const entry = BACKENDS.find((b) => b.name === 'gpu')!;
const available = entry.available();
type Info = { mode: string | null; message: string };
const info = () => (entry.instance() as unknown as { info(): Info }).info();
if (!available) console.log(`gpu suites skipped: ${info().message}`);

describe.skipIf(!available).each(['host arrays', 'device buffers'] as Placement[])('gpu kernels (operands in %s) equal the js oracle in float32', (placement) => {
  let ctx!: GpuCaseContext;
  beforeAll(() => {
    ctx = { backend: entry.create(), placement, runs: 1, maxError: new Map() };
  });
  afterAll(() => ctx.backend.dispose());

  // the cases live in gpu-cases.ts, shared with the browser suites (test/browser/gpu.test.ts)
  for (const c of GPU_CASES) it(c.name, () => c.run(ctx));
});

describe.skipIf(!available)('gpu backend storage', () => {
  it('keeps tensors on the device between kernels; free releases their textures; memory() counts buffers', () => {
    const b = entry.create() as Backend & { deviceMemory(): { textures: number } };
    const n = 1000;
    const x = b.alloc('float32', n);
    b.write(x, 'float32', Float32Array.from({ length: n }, (_, i) => i / 100));
    const before = b.memory();
    const textures = b.deviceMemory().textures;
    // a chain of 50 kernels: each result stays a texture, and the previous one is freed
    const cur = chainOnDevice(b, x, n, 50);
    expect(b.memory().buffers).toBe(before.buffers + 1);
    // x and the last result on the device: nothing else left behind
    expect(b.deviceMemory().textures - textures).toBe(2);
    const values = b.readSync(cur, 'float32', n);
    expect(mismatch(values, Float32Array.from({ length: n }, (_, i) => Math.fround((51 * i) / 100)), 1e-5)).toBe(-1);
    b.free(cur);
    b.free(x);
    expect(b.memory()).toEqual({ bytes: before.bytes - 4 * n, buffers: before.buffers - 1 });
    expect(b.deviceMemory().textures).toBe(textures);
    expect(() => b.readSync(cur, 'float32', n)).toThrow(/already freed/);
    expect(() => b.free(cur)).toThrow(/freed twice/);
    b.dispose();
  });

  it('runs a call it declines (float64) on js with one warning naming it, keeping the result correct', () => {
    const b = entry.create();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const x = b.alloc('float64', 8);
    b.write(x, 'float64', Float64Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
    const o = b.alloc('float64', 8);
    const a = (data: unknown): KernelArg => ({ data, dtype: 'float64', shape: [2, 4], strides: [4, 1], offset: 0 });
    b.run('fwht', [a(x)], a(o), { blockSize: 4, normalize: false });
    b.run('fwht', [a(x)], a(o), { blockSize: 4, normalize: false });
    expect(warn.mock.calls.filter((c) => String(c[0]).includes("'fwht' (float64)"))).toHaveLength(1);
    warn.mockRestore();
    expect(b.ranOn!('fwht', 'float64')).toBe('js');
    expect(Array.from(b.readSync(o, 'float64', 8) as TypedArray)).toEqual([6, -2, -4, 0, 22, -2, -4, 0]);
    expect(b.stats!().find((s) => s.kernel === 'fwht' && s.dtype === 'float64')?.js).toBe(2);
    b.dispose();
  });

  it('an out-of-range index (device-resident or not) fails with the js RangeError naming the op', () => {
    const b = entry.create();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const table = b.alloc('float32', 12);
    b.write(table, 'float32', Float32Array.from({ length: 12 }, (_, i) => i));
    const ids = b.alloc('int32', 3);
    const t: KernelArg = { data: table, dtype: 'float32', shape: [4, 3], strides: [3, 1], offset: 0 };
    const idx: KernelArg = { data: ids, dtype: 'int32', shape: [3], strides: [1], offset: 0 };
    const o = b.alloc('float32', 9);
    const outArg: KernelArg = { data: o, dtype: 'float32', shape: [3, 3], strides: [3, 1], offset: 0 };
    b.write(ids, 'int32', Int32Array.from([3, 0, 2]));
    b.run('indexSelect', [t, idx], outArg, { dim: 0 });
    expect(b.ranOn!('indexSelect', 'float32')).toBe('gpu');
    expect(Array.from(b.readSync(o, 'float32', 9))).toEqual([9, 10, 11, 0, 1, 2, 6, 7, 8]);
    for (const bad of [4, -1]) {
      b.write(ids, 'int32', Int32Array.from([1, bad, 0]));
      expect(() => b.run('indexSelect', [t, idx], outArg, { dim: 0 })).toThrow(new RangeError(`indexSelect: index ${bad} is out of range [0, 4)`));
    }
    warn.mockRestore();
    b.dispose();
  });

  it('a full kernel cache destroys only kernels none of whose outputs is alive', () => {
    // gpu.js's Kernel.destroy deletes every texture the kernel made, and a texture reads back
    // through its kernel: evicting the kernel of a live output once made it unreadable (CI, rarely)
    const { device } = openDevice();
    const d = device!;
    d.capacity = 3;
    const t = d.upload(Float32Array.from([1, 2, 3, 4]));
    const u = d.run('function (a) { return a[this.thread.x] + 1.0; }', 4, [t], [4]);
    for (let i = 0; i < 6; i++) d.release(d.run(`function (a) { return a[this.thread.x] * ${i + 2}.0; }`, 4, [t], [4]), 4);
    expect(Array.from(t.toArray())).toEqual([1, 2, 3, 4]);
    expect(Array.from(u.toArray())).toEqual([2, 3, 4, 5]);
    // the two kernels with live outputs stay, the freed ones were evicted down to capacity
    expect(d.compiled).toBe(3);
    d.release(u, 4);
    d.release(t, 4);
    expect(d.textures).toBe(0);
    d.dispose();
  });

  it('reports the mode it chose', () => {
    expect(['webgpu', 'webgl2', 'headlessgl', 'webgl']).toContain(info().mode);
    expect(info().message).toMatch(/gpu\.js in \w+ mode/);
  });
});
