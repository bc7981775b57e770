/**
 * @file Unit tests of the wasm assembler: LEB128, module layout, SIMD and relaxed SIMD.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Code, ModuleBuilder, Op, Simd, ValType, sleb, uleb } from './assembler.js';
import { wasmFeatures } from './runtime.js';

const WA = (globalThis as unknown as { WebAssembly: { Module: new (b: Uint8Array) => object; Instance: new (m: object, i: object) => { exports: Record<string, (...a: number[]) => number> }; Memory: new (d: object) => { buffer: ArrayBuffer }; validate(b: Uint8Array): boolean } }).WebAssembly;

function instantiate(mb: ModuleBuilder, memory?: object) {
  return new WA.Instance(new WA.Module(mb.encode()), memory ? { env: { memory } } : {}).exports;
}

/** Decodes unsigned LEB128 (test oracle). */
function decodeU(bytes: number[]): number {
  let v = 0;
  let mul = 1;
  for (const b of bytes) {
    v += (b & 0x7f) * mul;
    mul *= 128;
  }
  return v;
}

describe('LEB128', () => {
  it('encodes the spec examples', () => {
    const u: number[] = [];
    uleb(u, 624485);
    expect(u).toEqual([0xe5, 0x8e, 0x26]);
    const s: number[] = [];
    sleb(s, -123456);
    expect(s).toEqual([0xc0, 0xbb, 0x78]);
    const z: number[] = [];
    sleb(z, 64);
    expect(z).toEqual([0xc0, 0x00]);
  });

  it('round-trips unsigned values and ends every encoding with a byte below 0x80', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (v) => {
        const b: number[] = [];
        uleb(b, v);
        expect(decodeU(b)).toBe(v);
        expect(b[b.length - 1]!).toBeLessThan(0x80);
      }),
    );
  });

  it('round-trips every i32 through an i32.const', () => {
    fc.assert(
      fc.property(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), (v) => {
        const mb = new ModuleBuilder();
        mb.func([], [ValType.i32], (c) => void c.i32(v), 'k');
        expect(instantiate(mb).k!()).toBe(v);
      }),
      { numRuns: 50 },
    );
  });
});

describe('ModuleBuilder', () => {
  it('builds a callable function with parameters, locals and a loop', () => {
    const mb = new ModuleBuilder();
    // sum of 0..n-1
    mb.func([ValType.i32], [ValType.i32], (c) => {
      const i = c.local(ValType.i32);
      const s = c.local(ValType.i32);
      c.for(i, () => c.i32(0), () => c.get(0), 1, () => {
        c.get(s).get(i).op(Op.i32_add).set(s);
      });
      c.get(s);
    }, 'sum');
    const ex = instantiate(mb);
    expect(ex.sum!(10)).toBe(45);
    expect(ex.sum!(0)).toBe(0);
  });

  it('calls one function from another and reuses identical types', () => {
    const mb = new ModuleBuilder();
    const sq = mb.func([ValType.f64], [ValType.f64], (c) => void c.get(0).get(0).op(Op.f64_mul));
    mb.func([ValType.f64], [ValType.f64], (c) => void c.get(0).call(sq).f64(0.5).op(Op.f64_add), 'f');
    expect(instantiate(mb).f!(3)).toBe(9.5);
  });

  it('runs f32x4 SIMD on an imported memory', () => {
    const mb = new ModuleBuilder().importMemory(1);
    mb.func([], [], (c) => {
      c.i32(32).i32(0).simdMem(Simd.v128_load, 4).i32(16).simdMem(Simd.v128_load, 4).simd(Simd.f32x4_mul).simdMem(Simd.v128_store, 4);
      c.i32(48).f32(2.5).simd(Simd.f32x4_splat).simdMem(Simd.v128_store, 4);
    }, 'go');
    const memory = new WA.Memory({ initial: 1 });
    const f = new Float32Array(memory.buffer);
    f.set([1, 2, 3, 4, 5, 6, 7, 8]);
    instantiate(mb, memory).go!();
    expect([...f.subarray(8, 16)]).toEqual([5, 12, 21, 32, 2.5, 2.5, 2.5, 2.5]);
  });

  it('declares a shared memory import with its maximum', () => {
    const mb = new ModuleBuilder().importMemory(1, 10, true);
    mb.func([], [ValType.i32], (c) => void c.i32(0).mem(Op.i32_load, 2), 'first');
    expect(WA.validate(mb.encode())).toBe(true);
    expect(() => new ModuleBuilder().importMemory(1, undefined, true)).toThrow(/maximum/);
  });

  it('rejects a body with an unclosed block', () => {
    const c = new Code([]);
    c.block();
    expect(() => c.encode()).toThrow(/unclosed/);
  });

  it('emits relaxed-SIMD FMA that computes a·b + c where the runtime has it', () => {
    if (!wasmFeatures().relaxed) return;
    const mb = new ModuleBuilder().importMemory(1);
    mb.func([], [], (c) => {
      c.i32(48);
      c.i32(0).simdMem(Simd.v128_load, 4).i32(16).simdMem(Simd.v128_load, 4).i32(32).simdMem(Simd.v128_load, 4);
      c.simd(Simd.f32x4_relaxed_madd).simdMem(Simd.v128_store, 4);
    }, 'go');
    const memory = new WA.Memory({ initial: 1 });
    const f = new Float32Array(memory.buffer);
    f.set([1, 2, 3, 4, 10, 20, 30, 40, 0.5, 0.5, 0.5, 0.5]);
    instantiate(mb, memory).go!();
    expect([...f.subarray(12, 16)]).toEqual([10.5, 40.5, 90.5, 160.5]);
  });
});
