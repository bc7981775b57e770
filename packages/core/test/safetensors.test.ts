import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
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
  const d = t.dataSync();
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

  it('saving or loading removes the temporaries that dead writers of the same target left, and no other file', () => {
    const sub = mkdtempSync(join(dir, 'stale-'));
    const path = join(sub, 'w.safetensors');
    // a process that has exited: its pid names no live process
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    const live = process.ppid; // the test runner's parent is alive while we run
    const stale = [`w.safetensors.tmp-${dead}-k3j9x0aa`, `w.safetensors.tmp-${process.pid}-zz12ab34`];
    const kept = [`w.safetensors.tmp-${live}-q8w7e6r5`, `v.safetensors.tmp-${dead}-k3j9x0aa`, 'w.safetensors.tmp-notes', `w.safetensors.tmp-${dead}-a.b`];
    for (const f of [...stale, ...kept]) writeFileSync(join(sub, f), 'partial');
    q.saveSafetensors(path, { w: q.ones([2]) });
    expect(readdirSync(sub).sort()).toEqual([...kept, 'w.safetensors'].sort());
    writeFileSync(join(sub, stale[0]!), 'partial');
    expect(q.loadSafetensors(path).w!.toArray()).toEqual([1, 1]);
    expect(readdirSync(sub).sort()).toEqual([...kept, 'w.safetensors'].sort());
  });

  it("refuses '__metadata__' as a tensor name and non-string metadata", () => {
    expect(() => q.serializeSafetensors({ __metadata__: q.ones([1]) })).toThrow(/reserved/);
    expect(() => q.serializeSafetensors({ w: q.ones([1]) }, { n: 3 as unknown as string })).toThrow(/metadata values must be strings; 'n' is number/);
  });
});

describe('safetensors names that are also JavaScript properties', () => {
  /** A record with an own `__proto__` key (an object literal's `__proto__:` would set the prototype instead). */
  const own = <T>(entries: [string, T][]): Record<string, T> => {
    const r: Record<string, T> = Object.create(null);
    for (const [k, v] of entries) r[k] = v;
    return r;
  };

  it("a tensor named '__proto__' round-trips through bytes and files, and the records keep a null prototype", () => {
    const tensors = own([['__proto__', q.tensor([1, 2, 3])], ['constructor', q.tensor([4], { dtype: 'int32' })], ['w', q.ones([2])]]);
    const metadata = own([['__proto__', 'meta'], ['toString', 'x']]);
    const bytes = q.serializeSafetensors(tensors, metadata);
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))));
    expect(header).toContain('"__proto__":{"dtype":"F32","shape":[3]');
    expect(header).toContain('"__proto__":"meta"');
    const path = join(dir, 'proto.safetensors');
    q.saveSafetensors(path, tensors, metadata);
    for (const back of [q.deserializeSafetensors(bytes), q.loadSafetensorsWithMetadata(path)]) {
      expect(Object.getPrototypeOf(back.tensors)).toBeNull();
      expect(Object.getPrototypeOf(back.metadata)).toBeNull();
      expect(Object.keys(back.tensors).sort()).toEqual(['__proto__', 'constructor', 'w']);
      expect(back.tensors['__proto__']!.toArray()).toEqual([1, 2, 3]);
      expect(back.tensors['constructor']!.toArray()).toEqual([4]);
      expect(Object.keys(back.metadata).sort()).toEqual(['__proto__', 'toString']);
      expect(back.metadata['__proto__']).toBe('meta');
    }
  });

  it("reads a '__proto__' tensor from a hand-written file (JSON.parse makes it an own key)", () => {
    const f = new TextEncoder().encode('{"__proto__":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}');
    const file = new Uint8Array(8 + f.length + 2);
    new DataView(file.buffer).setBigUint64(0, BigInt(f.length), true);
    file.set(f, 8);
    file.set([7, 9], 8 + f.length);
    const { tensors } = q.deserializeSafetensors(file);
    expect(Object.keys(tensors)).toEqual(['__proto__']);
    expect(tensors['__proto__']!.toArray()).toEqual([7, 9]);
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
    expect(Array.from(tensors.h!.dataSync())).toEqual([1, -2, Math.fround(2 ** -24)]);
    expect(Array.from(tensors.b!.dataSync())).toEqual([1, -2.5]);
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

  it('__metadata__ that is an array, a string or null is rejected naming the header bytes', () => {
    for (const meta of [['a', 'b'], 'text', null, 3]) {
      const f = rawFile({ __metadata__: meta });
      const n = f.length - 8;
      expect(() => q.deserializeSafetensors(f), JSON.stringify(meta)).toThrow(`safetensors: __metadata__ in the header at bytes 8..${8 + n} must be an object of strings, got ${Array.isArray(meta) ? 'an array' : meta === null ? 'null' : typeof meta}`);
    }
  });

  it('a tensor name given twice in the header is rejected naming the tensor and the header bytes', () => {
    // JSON.parse keeps the last duplicate: without the check this loads 'w' as int32, silently
    const text = '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}, "b":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},"\\u0077":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}';
    const h = new TextEncoder().encode(text);
    const f = new Uint8Array(8 + h.length + 4);
    new DataView(f.buffer).setBigUint64(0, BigInt(h.length), true);
    f.set(h, 8);
    expect(() => q.deserializeSafetensors(f)).toThrow(`safetensors: tensor 'w' appears more than once in the header at bytes 8..${8 + h.length}`);
    // the same key inside a nested object is not a duplicate tensor name
    const nested = rawFile({ w: { dtype: 'U8', shape: [1], data_offsets: [0, 1] }, __metadata__: { w: 'x', 'a"\\': 'y' } }, [5]);
    expect(q.deserializeSafetensors(nested).tensors.w!.toArray()).toEqual([5]);
    const meta = new TextEncoder().encode('{"__metadata__":{"a":"1"},"__metadata__":{"b":"2"}}');
    const g = new Uint8Array(8 + meta.length);
    new DataView(g.buffer).setBigUint64(0, BigInt(meta.length), true);
    g.set(meta, 8);
    expect(() => q.deserializeSafetensors(g)).toThrow(`safetensors: __metadata__ appears more than once in the header at bytes 8..${8 + meta.length}`);
    // keys repeated inside one tensor's entry or inside __metadata__ are as ambiguous
    const inner = (text: string, data: number[]) => {
      const t = new TextEncoder().encode(text);
      const file = new Uint8Array(8 + t.length + data.length);
      new DataView(file.buffer).setBigUint64(0, BigInt(t.length), true);
      file.set(t, 8);
      file.set(data, 8 + t.length);
      return () => q.deserializeSafetensors(file);
    };
    expect(inner('{"w":{"dtype":"U8","shape":[1],"dtype":"I8","data_offsets":[0,1]}}', [255])).toThrow(/^safetensors: key 'dtype' in tensor 'w' appears more than once in the header at bytes 8\.\.\d+$/);
    expect(inner('{"__metadata__":{"a":"1","b":"","a":"2"}}', [])).toThrow(/^safetensors: key 'a' in __metadata__ appears more than once/);
    // equal keys in sibling objects, or after an array at the same depth, are not repeats
    expect(inner('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"shape":[1],"dtype":"U8","data_offsets":[1,2]}}', [1, 2])).not.toThrow();
  });

  it('errors from loadSafetensors name the file', () => {
    const path = join(dir, 'bad.safetensors');
    writeFileSync(path, rawFile({}, [], 999));
    expect(() => q.loadSafetensors(path)).toThrow(/exceeds file size \d+ \(in .*bad\.safetensors\)/);
  });
});

describe('safetensors fuzzed files', () => {
  // names that are Object.prototype members or special to the format, next to plain ones
  const NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', '__defineGetter__', '__metadata__', 'w', 'a.b', '0', ''];
  const name = fc.oneof(fc.constantFrom(...NAMES), fc.string({ maxLength: 4 }));
  const BYTES: Record<string, number> = { F32: 4, F64: 8, I32: 4, I8: 1, U8: 1, F16: 2, BF16: 2, I64: 8 };
  const entry = fc.record({ name, dtype: fc.constantFrom(...Object.keys(BYTES), 'X'), shape: fc.array(fc.nat(3), { maxLength: 2 }) });
  const metadata = fc.oneof(
    fc.constant(undefined),
    fc.array(fc.tuple(name, fc.oneof(fc.string({ maxLength: 3 }), fc.constant(1 as unknown as string))), { maxLength: 3 }),
    fc.array(fc.tuple(fc.constantFrom('__proto__', 'a'), fc.string({ maxLength: 2 })), { maxLength: 3 }),
    fc.constantFrom<unknown>(['a'], 'text', null, {}),
  );
  const mutation = fc.oneof(fc.constant(null), fc.record({ at: fc.nat(), byte: fc.nat(255) }), fc.record({ cut: fc.nat() }));

  /** Writes the header text by hand, so that repeated names really repeat in the file. */
  function build(entries: { name: string; dtype: string; shape: number[] }[], meta: unknown): { file: Uint8Array; repeated: boolean } {
    const parts: string[] = [];
    let offset = 0;
    for (const e of entries) {
      const size = e.shape.reduce((a, b) => a * b, 1) * (BYTES[e.dtype] ?? 1);
      parts.push(`${JSON.stringify(e.name)}:${JSON.stringify({ dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + size] })}`);
      offset += size;
    }
    const metaKeys: string[] = [];
    if (Array.isArray(meta) && meta.every(Array.isArray)) {
      const pairs = meta as [string, string][];
      metaKeys.push(...pairs.map(([k]) => k));
      parts.unshift(`"__metadata__":{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
    } else if (meta !== undefined) parts.unshift(`"__metadata__":${JSON.stringify(meta)}`);
    const names = [...entries.map((e) => e.name), ...(meta !== undefined ? ['__metadata__'] : [])];
    const h = new TextEncoder().encode(`{${parts.join(',')}}`);
    const g = new q.Generator(offset + h.length);
    const data = new Uint8Array(offset).map(() => g.nextUint32() & 0xff);
    const file = new Uint8Array(8 + h.length + offset);
    new DataView(file.buffer).setBigUint64(0, BigInt(h.length), true);
    file.set(h, 8);
    file.set(data, 8 + h.length);
    const repeated = new Set(names).size < names.length || new Set(metaKeys).size < metaKeys.length;
    return { file, repeated };
  }

  it('either throw a safetensors error or load every header key, onto records whose prototype is untouched', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 4 }), metadata, mutation, (entries, meta, mut) => {
        let { file, repeated } = build(entries, meta);
        if (mut && 'at' in mut) {
          file = file.slice();
          file[mut.at % file.length] = mut.byte;
        } else if (mut) file = file.subarray(0, mut.cut % (file.length + 1));
        let loaded: ReturnType<typeof q.deserializeSafetensors>;
        try {
          loaded = q.deserializeSafetensors(file);
        } catch (e) {
          expect(e).toBeInstanceOf(Error);
          expect((e as Error).message).toMatch(/^safetensors: /);
          return;
        }
        if (!mut) expect(repeated, 'a repeated name loaded').toBe(false);
        const { tensors, metadata: md } = loaded;
        expect(Object.getPrototypeOf(tensors)).toBeNull();
        expect(Object.getPrototypeOf(md)).toBeNull();
        // the header as this test reads it: every key the file holds must come back
        const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
        const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n))) as Record<string, { shape: number[] }>;
        const names = Object.keys(header).filter((k) => k !== '__metadata__');
        expect(Object.keys(tensors).sort()).toEqual(names.sort());
        for (const k of names) expect(tensors[k]!.shape, k).toEqual(header[k]!.shape);
        const want = Object.hasOwn(header, '__metadata__') ? (header.__metadata__ as unknown as Record<string, string>) : {};
        expect(Object.keys(md).sort()).toEqual(Object.keys(want).sort());
        for (const k of Object.keys(want)) expect(md[k], k).toBe(want[k]);
      }),
      { numRuns: 600 },
    );
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
    expect(Array.from(t.f32!.dataSync())).toEqual([1, -2.5, Math.fround(0.1), Math.fround(3e38), -0, Math.fround(1e-45)]);
    expect(Array.from(t.f64!.dataSync())).toEqual([0.1, -1e308]);
    expect(t.i32!.toArray()).toEqual([[-2147483648, -1], [0, 2147483647]]);
    expect(t.u8!.toArray()).toEqual([0, 1, 128, 255]);
    expect(t.f16!.dtype).toBe('float32');
    expect(Array.from(t.f16!.dataSync())).toEqual([1, -2, 0.5, 65504, Math.fround(2 ** -24), Infinity]);
    expect(Array.from(t.bf16!.dataSync())).toEqual([1, -2.5, 0.15625, 3.140625]);
    expect(t.empty!.shape).toEqual([0, 3]);
  });

  it('re-saving the fixture through qgrad keeps the lossless tensors bit-exact', () => {
    const t = q.loadSafetensors(path);
    const back = q.deserializeSafetensors(q.serializeSafetensors(t)).tensors;
    for (const k of ['i8', 'f32', 'f64', 'i32', 'u8']) expect(bits(back[k]!), k).toEqual(bits(t[k]!));
    expect(readFileSync(path).length).toBeGreaterThan(8);
  });
});
