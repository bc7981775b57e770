/**
 * @file The wasm heap: shared-memory growth keeps old views valid and aliased (Node 20), the
 * allocator's invariants under random alloc/free sequences, its errors, and the backend's
 * alloc/free/memory() over it.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { createWasmBackend } from './index.js';
import { Heap, HEAP_BASE, MAX_BYTES, PAGE } from './heap.js';
import { wasmFeatures } from './runtime.js';

const Memory = (globalThis as unknown as { WebAssembly: { Memory: ConstructorParameters<typeof Heap>[0] } }).WebAssembly.Memory;
const shared = wasmFeatures().shared;

describe.runIf(shared)('wasm heap', () => {
  it('keeps views made before a grow of a shared memory valid and aliased with the new buffer', () => {
    const memory = new Memory({ initial: 1, maximum: 100, shared: true });
    const before = memory.buffer;
    const old = new Float32Array(before, 1024, 16);
    old.fill(3);
    memory.grow(10);
    const after = memory.buffer;
    expect(after).not.toBe(before);
    expect(before.byteLength).toBe(PAGE);
    expect(after.byteLength).toBe(11 * PAGE);
    const fresh = new Float32Array(after, 1024, 16);
    expect([...fresh]).toEqual(new Array(16).fill(3));
    old[5] = 7;
    expect(fresh[5]).toBe(7);
    fresh[6] = 9;
    expect(old[6]).toBe(9);
    // the same object until the next grow
    expect(memory.buffer).toBe(after);
  });

  it('never overlaps live blocks, aligns them to 16 bytes, coalesces and reuses freed memory', () => {
    const op = fc.oneof(fc.record({ alloc: fc.integer({ min: 1, max: 300_000 }) }), fc.record({ free: fc.nat() }));
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const heap = new Heap(Memory, true, 1);
        const live: { start: number; end: number; tag: number }[] = [];
        let tag = 0;
        for (const o of ops) {
          if ('alloc' in o) {
            const start = heap.allocBytes(o.alloc);
            expect(start % 16).toBe(0);
            expect(start).toBeGreaterThanOrEqual(HEAP_BASE);
            const end = start + o.alloc;
            expect(end).toBeLessThanOrEqual(heap.buffer.byteLength);
            for (const b of live) expect(end <= b.start || start >= b.end, `[${start}, ${end}) overlaps [${b.start}, ${b.end})`).toBe(true);
            // write a tag over the whole block; the other blocks' tags must survive
            new Uint8Array(heap.buffer, start, o.alloc).fill(++tag & 255);
            live.push({ start, end, tag: tag & 255 });
          } else if (live.length) {
            const [b] = live.splice(o.free % live.length, 1);
            heap.freeBytes(b!.start);
          }
          for (const b of live) {
            const bytes = new Uint8Array(heap.buffer, b.start, b.end - b.start);
            expect(bytes[0] === b.tag && bytes[bytes.length - 1] === b.tag).toBe(true);
          }
        }
        const { free } = heap.blocks();
        for (let i = 1; i < free.length; i++) expect(free[i]![0]).toBeGreaterThan(free[i - 1]![1]);
        for (const b of live) heap.freeBytes(b.start);
        // everything freed: one free range from the base to the end of memory
        expect(heap.blocks().free).toEqual([[HEAP_BASE, heap.buffer.byteLength]]);
        expect(heap.usage()).toEqual({ bytes: 0, buffers: 0 });
      }),
      { numRuns: 60 },
    );
  });

  it('reuses a freed block for a request of the same size without growing', () => {
    const heap = new Heap(Memory, true, 4);
    const a = heap.allocBytes(1000);
    heap.allocBytes(1000);
    const size = heap.buffer.byteLength;
    heap.freeBytes(a);
    expect(heap.allocBytes(1000)).toBe(a);
    expect(heap.buffer.byteLength).toBe(size);
  });

  it('grows in large steps, and the views alloc returned before stay valid and aliased', () => {
    const heap = new Heap(Memory, true, 1);
    const x = heap.alloc('float32', 1000);
    x.fill(1.5);
    const big = heap.alloc('float64', 1 << 20);
    // at least 16 MiB or half the memory per grow
    expect(heap.buffer.byteLength).toBeGreaterThanOrEqual(16 << 20);
    expect(x.buffer).not.toBe(heap.buffer);
    expect([...x.subarray(0, 3)]).toEqual([1.5, 1.5, 1.5]);
    new Float32Array(heap.buffer, x.byteOffset, 1000)[999] = 4;
    expect(x[999]).toBe(4);
    expect(heap.resident(x) && heap.resident(big)).toBe(true);
    expect(heap.resident(new Float32Array(4))).toBe(false);
  });

  it('refuses a request over the limit with an error naming its size and the limit, before changing anything', () => {
    const heap = new Heap(Memory, true, 1);
    heap.allocBytes(100);
    const before = heap.blocks();
    const pages = heap.buffer.byteLength;
    expect(() => heap.alloc('float32', 600_000_000)).toThrow(/cannot allocate 600000000 float32 elements \(2288\.8 MiB\).*limited to 2047\.9 MiB \(2 GiB/);
    expect(() => heap.allocBytes(MAX_BYTES)).toThrow(RangeError);
    expect(heap.blocks()).toEqual(before);
    expect(heap.buffer.byteLength).toBe(pages);
  });

  it('errs on a double free and on freeing an array it did not allocate', () => {
    const heap = new Heap(Memory, true, 1);
    const x = heap.alloc('int32', 10);
    heap.free(x);
    expect(() => heap.free(x)).toThrow(/not a live block \(double free/);
    expect(() => heap.free(new Int32Array(10))).toThrow(/not in this backend's memory \(a foreign array\)/);
    const y = heap.alloc('int32', 10);
    expect(() => heap.free(y.subarray(1))).toThrow(/not a live block/);
  });

  it('gives the backend zeroed tensors in wasm memory, counted by memory() until freed', () => {
    const wasm = createWasmBackend({ threads: 1 });
    try {
      const base = wasm.memory();
      const a = wasm.alloc('float32', 1000) as Float32Array;
      a.fill(2);
      const b = wasm.alloc('float64', 10);
      expect(wasm.heap!.resident(a)).toBe(true);
      expect(wasm.memory()).toEqual({ bytes: base.bytes + 4000 + 80, buffers: base.buffers + 2 });
      wasm.free(a);
      const c = wasm.alloc('float32', 1000);
      expect([...c.subarray(0, 4)]).toEqual([0, 0, 0, 0]);
      wasm.free(b);
      wasm.free(c);
      expect(wasm.memory()).toEqual(base);
      expect(() => wasm.free(c)).toThrow(/double free/);
    } finally {
      wasm.dispose();
    }
  });

  it('stages no bytes for operands in wasm memory, and counts those of host arrays in and out', () => {
    const wasm = createWasmBackend({ threads: 1 });
    try {
      const n = 4096;
      const arg = (data: Float32Array, shape = [n], strides = [1]) => ({ data, dtype: 'float32' as const, shape, strides, offset: 0 });
      const a = wasm.alloc('float32', n) as Float32Array;
      const b = wasm.alloc('float32', n) as Float32Array;
      const o = wasm.alloc('float32', n) as Float32Array;
      a.fill(1.5);
      b.fill(2);
      // a transposed view of a as well: strided operands are read in place too
      wasm.run('binary', [arg(a, [64, 64], [1, 64]), arg(b, [64, 64], [64, 1])], arg(o, [64, 64], [64, 1]), { op: 'mul' });
      expect(o[77]).toBe(3);
      expect(wasm.stats().find((s) => s.kernel === 'binary')?.native).toBe(1);
      expect(wasm.staged()).toEqual({ in: 0, out: 0 });
      const host = new Float32Array(n).fill(3);
      const hostOut = new Float32Array(n);
      wasm.run('binary', [arg(host), arg(b)], arg(hostOut), { op: 'mul' });
      expect(hostOut[5]).toBe(6);
      expect(wasm.staged()).toEqual({ in: 4 * n, out: 4 * n });
    } finally {
      wasm.dispose();
    }
  });

  it('spills new tensors to host memory once its memory is full, with one warning, and still computes right', () => {
    const wasm = createWasmBackend({ maxBytes: 2 * 2 ** 20, threads: 1 });
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const held: Float32Array[] = [];
      for (let i = 0; i < 6; i++) held.push(wasm.alloc('float32', 2 ** 17) as Float32Array); // 512 KiB each
      const heap = wasm.heap!;
      expect(held.filter((a) => heap.resident(a)).length).toBeLessThan(6);
      expect(held.filter((a) => !heap.resident(a)).length).toBeGreaterThan(0);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0]![0])).toMatch(/limited to 2\.0 MiB.*new tensors now go to host memory.*tidy\(\), trainStep\(\) or dispose\(\)/);
      // a kernel over a resident and a spilled operand
      const [a, b] = [held[0]!, held[5]!];
      a.fill(2);
      b.fill(3);
      const out = held[1]!;
      const arg = (d: Float32Array) => ({ data: d, dtype: 'float32' as const, shape: [d.length], strides: [1], offset: 0 });
      wasm.run('binary', [arg(a), arg(b)], arg(out), { op: 'mul' });
      expect(out[0]).toBe(6);
      expect(out[out.length - 1]).toBe(6);
      for (const h of held) wasm.free(h); // both kinds free without error
      expect(wasm.memory().buffers).toBe(0);
    } finally {
      warn.mockRestore();
      wasm.dispose();
    }
  });
});
