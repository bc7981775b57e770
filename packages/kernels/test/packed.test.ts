/**
 * @file packedMatmul: the js oracle against a float64 dequantize-then-matmul, each native backend
 * against the oracle (fast-check over shapes, bit widths, group sizes, zero points, bias, one row
 * and several), and the operand errors.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWasmBackend, jsKernels, type Backend, type PackedMatmulParams } from '@qgrad/kernels';
import { type Arg, mismatch, NATIVE, nativeCalls, randomArray } from './helpers.js';

type TableKind = 'levels' | 'int' | 'int8' | 'uint8' | 'fp4';

interface Case {
  N: number;
  O: number;
  groups: number;
  groupSize: number;
  bits: 1 | 2 | 4 | 8;
  zeroPoint: boolean;
  bias: boolean;
  table: TableKind;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  N: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 5 })),
  O: fc.integer({ min: 1, max: 9 }),
  groups: fc.integer({ min: 1, max: 4 }),
  // around the 16-field chunk: whole chunks, chunk + tail, tail only, and groups starting mid-byte (odd sizes)
  groupSize: fc.constantFrom(1, 3, 8, 15, 16, 17, 32, 33, 48, 64),
  bits: fc.constantFrom(1, 2, 4, 8),
  zeroPoint: fc.boolean(),
  bias: fc.boolean(),
  table: fc.constantFrom('levels', 'int', 'int8', 'uint8'),
  seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
});

const flat = (data: Float32Array | Uint8Array | Int8Array, dtype: Arg['dtype']): Arg => ({ data, dtype, shape: [data.length], strides: [1], offset: 0 });

/** The level table of a case: random levels (NF4-like), an int grid's f + codeMin, or the int8/uint8 identity (8-bit codes stored as integers). */
function tableOf(c: Case): Float32Array {
  const n = 2 ** c.bits;
  if (c.table === 'levels') return randomArray('float32', n, c.seed ^ 0x7777) as Float32Array;
  // FP4 E2M1's levels (bfloat16 values: their float32 low halves are zero)
  if (c.table === 'fp4') return Float32Array.from([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6].slice(0, n));
  if (c.table === 'int' || c.bits < 8) return Float32Array.from({ length: n }, (_, f) => f - 2 ** (c.bits - 1));
  return Float32Array.from({ length: n }, (_, f) => (c.table === 'int8' && f >= 128 ? f - 256 : f));
}

function operands(c: Case): { inputs: Arg[]; params: PackedMatmulParams; K: number } {
  const K = c.groups * c.groupSize;
  const G = c.groups;
  const x = randomArray('float32', c.N * K, c.seed);
  const codes = new Uint8Array(Math.ceil((c.O * K * c.bits) / 8));
  const r = randomArray('float64', codes.length, c.seed ^ 0x1234);
  for (let i = 0; i < codes.length; i++) codes[i] = Math.floor((r[i]! + 1) * 128) & 0xff;
  const scale = Float32Array.from(randomArray('float32', c.O * G, c.seed ^ 0x55), (v) => 0.01 + Math.abs(v));
  const zero = Float32Array.from(randomArray('float32', c.O * G, c.seed ^ 0x99), (v) => Math.round(v * 4) / 2);
  const bias = randomArray('float32', c.O, c.seed ^ 0x42) as Float32Array;
  const inputs: Arg[] = [{ data: x, dtype: 'float32', shape: [c.N, K], strides: [K, 1], offset: 0 }, flat(codes, 'uint8'), flat(tableOf(c), 'float32'), flat(scale, 'float32')];
  if (c.zeroPoint) inputs.push(flat(zero, 'float32'));
  if (c.bias) inputs.push(flat(bias, 'float32'));
  return { inputs, params: { bits: c.bits, outFeatures: c.O, groupSize: c.groupSize, zeroPoint: c.zeroPoint, bias: c.bias }, K };
}

/** The weight dequantized in float64, W[o, k] = s·(L[field] − z), fields read back from the bytes independently of the kernels. */
function dequantized(c: Case, inputs: Arg[], K: number): Float64Array {
  const [, codes, table, scale] = inputs as [Arg, Arg, Arg, Arg];
  const zero = c.zeroPoint ? inputs[4]! : null;
  const w = new Float64Array(c.O * K);
  for (let i = 0; i < w.length; i++) {
    const field = Number((BigInt(codes.data[Math.floor((i * c.bits) / 8)]!) >> BigInt((i * c.bits) % 8)) % BigInt(2 ** c.bits));
    const grp = Math.floor(i / c.groupSize);
    w[i] = scale.data[grp]! * (table.data[field]! - (zero ? zero.data[grp]! : 0));
  }
  return w;
}

/** Σ_k |x|·|w| per output (+ |b|): the scale float32 summation error is measured against. */
function magnitude(c: Case, inputs: Arg[], K: number, w: Float64Array): Float64Array {
  const x = inputs[0]!.data;
  const b = c.bias ? inputs[inputs.length - 1]!.data : null;
  const m = new Float64Array(c.N * c.O);
  for (let n = 0; n < c.N; n++) {
    for (let o = 0; o < c.O; o++) {
      let s = b ? Math.abs(b[o]!) : 0;
      for (let k = 0; k < K; k++) s += Math.abs(x[n * K + k]! * w[o * K + k]!);
      m[n * c.O + o] = s;
    }
  }
  return m;
}

const outArg = (N: number, O: number): Arg => ({ data: new Float32Array(N * O), dtype: 'float32', shape: [N, O], strides: [O, 1], offset: 0 });

describe('packedMatmul js oracle', () => {
  it('equals dequantize-then-matmul in float64, rounded once to float32', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const { inputs, params, K } = operands(c);
        const w = dequantized(c, inputs, K);
        const x = inputs[0]!.data;
        const b = c.bias ? inputs[inputs.length - 1]!.data : null;
        const want = new Float64Array(c.N * c.O);
        for (let n = 0; n < c.N; n++) {
          for (let o = 0; o < c.O; o++) {
            let y = 0;
            for (let k = 0; k < K; k++) y += x[n * K + k]! * w[o * K + k]!;
            want[n * c.O + o] = y + (b ? b[o]! : 0);
          }
        }
        const got = outArg(c.N, c.O);
        jsKernels.packedMatmul(inputs, got, params);
        // one float32 rounding of the result, plus float64 reassociation (per group, then scaled)
        const atol = Array.from(magnitude(c, inputs, K, w), (m) => 1e-12 * m);
        expect(mismatch(got.data, want, 2 ** -24, atol)).toBe(-1);
      }),
      { numRuns: 200 },
    );
  });

  it('reads int8 code buffers as their bytes', () => {
    const c: Case = { N: 2, O: 3, groups: 2, groupSize: 16, bits: 8, zeroPoint: true, bias: false, table: 'int8', seed: 5 };
    const { inputs, params } = operands(c);
    const asInt8: Arg = { ...inputs[1]!, data: new Int8Array((inputs[1]!.data as Uint8Array).buffer), dtype: 'int8' };
    const [a, b] = [outArg(2, 3), outArg(2, 3)];
    jsKernels.packedMatmul(inputs, a, params);
    jsKernels.packedMatmul([inputs[0]!, asInt8, ...inputs.slice(2)], b, params);
    expect(Array.from(b.data)).toEqual(Array.from(a.data));
  });

  describe('bad operands are errors naming the kernel and the value', () => {
    const c: Case = { N: 1, O: 4, groups: 2, groupSize: 16, bits: 4, zeroPoint: false, bias: false, table: 'int', seed: 3 };
    const { inputs, params } = operands(c);
    const run = (ins: Arg[], p: PackedMatmulParams) => () => jsKernels.packedMatmul(ins, outArg(1, p.outFeatures), p);
    it('a group size that does not divide K', () => {
      expect(run(inputs, { ...params, groupSize: 12 })).toThrow(/packedMatmul: group size 12 does not divide K = 32/);
    });
    it('a codes buffer too short', () => {
      expect(run([inputs[0]!, flat(new Uint8Array(63), 'uint8'), ...inputs.slice(2)], params)).toThrow(/packedMatmul: got 63 bytes of codes, but \[4, 32\] at 4 bits needs 64/);
    });
    it('a level table too short for the bit width', () => {
      expect(run([inputs[0]!, inputs[1]!, flat(new Float32Array(8), 'float32'), inputs[3]!], params)).toThrow(/packedMatmul: got 8 values of levels, but a 4-bit code .* needs 16/);
    });
    it('a bit width the layout does not have', () => {
      expect(run(inputs, { ...params, bits: 3 })).toThrow(/packedMatmul: bits must be 1, 2, 4 or 8, got 3/);
    });
    it('too few scales, and a missing zero-point input', () => {
      expect(run([...inputs.slice(0, 3), flat(new Float32Array(7), 'float32')], params)).toThrow(/packedMatmul: got 7 values of scales, but \[4, 32\] in groups of 16 needs 8/);
      expect(run(inputs, { ...params, zeroPoint: true })).toThrow(/packedMatmul: expected 5 inputs/);
    });
  });
});

/** Runs case c on `backend`, natively, checks it against the js oracle within float32 summation error, and returns its operands and result. */
function nativeEqualsOracle(backend: Backend, c: Case): ReturnType<typeof operands> & { got: Arg } {
  const { inputs, params, K } = operands(c);
  const [want, got] = [outArg(c.N, c.O), outArg(c.N, c.O)];
  jsKernels.packedMatmul(inputs, want, params);
  const before = nativeCalls(backend, 'packedMatmul');
  backend.run('packedMatmul', inputs, got, params);
  expect(nativeCalls(backend, 'packedMatmul')).toBe(before + 1);
  const atol = Array.from(magnitude(c, inputs, K, dequantized(c, inputs, K)), (m) => 2 * (K + 2) * 2 ** -24 * m);
  expect(mismatch(got.data, want.data, 0, atol)).toBe(-1);
  return { inputs, params, K, got };
}

describe.each(NATIVE)('$label packedMatmul', (entry) => {
  let backend!: Backend;
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => backend.dispose());

  it('equals the js oracle within float32 summation error, natively, for every bit width and layout', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        nativeEqualsOracle(backend, c);
      }),
      { numRuns: 150 },
    );
  });

  it('gives each row of a batched product exactly the product of that row alone', () => {
    fc.assert(
      fc.property(caseArb.filter((c) => c.N > 1), (c) => {
        const { inputs, params, K } = operands(c);
        const all = outArg(c.N, c.O);
        backend.run('packedMatmul', inputs, all, params);
        for (let n = 0; n < c.N; n++) {
          const row: Arg = { ...inputs[0]!, shape: [1, K], offset: n * K };
          const one = outArg(1, c.O);
          backend.run('packedMatmul', [row, ...inputs.slice(1)], one, params);
          expect(Array.from(one.data)).toEqual(Array.from(all.data.subarray(n * c.O, (n + 1) * c.O)));
        }
      }),
      { numRuns: 30 },
    );
  });

  it('equals the js oracle on groups of whole 16-byte units (the planar path), int-grid, bfloat16 (FP4) and arbitrary tables, one row and several', () => {
    // groupSize·bits a multiple of 128: wasm splits the bytes into bit planes, decodes an int
    // grid's table (L[f] = f + L[0]) without lookups, and scales each group once
    const planarArb = fc.record({
      N: fc.oneof(fc.constant(1), fc.integer({ min: 2, max: 4 })),
      O: fc.integer({ min: 1, max: 9 }),
      groups: fc.integer({ min: 1, max: 3 }),
      units: fc.integer({ min: 1, max: 3 }),
      bits: fc.constantFrom<1 | 2 | 4>(1, 2, 4),
      zeroPoint: fc.boolean(),
      bias: fc.boolean(),
      table: fc.constantFrom<TableKind>('levels', 'int', 'fp4'),
      seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    }).map(({ units, ...c }): Case => ({ ...c, groupSize: (units * 128) / c.bits }));
    fc.assert(
      fc.property(planarArb, (c) => {
        const { inputs, params, K, got } = nativeEqualsOracle(backend, c);
        for (let n = 0; n < c.N && c.N > 1; n++) {
          const one = outArg(1, c.O);
          backend.run('packedMatmul', [{ ...inputs[0]!, shape: [1, K], offset: n * K }, ...inputs.slice(1)], one, params);
          expect(Array.from(one.data)).toEqual(Array.from(got.data.subarray(n * c.O, (n + 1) * c.O)));
        }
      }),
      { numRuns: 120 },
    );
  });

  it('decodes 2-bit int-grid levels far from zero exactly (|L[0]| ≥ 2^15 through the table)', () => {
    // the row-order 2-bit decode subtracts 1.5·2^17 − L[0] for a field's top bits: exact only for
    // |L[0]| below 2^15; farther levels take the table (the same weights either way)
    for (const l0 of [-32768, -200, 77, 32767, 40000]) {
      const c: Case = { N: 2, O: 5, groups: 2, groupSize: 64, bits: 2, zeroPoint: true, bias: false, table: 'int', seed: 13 };
      const { inputs, params } = operands(c);
      const ins = [inputs[0]!, inputs[1]!, flat(Float32Array.from([0, 1, 2, 3], (f) => l0 + f), 'float32'), ...inputs.slice(3)];
      const [want, got] = [outArg(2, 5), outArg(2, 5)];
      jsKernels.packedMatmul(ins, want, params);
      backend.run('packedMatmul', ins, got, params);
      expect(mismatch(got.data, want.data, 1e-6, 0)).toBe(-1);
    }
  });

  it('decodes bfloat16 levels (two lookups) to the same weights as any table (four): bit for bit', () => {
    // the FP4 table, and the same with one level off bfloat16 by an ulp (float32 low half nonzero)
    // where no code selects it: the same weights, one decoded each way
    for (const bits of [1, 2, 4] as const) {
      for (const [N, zeroPoint] of [[1, false], [3, true]] as const) {
        const c: Case = { N, O: 7, groups: 2, groupSize: 256 / bits, bits, zeroPoint, bias: true, table: 'fp4', seed: 61 + bits };
        const { inputs, params } = operands(c);
        const codes = Uint8Array.from(inputs[1]!.data as Uint8Array, (b) => b & (bits === 4 ? 0x77 : bits === 2 ? 0x55 : 0xff));
        const table = inputs[2]!.data as Float32Array;
        const off = Float32Array.from(table);
        if (bits > 1) off[bits === 4 ? 15 : 3] = Math.fround(off[bits === 4 ? 15 : 3]! * (1 + 2 ** -20));
        const [a, b] = [outArg(N, 7), outArg(N, 7)];
        backend.run('packedMatmul', [inputs[0]!, flat(codes, 'uint8'), flat(table, 'float32'), ...inputs.slice(3)], a, params);
        backend.run('packedMatmul', [inputs[0]!, flat(codes, 'uint8'), flat(off, 'float32'), ...inputs.slice(3)], b, params);
        expect(Array.from(a.data)).toEqual(Array.from(b.data));
      }
    }
  });

  it('takes the table, not the int-grid decode, when one level is off the line L[0] + f', () => {
    const c: Case = { N: 1, O: 3, groups: 2, groupSize: 32, bits: 4, zeroPoint: false, bias: false, table: 'int', seed: 7 };
    const { inputs, params } = operands(c);
    const table = Float32Array.from(inputs[2]!.data as Float32Array);
    table[9] += 0.5;
    const ins = [inputs[0]!, inputs[1]!, flat(table, 'float32'), ...inputs.slice(3)];
    const [want, got] = [outArg(1, 3), outArg(1, 3)];
    jsKernels.packedMatmul(ins, want, params);
    backend.run('packedMatmul', ins, got, params);
    expect(mismatch(got.data, want.data, 1e-5, 1e-5)).toBe(-1);
  });

  it('sums 4-bit rows of any length alike: long rows one at a time, short ones in blocks of rows (partial blocks too), one row of x and several', () => {
    // wasm runs rows of more than 1024 inputs one by one and shorter rows in blocks of 16
    // (packed-planes.ts); both against the oracle, and a batched row against that row alone
    for (const [O, groups, groupSize] of [[37, 4, 32], [19, 2, 576], [5, 64, 32], [3, 1, 2048]] as const) {
      for (const table of ['int', 'levels', 'fp4'] as const) {
        for (const zeroPoint of [false, true]) {
          for (const N of [1, 3]) {
            const c: Case = { N, O, groups, groupSize, bits: 4, zeroPoint, bias: true, table, seed: 101 + O + groups };
            const { inputs, params, K, got } = nativeEqualsOracle(backend, c);
            for (let n = 0; n < N && N > 1; n++) {
              const one = outArg(1, O);
              backend.run('packedMatmul', [{ ...inputs[0]!, shape: [1, K], offset: n * K }, ...inputs.slice(1)], one, params);
              expect(Array.from(one.data)).toEqual(Array.from(got.data.subarray(n * O, (n + 1) * O)));
            }
          }
        }
      }
    }
  });

  it('bounds the lifted 4-bit int-grid decode by the rounding of its sums: Σ|x|·s·(16 + f + |16 − L[0]| + |z|)', () => {
    // wasm sums u = (16 + f)/32 against x and subtracts ((16 − L[0] + z)/32)·Σx per 32 inputs
    // (packed-planes.ts, liftedLevels16): its error scales with those terms, not with Σ|x·w|, so a
    // row of zero weights under a large mean of x is a rounding error away from 0, not 0. Checked
    // against float64 on int4 (L[0] = −8) and uint4 (L[0] = 0, zero points near 8), x of mean 0
    // and 1000, the first row of every case all zero weights; a grid far from zero (L[0] = 77)
    // keeps the direct decode, its Σ|x·w| bound and exact zeros.
    for (const [l0, zeroPoint] of [[-8, false], [-8, true], [0, true], [77, true]] as const) {
      for (const mean of [0, 1000]) {
        for (const [N, groupSize] of [[1, 32], [3, 64], [1, 256]] as const) {
          const c: Case = { N, O: 6, groups: 2, groupSize, bits: 4, zeroPoint, bias: false, table: 'int', seed: 29 + groupSize + l0 };
          const { inputs, params, K } = operands(c);
          const x = Float32Array.from(inputs[0]!.data as Float32Array, (v) => v + mean);
          const codes = Uint8Array.from(inputs[1]!.data as Uint8Array);
          const table = Float32Array.from({ length: 16 }, (_, f) => l0 + f);
          const zero = Float32Array.from(zeroPoint ? inputs[4]!.data as Float32Array : [], (v) => v + 8 + l0);
          // row 0: every weight zero (the level 0, or the level equal to its zero point)
          for (let g = 0; g < c.groups; g++) {
            const f = zeroPoint ? Math.round(zero[g]!) - l0 : -l0;
            if (zeroPoint) zero[g] = l0 + f;
            if (f >= 0 && f < 16) codes.fill(f * 17, (g * groupSize) / 2, ((g + 1) * groupSize) / 2);
          }
          const ins: Arg[] = [{ ...inputs[0]!, data: x }, flat(codes, 'uint8'), flat(table, 'float32'), inputs[3]!, ...(zeroPoint ? [flat(zero, 'float32')] : [])];
          const cz: Case = { ...c, zeroPoint };
          const w = dequantized(cz, ins, K);
          const scale = inputs[3]!.data;
          const want = new Float64Array(N * c.O);
          const bound = new Float64Array(N * c.O);
          for (let n = 0; n < N; n++) {
            for (let o = 0; o < c.O; o++) {
              let [y, m] = [0, 0];
              for (let k = 0; k < K; k++) {
                const i = o * K + k;
                const g = Math.floor(i / groupSize);
                const f = (codes[i >> 1]! >> (4 * (i & 1))) & 15;
                const z = zeroPoint ? zero[g]! : 0;
                y += x[n * K + k]! * w[i]!;
                m += Math.abs(x[n * K + k]! * scale[g]!) * (l0 === 77 ? Math.abs(l0 + f - z) : 16 + f + Math.abs(16 - l0) + Math.abs(z));
              }
              want[n * c.O + o] = y;
              bound[n * c.O + o] = 2 * (K + 2) * 2 ** -24 * m;
            }
          }
          const got = outArg(N, c.O);
          backend.run('packedMatmul', ins, got, params);
          expect(mismatch(got.data, want, 0, bound)).toBe(-1);
          if (l0 === 77) for (let n = 0; n < N; n++) expect(got.data[n * c.O]).toBe(0);
        }
      }
    }
  });

  it('hands a transposed x to js and gives the same result as the contiguous one', () => {
    const c: Case = { N: 3, O: 5, groups: 2, groupSize: 32, bits: 4, zeroPoint: true, bias: true, table: 'levels', seed: 11 };
    const { inputs, params, K } = operands(c);
    const x = inputs[0]!;
    const xt = new Float32Array(c.N * K);
    for (let n = 0; n < c.N; n++) for (let k = 0; k < K; k++) xt[k * c.N + n] = x.data[n * K + k]!;
    const strided: Arg = { data: xt, dtype: 'float32', shape: [c.N, K], strides: [1, c.N], offset: 0 };
    const [want, got] = [outArg(c.N, c.O), outArg(c.N, c.O)];
    jsKernels.packedMatmul(inputs, want, params);
    backend.run('packedMatmul', [strided, ...inputs.slice(1)], got, params);
    expect(backend.ranOn!('packedMatmul', 'float32')).toBe('js');
    expect(Array.from(got.data)).toEqual(Array.from(want.data));
  });

  it('checks operands before running (the same errors as js)', () => {
    const c: Case = { N: 1, O: 4, groups: 2, groupSize: 16, bits: 2, zeroPoint: false, bias: false, table: 'int', seed: 3 };
    const { inputs, params } = operands(c);
    expect(() => backend.run('packedMatmul', inputs, outArg(1, 4), { ...params, groupSize: 5 })).toThrow(/packedMatmul: group size 5 does not divide K = 32/);
  });
});

describe('wasm packedMatmul over threads', () => {
  // 256 × 1024 weights: past the size from which rows go to the pool
  it('splits rows over the pool without changing any result', () => {
    const one = createWasmBackend({ threads: 1 });
    const two = createWasmBackend({ threads: 2 });
    try {
      for (const bits of [1, 2, 4, 8] as const) {
        for (const N of [1, 3]) {
          const c: Case = { N, O: 256, groups: 16, groupSize: 64, bits, zeroPoint: bits !== 1, bias: true, table: bits === 8 ? 'int8' : 'levels', seed: 17 + bits };
          const { inputs, params } = operands(c);
          const [a, b] = [outArg(N, c.O), outArg(N, c.O)];
          one.run('packedMatmul', inputs, a, params);
          two.run('packedMatmul', inputs, b, params);
          expect(Array.from(b.data)).toEqual(Array.from(a.data));
        }
      }
      // the planar path (whole 16-byte groups), table and int-grid decode
      for (const bits of [1, 2, 4] as const) {
        for (const [N, table, zeroPoint] of [[1, 'levels', true], [1, 'int', false], [3, 'int', true]] as const) {
          const c: Case = { N, O: 256, groups: 8, groupSize: 256 / bits, bits, zeroPoint, bias: true, table, seed: 29 + bits };
          const { inputs, params } = operands(c);
          const [a, b] = [outArg(N, c.O), outArg(N, c.O)];
          one.run('packedMatmul', inputs, a, params);
          two.run('packedMatmul', inputs, b, params);
          expect(Array.from(b.data)).toEqual(Array.from(a.data));
        }
      }
      if (two.threads > 1) expect(two.stats!().find((s) => s.kernel === 'packedMatmul')!.pooled).toBeGreaterThan(0);
    } finally {
      one.dispose();
      two.dispose();
    }
  });
});

describe('wasm packedMatmul on operands in wasm memory', () => {
  it('reads them in place (x too, for 2-bit fields) with the results of staged copies, bit for bit', () => {
    const b = createWasmBackend({ threads: 1 });
    try {
      /** The same view, its values copied into an array of b's memory. */
      const resident = (a: Arg): Arg => {
        const data = b.alloc(a.dtype, a.data.length) as Float32Array | Uint8Array;
        data.set(a.data as never);
        return { ...a, data };
      };
      for (const bits of [1, 2, 4, 8] as const) {
        for (const [N, groupSize] of [[1, 64], [3, 64], [1, 128 / bits], [2, 17]] as const) {
          const c: Case = { N, O: 5, groups: 2, groupSize, bits, zeroPoint: true, bias: true, table: bits === 8 ? 'int8' : 'levels', seed: 41 + bits + N };
          const { inputs, params } = operands(c);
          const [staged, inPlace] = [outArg(N, c.O), resident(outArg(N, c.O))];
          b.run('packedMatmul', inputs, staged, params);
          const stagedBytes = b.staged().in;
          b.run('packedMatmul', inputs.map(resident), inPlace, params);
          expect(b.staged().in).toBe(stagedBytes);
          expect(Array.from(inPlace.data)).toEqual(Array.from(staged.data));
        }
      }
      expect(b.ranOn!('packedMatmul', 'float32')).toBe('wasm');
    } finally {
      b.dispose();
    }
  });
});

describe('wasm packedMatmul on weights it touches ahead (≥ 2 MiB)', () => {
  // from 2 MiB of weight on, the kernels load words of a row ahead (its scales too) before
  // decoding a row: each line of the row two ahead for 8-bit codes, the first four lines of each
  // page of the row some 16 KiB ahead for the others (`touchAhead`); rows computed so, the last ones included
  // (where no row lies ahead), equal the same rows of a weight small enough not to be touched, bit for bit
  it('gives the rows of a large weight exactly the results of those rows alone', () => {
    const b = createWasmBackend({ threads: 1 });
    try {
      const K = 4096;
      let seed = 7;
      const byte = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) & 0xff;
      // [bits, group size, table, zero point, base-3 packing]: the planar table, lifted int4,
      // 2-bit int grid, 1-bit with zero points, 4-bit groups of 16 (packed.ts), int8 per channel, base 3
      const cases: [1 | 2 | 4 | 8, number, TableKind, boolean, boolean][] = [
        [4, 64, 'levels', false, false], [4, 32, 'int', false, false], [2, K, 'int', false, false], [1, 128, 'levels', true, false],
        [4, 16, 'levels', true, false], [8, K, 'int8', false, false], [2, K, 'int', false, true],
      ];
      for (const [bits, groupSize, table, zeroPoint, base3] of cases) {
        const rowBytes = base3 ? 832 : (K * bits) / 8;
        const O = Math.ceil((2 << 20) / rowBytes) + 3;
        const G = K / groupSize;
        const c: Case = { N: 1, O, groups: G, groupSize, bits, zeroPoint, bias: true, table, seed: 5 };
        const x = b.alloc('float32', K) as Float32Array;
        x.set(randomArray('float32', K, 3));
        const codes = b.alloc('uint8', O * rowBytes) as Uint8Array;
        for (let i = 0; i < codes.length; i++) codes[i] = base3 ? byte() % 243 : byte();
        const scale = Float32Array.from({ length: O * G }, (_, i) => 0.01 + (i % 13) / 16);
        const zero = Float32Array.from({ length: O * G }, (_, i) => (i % 5) - 2);
        const bias = Float32Array.from({ length: O }, (_, i) => (i % 7) / 8);
        const levels = base3 ? Float32Array.from([-1, 0, 1]) : tableOf(c);
        const params: PackedMatmulParams = { bits, outFeatures: O, groupSize, zeroPoint, bias: true, ...(base3 && { packing: 'base3' as const }) };
        const all = outArg(1, O);
        const rows = (o0: number, n: number): Arg[] => [
          { data: x, dtype: 'float32', shape: [1, K], strides: [K, 1], offset: 0 }, flat(codes.subarray(o0 * rowBytes, (o0 + n) * rowBytes), 'uint8'), flat(levels, 'float32'),
          flat(scale.subarray(o0 * G, (o0 + n) * G), 'float32'), ...(zeroPoint ? [flat(zero.subarray(o0 * G, (o0 + n) * G), 'float32')] : []), flat(bias.subarray(o0, o0 + n), 'float32'),
        ];
        b.run('packedMatmul', rows(0, O), all, params);
        for (const o0 of [0, O >> 1, O - 40]) {
          const part = outArg(1, 40);
          b.run('packedMatmul', rows(o0, 40), part, { ...params, outFeatures: 40 });
          expect(Array.from(part.data), `${bits}-bit, groups of ${groupSize}${base3 ? ', base 3' : ''}, rows ${o0}…`).toEqual(Array.from(all.data.subarray(o0, o0 + 40)));
        }
        b.free?.(codes);
        b.free?.(x);
      }
      expect(b.ranOn!('packedMatmul', 'float32')).toBe('wasm');
    } finally {
      b.dispose();
    }
  });
});

describe('packedGather js kernel', () => {
  it('decodes the rows looked up (repeated, any order) as the float32 dequantize does: s·(L − z), each step rounded', () => {
    fc.assert(
      fc.property(caseArb, fc.array(fc.nat(), { minLength: 1, maxLength: 12 }), (c, picks) => {
        const { inputs, K } = operands(c);
        const w = dequantized(c, inputs, K); // float64, fields read independently of the kernel
        const idx = Int32Array.from(picks, (p) => p % c.O);
        const gather = [{ data: idx, dtype: 'int32' as const, shape: [idx.length], strides: [1], offset: 0 }, ...inputs.slice(1, c.zeroPoint ? 5 : 4)];
        const got = outArg(idx.length, K);
        jsKernels.packedGather(gather, got, { bits: c.bits, rows: c.O, groupSize: c.groupSize, zeroPoint: c.zeroPoint });
        const zero = c.zeroPoint ? inputs[4]!.data : null;
        idx.forEach((r, n) => {
          for (let k = 0; k < K; k++) {
            const g = r * c.groups + Math.floor(k / c.groupSize);
            const level = w[r * K + k]! / inputs[3]!.data[g]! + (zero ? zero[g]! : 0); // L back from the float64 reference
            const want = Math.fround(Math.fround(level - (zero ? zero[g]! : 0)) * inputs[3]!.data[g]!);
            if (Math.abs(got.data[n * K + k]! - want) > 2 ** -20 * Math.abs(want)) expect([n, k, got.data[n * K + k]]).toEqual([n, k, want]);
          }
        });
      }),
      { numRuns: 150 },
    );
  });

  it("adds β after scaling with offset 'beta', and names an out-of-range index with its position", () => {
    const codes = flat(Uint8Array.from([0x10, 0x32]), 'uint8'); // 4-bit fields 0, 1, 2, 3: rows [0, 1], [2, 3]
    const table = flat(Float32Array.from({ length: 16 }, (_, f) => f), 'float32');
    const scale = flat(Float32Array.from([0.5, 3]), 'float32');
    const beta = flat(Float32Array.from([0.1, -1]), 'float32');
    const idx = (v: number[]): Arg => ({ data: Int32Array.from(v), dtype: 'int32', shape: [v.length], strides: [1], offset: 0 });
    const got = outArg(3, 2);
    jsKernels.packedGather([idx([1, 0, 1]), codes, table, scale, beta], got, { bits: 4, rows: 2, groupSize: 2, zeroPoint: true, offset: 'beta' });
    expect(Array.from(got.data)).toEqual([5, 8, 0.1, Math.fround(0.6), 5, 8].map(Math.fround));
    expect(() => jsKernels.packedGather([idx([0, 2]), codes, table, scale], outArg(2, 2), { bits: 4, rows: 2, groupSize: 2, zeroPoint: false })).toThrow('packedGather: index 2 (at position 1) is out of range [0, 2)');
    expect(() => jsKernels.packedGather([idx([0]), codes, table, scale], outArg(1, 2), { bits: 4, rows: 3, groupSize: 2, zeroPoint: false })).toThrow('packedGather: got 2 bytes of codes, but [3, 2] at 4 bits needs 3');
  });
});
