import fc from 'fast-check';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb } from '@qgrad/core/testing';
import type { DType, Tensor } from '@qgrad/core';

const dir = mkdtempSync(join(tmpdir(), 'qgrad-st-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const bits = (t: Tensor) => {
  const d = t.data;
  return Array.from(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
};

/** Builds a file by hand: header object, raw data bytes. */
function rawFile(header: unknown, data: Uint8Array | number[] = [], headerLength?: number): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function randomValues(dtype: DType, n: number, seed: number): q.Tensor {
  const g = new q.Generator(seed);
  const bytes = { float32: 4, float64: 8, int32: 4, int8: 1, uint8: 1 }[dtype];
  // random bit patterns, including NaN payloads and subnormals, for the float dtypes
  const raw = new Uint8Array(n * bytes).map(() => g.nextUint32() & 0xff);
  const Ctor = { float32: Float32Array, float64: Float64Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array }[dtype];
  return q.tensor(new Ctor(raw.buffer), { dtype });
}

describe('safetensors round trip', () => {
  const DT: DType[] = ['float32', 'float64', 'int32', 'int8', 'uint8'];
  for (const dtype of DT) {
    it(`${dtype} tensors of random shapes and bit patterns come back bit-exactly`, () => {
      fc.assert(
        fc.property(arb.shape({ maxRank: 3 }), fc.integer(), (shape, seed) => {
          const n = shape.reduce((a, b) => a * b, 1);
          const t = randomValues(dtype, n, seed).reshape(shape);
          const back = q.deserializeSafetensors(q.serializeSafetensors({ t })).tensors.t!;
          expect(back.dtype).toBe(dtype);
          expect(back.shape).toEqual(shape);
          expect(bits(back)).toEqual(bits(t));
        }),
        { numRuns: 12 },
      );
    });
  }

  it('a mix of dtypes, a non-contiguous view and metadata survive a file round trip', () => {
    const tensors = {
      'layers.0.weight': q.randn([3, 4]),
      'layers.0.bias': q.randn([3], { dtype: 'float64' }),
      transposed: q.arange(6, undefined, 1, { dtype: 'float32' }).reshape(2, 3).t(),
      steps: q.tensor([7], { dtype: 'int32' }),
      codes: q.tensor([-3, 4], { dtype: 'int8' }),
      mask: q.tensor([1, 0, 1], { dtype: 'uint8' }),
      scalar: q.tensor(2.5),
    };
    const path = join(dir, 'mix.safetensors');
    q.saveSafetensors(path, tensors, { epoch: '3', note: 'ünïcode' });
    const { tensors: back, metadata } = q.loadSafetensorsWithMetadata(path);
    expect(metadata).toEqual({ epoch: '3', note: 'ünïcode' });
    expect(Object.keys(back).sort()).toEqual(Object.keys(tensors).sort());
    for (const [k, t] of Object.entries(tensors)) {
      expect(back[k]!.shape, k).toEqual(t.shape);
      expect(back[k]!.dtype, k).toBe(t.dtype);
      expect(bits(back[k]!), k).toEqual(bits(t));
    }
    expect(q.loadSafetensors(path).transposed!.toArray()).toEqual([[0, 3], [1, 4], [2, 5]]);
  });

  it('the header is padded to 8 bytes and every tensor starts aligned to its element size', () => {
    const bytes = q.serializeSafetensors({ a: q.tensor([1], { dtype: 'int8' }), b: q.randn([3], { dtype: 'float64' }), c: q.randn([1]) });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    expect(header.b.data_offsets).toEqual([0, 24]);
    expect(header.c.data_offsets).toEqual([24, 28]);
    expect(header.a.data_offsets).toEqual([28, 29]);
    expect(header.__metadata__).toBeUndefined();
  });

  it('saving writes through a temporary file and leaves no temporary behind', () => {
    const sub = mkdtempSync(join(dir, 'atomic-'));
    const path = join(sub, 'w.safetensors');
    writeFileSync(path, 'old contents');
    q.saveSafetensors(path, { w: q.ones([2]) });
    expect(readdirSync(sub)).toEqual(['w.safetensors']);
    expect(q.loadSafetensors(path).w!.toArray()).toEqual([1, 1]);
  });

  it("refuses '__metadata__' as a tensor name and non-string metadata", () => {
    expect(() => q.serializeSafetensors({ __metadata__: q.ones([1]) })).toThrow(/reserved/);
    expect(() => q.serializeSafetensors({ w: q.ones([1]) }, { n: 3 as unknown as string })).toThrow(/metadata values must be strings; 'n' is number/);
  });
});

describe('safetensors half-precision decoding', () => {
  it('F16 bit patterns decode to the IEEE binary16 values', () => {
    const cases: [number, number][] = [
      [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504], [0x0001, 2 ** -24],
      [0x03ff, 1023 * 2 ** -24], [0x0400, 2 ** -14], [0x8000, -0], [0x7c00, Infinity], [0xfc00, -Infinity],
    ];
    for (const [b, v] of cases) expect(Object.is(q.f16ToFloat(b), v), `0x${b.toString(16)}`).toBe(true);
    expect(q.f16ToFloat(0x7e00)).toBeNaN();
  });

  it('BF16 bit patterns decode to the top half of a float32', () => {
    const cases: [number, number][] = [[0x3f80, 1], [0xc020, -2.5], [0x3e20, 0.15625], [0x4049, 3.140625], [0x7f80, Infinity], [0x0001, 2 ** -133]];
    for (const [b, v] of cases) expect(q.bf16ToFloat(b), `0x${b.toString(16)}`).toBe(v);
    expect(q.bf16ToFloat(0x7fc0)).toBeNaN();
  });

  it('F16 and BF16 tensors in a file load as float32', () => {
    const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x0001]).buffer);
    const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0xc020]).buffer);
    const file = rawFile({ h: { dtype: 'F16', shape: [3], data_offsets: [0, 6] }, b: { dtype: 'BF16', shape: [2], data_offsets: [6, 10] } }, [...f16, ...bf16]);
    const { tensors } = q.deserializeSafetensors(file);
    expect(tensors.h!.dtype).toBe('float32');
    expect(Array.from(tensors.h!.data)).toEqual([1, -2, Math.fround(2 ** -24)]);
    expect(Array.from(tensors.b!.data)).toEqual([1, -2.5]);
  });
});

describe('safetensors malformed files', () => {
  const ok = () => rawFile({ w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } }, new Uint8Array(16));

  it('a header length beyond the file names byte 0 and the file size', () => {
    const f = rawFile({}, [], 999999);
    expect(() => q.deserializeSafetensors(f)).toThrow(`safetensors: header length 999999 at byte 0 exceeds file size ${f.length}`);
  });

  it('a file shorter than 8 bytes is rejected', () => {
    expect(() => q.deserializeSafetensors(new Uint8Array(5))).toThrow('file of 5 bytes is too short for the 8-byte header length at byte 0');
  });

  it('a header that is not JSON names its byte range', () => {
    const f = ok();
    f[20] = 0xff;
    expect(() => q.deserializeSafetensors(f)).toThrow(/header at bytes 8\.\.\d+ is not valid UTF-8 JSON/);
    const g = ok();
    g[8] = 0x5b; // '['
    expect(() => q.deserializeSafetensors(g)).toThrow("header at byte 8 must be a JSON object starting with '{'");
  });

  it('data_offsets that disagree with shape and dtype name the tensor, the byte and both sizes', () => {
    const f = rawFile({ w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, new Uint8Array(12));
    const n = f.length - 12;
    expect(() => q.deserializeSafetensors(f)).toThrow(`safetensors: tensor 'w' data_offsets [0, 12] at byte ${n} do not match shape [2, 2] F32 (16 bytes)`);
  });

  it('a truncated file names the tensor that runs past the end', () => {
    const f = ok().subarray(0, ok().length - 3);
    expect(() => q.deserializeSafetensors(f)).toThrow(/tensor 'w' data_offsets \[0, 16\] at byte \d+ run past the end of the file \(byte \d+; truncated\?\)/);
  });

  it('holes, overlaps and trailing bytes are rejected with their byte offsets', () => {
    const hole = rawFile({ a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] }, b: { dtype: 'U8', shape: [2], data_offsets: [4, 6] } }, new Uint8Array(6));
    expect(() => q.deserializeSafetensors(hole)).toThrow(/tensor 'b' data_offsets \[4, 6\] at byte \d+ leave a hole after byte \d+/);
    const overlap = rawFile({ a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] }, b: { dtype: 'U8', shape: [2], data_offsets: [2, 4] } }, new Uint8Array(4));
    expect(() => q.deserializeSafetensors(overlap)).toThrow(/overlap the previous tensor/);
    const trailing = rawFile({ a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] } }, new Uint8Array(5));
    expect(() => q.deserializeSafetensors(trailing)).toThrow(/3 trailing bytes at byte \d+ are not covered by any tensor/);
  });

  it('unsupported dtypes and broken entries are named', () => {
    const i64 = rawFile({ ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8));
    expect(() => q.deserializeSafetensors(i64)).toThrow(/tensor 'ids' at byte \d+ has unsupported dtype I64/);
    const noShape = rawFile({ w: { dtype: 'F32', data_offsets: [0, 4] } }, new Uint8Array(4));
    expect(() => q.deserializeSafetensors(noShape)).toThrow("tensor 'w' in the header at byte 8 has an invalid shape undefined");
    const badMeta = rawFile({ __metadata__: { n: 1 } });
    expect(() => q.deserializeSafetensors(badMeta)).toThrow("__metadata__ value 'n' in the header at byte 8 must be a string");
  });

  it('errors from loadSafetensors name the file', () => {
    const path = join(dir, 'bad.safetensors');
    writeFileSync(path, rawFile({}, [], 999));
    expect(() => q.loadSafetensors(path)).toThrow(/exceeds file size \d+ \(in .*bad\.safetensors\)/);
  });
});

describe('safetensors fixture written by Python', () => {
  const path = fileURLToPath(new URL('./fixtures/python.safetensors', import.meta.url));

  it('loads every dtype with the values the script wrote', () => {
    const { tensors: t, metadata } = q.loadSafetensorsWithMetadata(path);
    expect(metadata).toEqual({ format: 'pt', producer: 'scripts/golden/safetensors_fixture.py' });
    expect(t.i8!.dtype).toBe('int8');
    expect(t.i8!.toArray()).toEqual([-128, 0, 127]);
    expect(t.f32!.shape).toEqual([2, 3]);
    expect(Array.from(t.f32!.data)).toEqual([1, -2.5, Math.fround(0.1), Math.fround(3e38), -0, Math.fround(1e-45)]);
    expect(Array.from(t.f64!.data)).toEqual([0.1, -1e308]);
    expect(t.i32!.toArray()).toEqual([[-2147483648, -1], [0, 2147483647]]);
    expect(t.u8!.toArray()).toEqual([0, 1, 128, 255]);
    expect(t.f16!.dtype).toBe('float32');
    expect(Array.from(t.f16!.data)).toEqual([1, -2, 0.5, 65504, Math.fround(2 ** -24), Infinity]);
    expect(Array.from(t.bf16!.data)).toEqual([1, -2.5, 0.15625, 3.140625]);
    expect(t.empty!.shape).toEqual([0, 3]);
  });

  it('re-saving the fixture through qgrad keeps the lossless tensors bit-exact', () => {
    const t = q.loadSafetensors(path);
    const back = q.deserializeSafetensors(q.serializeSafetensors(t)).tensors;
    for (const k of ['i8', 'f32', 'f64', 'i32', 'u8']) expect(bits(back[k]!), k).toEqual(bits(t[k]!));
    expect(readFileSync(path).length).toBeGreaterThan(8);
  });
});
