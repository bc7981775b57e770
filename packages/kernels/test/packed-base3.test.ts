/**
 * @file packedMatmul with base-3 packing (five trits per byte, TQ1_0's order): the layout against
 * TQ1_0's as interop.md describes it, pack/unpack round trips, the js oracle against a float64
 * dequantize-then-matmul, each native backend against the oracle (rows of any length, whole
 * 256-blocks or not, groups of any size), batched rows, threads, and the operand errors.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base3Digit, base3RowBytes, createWasmBackend, jsKernels, packBase3, unpackBase3, type Backend, type PackedMatmulParams } from '@qgrad/kernels';
import { type Arg, mismatch, NATIVE, nativeCalls, randomArray } from './helpers.js';

interface Case {
  N: number;
  O: number;
  groups: number;
  groupSize: number;
  zeroPoint: boolean;
  bias: boolean;
  int8: boolean;
  /** Levels L[0] + d (ternary's −1, 0, 1, or another run of integers; decoded without the table) instead of random ones. */
  affine: boolean;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  N: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 4 })),
  O: fc.integer({ min: 1, max: 7 }),
  groups: fc.integer({ min: 1, max: 3 }),
  // around the sections (160, 80, 16 trits) and the 256-block: whole blocks, partial ones, tails only
  groupSize: fc.constantFrom(1, 3, 5, 16, 17, 48, 80, 96, 160, 176, 240, 251, 256, 272, 512),
  zeroPoint: fc.boolean(),
  bias: fc.boolean(),
  int8: fc.boolean(),
  affine: fc.boolean(),
  seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
});

const flat = (data: Float32Array | Uint8Array | Int8Array, dtype: Arg['dtype']): Arg => ({ data, dtype, shape: [data.length], strides: [1], offset: 0 });

function trits(n: number, seed: number): Uint8Array {
  return Uint8Array.from(randomArray('float64', n, seed), (v) => Math.min(2, Math.floor((v + 1) * 1.5)));
}

function operands(c: Case): { inputs: Arg[]; params: PackedMatmulParams; K: number; t: Uint8Array } {
  const K = c.groups * c.groupSize;
  const G = c.groups;
  const x = randomArray('float32', c.N * K, c.seed);
  const t = trits(c.O * K, c.seed ^ 0x1234);
  const bytes = packBase3(t, c.O, K);
  const codes = c.int8 ? flat(new Int8Array(bytes.buffer), 'int8') : flat(bytes, 'uint8');
  const l0 = Math.round(randomArray('float32', 1, c.seed ^ 0x3333)[0]! * 4) - 1;
  const table = c.affine ? Float32Array.from([l0, l0 + 1, l0 + 2]) : Float32Array.from(randomArray('float32', 3, c.seed ^ 0x7777));
  const scale = Float32Array.from(randomArray('float32', c.O * G, c.seed ^ 0x55), (v) => 0.01 + Math.abs(v));
  const zero = Float32Array.from(randomArray('float32', c.O * G, c.seed ^ 0x99), (v) => Math.round(v * 4) / 2);
  const bias = randomArray('float32', c.O, c.seed ^ 0x42) as Float32Array;
  const inputs: Arg[] = [{ data: x, dtype: 'float32', shape: [c.N, K], strides: [K, 1], offset: 0 }, codes, flat(table, 'float32'), flat(scale, 'float32')];
  if (c.zeroPoint) inputs.push(flat(zero, 'float32'));
  if (c.bias) inputs.push(flat(bias, 'float32'));
  return { inputs, params: { bits: 2, outFeatures: c.O, groupSize: c.groupSize, zeroPoint: c.zeroPoint, bias: c.bias, packing: 'base3' }, K, t };
}

/** W[o, k] = s·(L[t] − z) in float64, from the trits before packing (independent of the layout code). */
function dequantized(c: Case, inputs: Arg[], K: number, t: Uint8Array): Float64Array {
  const [, , table, scale] = inputs as [Arg, Arg, Arg, Arg];
  const zero = c.zeroPoint ? inputs[4]! : null;
  return Float64Array.from(t, (d, i) => {
    const grp = Math.floor(i / c.groupSize);
    return scale.data[grp]! * (table.data[d]! - (zero ? zero.data[grp]! : 0));
  });
}

/** x·Wᵀ + b in float64 and Σ|x|·|w| + |b| per output (the scale of float32 summation error). */
function reference(c: Case, inputs: Arg[], K: number, w: Float64Array): { want: Float64Array; magnitude: Float64Array } {
  const x = inputs[0]!.data;
  const b = c.bias ? inputs[inputs.length - 1]!.data : null;
  const want = new Float64Array(c.N * c.O);
  const magnitude = new Float64Array(c.N * c.O);
  for (let n = 0; n < c.N; n++) {
    for (let o = 0; o < c.O; o++) {
      let [y, m] = [b ? b[o]! : 0, b ? Math.abs(b[o]!) : 0];
      for (let k = 0; k < K; k++) {
        y += x[n * K + k]! * w[o * K + k]!;
        m += Math.abs(x[n * K + k]! * w[o * K + k]!);
      }
      want[n * c.O + o] = y;
      magnitude[n * c.O + o] = m;
    }
  }
  return { want, magnitude };
}

const outArg = (N: number, O: number): Arg => ({ data: new Float32Array(N * O), dtype: 'float32', shape: [N, O], strides: [O, 1], offset: 0 });

describe('base-3 layout', () => {
  it("is TQ1_0's qs/qh for a block of 256: byte m of qs holds m + 32k, then 160 + m + 16k, qh byte j 240 + j + 4k", () => {
    const t = trits(256, 9);
    const bytes = packBase3(t, 1, 256);
    expect(bytes.length).toBe(52);
    const at = (byte: number, k: number) => base3Digit(bytes[byte]!, k);
    for (let m = 0; m < 32; m++) for (let k = 0; k < 5; k++) expect(at(m, k)).toBe(t[m + 32 * k]);
    for (let m = 0; m < 16; m++) for (let k = 0; k < 5; k++) expect(at(32 + m, k)).toBe(t[160 + m + 16 * k]);
    for (let j = 0; j < 4; j++) for (let k = 0; k < 4; k++) expect(at(48 + j, k)).toBe(t[240 + j + 4 * k]);
    // TQ1_0's rescale: byte = ⌈n·256/243⌉ of the base-3 number, first trit most significant
    const n = [0, 1, 2, 3, 4].reduce((a, k) => a * 3 + t[32 * k]!, 0);
    expect(bytes[0]).toBe(Math.ceil((n * 256) / 243));
  });

  it('round-trips any [O, K], a row taking 52 bytes per 256 and about K/5 for the rest', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 700 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (O, K, seed) => {
        const t = trits(O * K, seed);
        const bytes = packBase3(t, O, K);
        const rb = base3RowBytes(K);
        expect(bytes.length).toBe(O * rb);
        const r = K % 256;
        expect(rb).toBe(52 * Math.floor(K / 256) + (r >= 160 ? 32 : 0) + (r % 160 >= 80 ? 16 : 0) + Math.ceil((r % 160) % 80 / 5));
        expect(Array.from(unpackBase3(bytes, O, K))).toEqual(Array.from(t));
      }),
      { numRuns: 100 },
    );
  });

  it('rejects a digit that is not a trit', () => {
    expect(() => packBase3([0, 3, 1], 1, 3)).toThrow(/packBase3: trit 3 at \[0, 1\] is not 0, 1 or 2/);
  });
});

describe('base-3 packedMatmul js oracle', () => {
  it('equals dequantize-then-matmul in float64, rounded once to float32', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const { inputs, params, K, t } = operands(c);
        const { want, magnitude } = reference(c, inputs, K, dequantized(c, inputs, K, t));
        const got = outArg(c.N, c.O);
        jsKernels.packedMatmul(inputs, got, params);
        expect(mismatch(got.data, want, 2 ** -24, Array.from(magnitude, (m) => 1e-12 * m))).toBe(-1);
      }),
      { numRuns: 150 },
    );
  });

  describe('bad operands are errors naming the kernel and the value', () => {
    const c: Case = { N: 1, O: 2, groups: 1, groupSize: 300, zeroPoint: false, bias: false, int8: false, affine: false, seed: 3 };
    const { inputs, params } = operands(c);
    const run = (ins: Arg[], p: PackedMatmulParams) => () => jsKernels.packedMatmul(ins, outArg(1, p.outFeatures), p);
    it('a codes buffer too short for the rows', () => {
      expect(run([inputs[0]!, flat(new Uint8Array(119), 'uint8'), ...inputs.slice(2)], params)).toThrow(/packedMatmul: got 119 bytes of codes, but \[2, 300\] as base-3 trits \(61 bytes a row\) needs 122/);
    });
    it('a bit width other than 2, a level table of fewer than 3, an unknown packing', () => {
      expect(run(inputs, { ...params, bits: 4 })).toThrow(/packedMatmul: base-3 packing holds ternary digits, read as 2-bit fields; bits must be 2, got 4/);
      expect(run([inputs[0]!, inputs[1]!, flat(new Float32Array(2), 'float32'), inputs[3]!], params)).toThrow(/packedMatmul: got 2 values of levels, but a ternary digit/);
      expect(run(inputs, { ...params, packing: 'base5' as never })).toThrow(/packedMatmul: packing must be 'fields' or 'base3', got "base5"/);
    });
  });
});

describe.each(NATIVE)('$label base-3 packedMatmul', (entry) => {
  let backend!: Backend;
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => backend.dispose());

  it('equals the js oracle within float32 summation error, natively', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const { inputs, params, K, t } = operands(c);
        const [want, got] = [outArg(c.N, c.O), outArg(c.N, c.O)];
        jsKernels.packedMatmul(inputs, want, params);
        const before = nativeCalls(backend, 'packedMatmul');
        backend.run('packedMatmul', inputs, got, params);
        expect(nativeCalls(backend, 'packedMatmul')).toBe(before + 1);
        const { magnitude } = reference(c, inputs, K, dequantized(c, inputs, K, t));
        expect(mismatch(got.data, want.data, 0, Array.from(magnitude, (m) => 2 * (K + 2) * 2 ** -24 * m))).toBe(-1);
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
          const one = outArg(1, c.O);
          backend.run('packedMatmul', [{ ...inputs[0]!, shape: [1, K], offset: n * K }, ...inputs.slice(1)], one, params);
          expect(Array.from(one.data)).toEqual(Array.from(all.data.subarray(n * c.O, (n + 1) * c.O)));
        }
      }),
      { numRuns: 30 },
    );
  });

  it('equals the 2-bit kernel on the same trits bit for bit (the same weights, the same chunks)', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const { inputs, params, K, t } = operands(c);
        const two = new Uint8Array(Math.ceil((c.O * K) / 4));
        t.forEach((d, i) => (two[i >> 2]! |= d << (2 * (i & 3))));
        const table4 = Float32Array.from([...(inputs[2]!.data as Float32Array), 0]);
        const [a, b] = [outArg(c.N, c.O), outArg(c.N, c.O)];
        backend.run('packedMatmul', inputs, a, params);
        backend.run('packedMatmul', [inputs[0]!, flat(two, 'uint8'), flat(table4, 'float32'), ...inputs.slice(3)], b, { ...params, packing: 'fields' });
        expect(Array.from(a.data)).toEqual(Array.from(b.data));
      }),
      { numRuns: 60 },
    );
  });
});

describe.each(NATIVE)('$label base-3 packedMatmul against the 2-bit int-grid decode', (entry) => {
  let backend!: Backend;
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => backend.dispose());

  it('equals the 2-bit kernel bit for bit when its four levels are an int grid (L[0] + f: decoded in row order from the bytes)', () => {
    // groups of whole 64-trit units, so the 2-bit fields take the planar path's int-grid decode
    const arb = caseArb.map((c) => ({ ...c, affine: true, groupSize: [64, 128, 192, 256, 320][c.seed % 5]! }));
    fc.assert(
      fc.property(arb, (c) => {
        const { inputs, params, K, t } = operands(c);
        const two = new Uint8Array(Math.ceil((c.O * K) / 4));
        t.forEach((d, i) => (two[i >> 2]! |= d << (2 * (i & 3))));
        const l0 = inputs[2]!.data[0]!;
        const table4 = Float32Array.from([l0, l0 + 1, l0 + 2, l0 + 3]);
        const [a, b] = [outArg(c.N, c.O), outArg(c.N, c.O)];
        backend.run('packedMatmul', inputs, a, params);
        backend.run('packedMatmul', [inputs[0]!, flat(two, 'uint8'), flat(table4, 'float32'), ...inputs.slice(3)], b, { ...params, packing: 'fields' });
        expect(Array.from(a.data)).toEqual(Array.from(b.data));
      }),
      { numRuns: 60 },
    );
  });
});

describe('wasm base-3 packedMatmul over threads', () => {
  it('splits rows over the pool without changing any result', () => {
    const one = createWasmBackend({ threads: 1 });
    const two = createWasmBackend({ threads: 2 });
    try {
      for (const [groupSize, groups] of [[256, 4], [64, 12], [1000, 1]] as const) {
        for (const [N, affine] of [[1, false], [3, false], [1, true]] as const) {
          const c: Case = { N, O: 256, groups, groupSize, zeroPoint: groupSize === 64, bias: true, int8: false, affine, seed: 17 + groupSize };
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
