/**
 * @file packedGather on each native backend against the js oracle, bit for bit: 1/2/4/8-bit fields
 * (groups starting mid-byte), uint8 and int8 codes, zero points and β offsets, float32 and float64
 * tables, repeated and unordered indices; an index out of range is js's RangeError.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsKernels, type Backend } from '@qgrad/kernels';
import { type Arg, type FloatDType, mismatch, NATIVE, randomArray } from './helpers.js';

let one!: Backend;

const flat = (data: Arg['data'], dtype: Arg['dtype']): Arg => ({ data, dtype, shape: [data.length], strides: [1], offset: 0 });

const caseArb = fc.record({
  V: fc.integer({ min: 1, max: 40 }),
  groups: fc.integer({ min: 1, max: 4 }),
  groupSize: fc.constantFrom(1, 3, 8, 17, 32, 64),
  bits: fc.constantFrom(1, 2, 4, 8),
  zeroPoint: fc.boolean(),
  beta: fc.boolean(),
  int8: fc.boolean(),
  dtype: fc.constantFrom<FloatDType>('float32', 'float64'),
  extra: fc.nat(40),
  seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
});

type Case = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

/** The gather's inputs and params; enough rows looked up (≥ 1024 values) that wasm takes the call. */
function operands(c: Case) {
  const D = c.groups * c.groupSize;
  const N = Math.ceil(1024 / D) + c.extra;
  const nBytes = Math.ceil((c.V * D * c.bits) / 8);
  const r = randomArray('float64', nBytes + N, c.seed);
  const bytes = Uint8Array.from({ length: nBytes }, (_, i) => Math.floor((r[i]! + 1) * 128) & 0xff);
  const codes = c.int8 ? flat(new Int8Array(bytes.buffer), 'int8') : flat(bytes, 'uint8');
  const idx = flat(Int32Array.from({ length: N }, (_, n) => Math.floor(((r[nBytes + n]! + 1) / 2) * c.V) % c.V), 'int32');
  const table = flat(randomArray(c.dtype, 2 ** c.bits, c.seed ^ 0x77), c.dtype);
  const scale = flat(randomArray(c.dtype, c.V * c.groups, c.seed ^ 0x55).map((v) => 0.01 + Math.abs(v)), c.dtype);
  const zero = flat(randomArray(c.dtype, c.V * c.groups, c.seed ^ 0x99), c.dtype);
  const inputs = [idx, codes, table, scale, ...(c.zeroPoint ? [zero] : [])];
  const params = { bits: c.bits, rows: c.V, groupSize: c.groupSize, zeroPoint: c.zeroPoint, ...(c.beta && { offset: 'beta' as const }) };
  const out = (): Arg => ({ data: c.dtype === 'float32' ? new Float32Array(N * D) : new Float64Array(N * D), dtype: c.dtype, shape: [N, D], strides: [D, 1], offset: 0 });
  return { inputs, params, out, N, idx };
}

describe.each(NATIVE)('$label packedGather', (entry) => {
  beforeAll(() => {
    one = entry.create({ threads: 1, eager: true });
  });
  afterAll(() => one.dispose());

  it('decodes the rows looked up bit for bit as js does (1/2/4/8 bits, int8 codes, zero points, β, float32 and float64)', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const { inputs, params, out } = operands(c);
        const [ref, got] = [out(), out()];
        jsKernels.packedGather(inputs, ref, params);
        one.run('packedGather', inputs, got, params);
        expect(mismatch(got.data, ref.data, 0, 0)).toBe(-1);
      }),
      { numRuns: 120 },
    );
    if (entry.name === 'wasm') expect(one.ranOn!('packedGather', 'int32')).toBe('wasm');
  });

  it('raises js\'s RangeError for an index out of range', () => {
    const c: Case = { V: 5, groups: 2, groupSize: 32, bits: 4, zeroPoint: false, beta: false, int8: false, dtype: 'float32', extra: 3, seed: 7 };
    const { inputs, params, out, idx } = operands(c);
    (idx.data as Int32Array)[9] = 5;
    expect(() => one.run('packedGather', inputs, out(), params)).toThrow('packedGather: index 5 (at position 9) is out of range [0, 5)');
    (idx.data as Int32Array)[9] = -1;
    expect(() => one.run('packedGather', inputs, out(), params)).toThrow('packedGather: index -1 (at position 9) is out of range [0, 5)');
  });
});
