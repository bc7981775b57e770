/**
 * @file The readers of all three export formats under mutation: fast-check flips, overwrites,
 * truncates and splices bytes of valid files; every reader either returns or throws an Error whose
 * message names a byte offset — never a crash of another kind, a hang or a huge allocation.
 * QGRAD_FUZZ_RUNS sets the cases per format: 150 in `npm test`; `npm run test:long` runs this file
 * alone with 3500 (14,000 cases in all) and no test timeout.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Generator, randn, tensor } from '@qgrad/core';
import { Linear, Llama, ReLU, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const RUNS = Number(process.env.QGRAD_FUZZ_RUNS ?? 150);

function mutations(valid: Uint8Array): fc.Arbitrary<Uint8Array> {
  const n = valid.length;
  const pos = fc.integer({ min: 0, max: n - 1 });
  const edit: fc.Arbitrary<(b: Uint8Array) => Uint8Array> = fc.oneof<fc.Arbitrary<(b: Uint8Array) => Uint8Array>[]>(
    fc.tuple(pos, fc.integer({ min: 0, max: 255 })).map(([p, v]) => (b: Uint8Array) => ((b[p % b.length] = v), b)),
    fc.tuple(pos, fc.integer({ min: 0, max: 7 })).map(([p, bit]) => (b: Uint8Array) => ((b[p % b.length]! ^= 1 << bit), b)),
    // a length or count field set to something huge
    fc.tuple(pos, fc.constantFrom(0xff, 0x7f, 0x80)).map(([p, v]) => (b: Uint8Array) => (b.fill(v, p % b.length, (p % b.length) + 8), b)),
    fc.integer({ min: 0, max: n - 1 }).map((l) => (b: Uint8Array) => b.slice(0, l)),
    fc.tuple(pos, fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([q, ins]) => (b: Uint8Array) => {
      const p = q % (b.length + 1);
      const out = new Uint8Array(b.length + ins.length);
      out.set(b.subarray(0, p));
      out.set(ins, p);
      out.set(b.subarray(p), p + ins.length);
      return out;
    }),
  );
  return fc.array(edit, { minLength: 1, maxLength: 4 }).map((edits) => edits.reduce((b: Uint8Array, e) => e(b), valid.slice())).filter((b) => b.length > 0);
}

function survives(read: (b: Uint8Array) => void, valid: Uint8Array): void {
  let errors = 0;
  fc.assert(
    fc.property(mutations(valid), (bytes) => {
      try {
        read(bytes);
      } catch (e) {
        errors++;
        expect(e).toBeInstanceOf(Error);
        expect((e as Error).message).toMatch(/byte/);
        expect(e).not.toBeInstanceOf(RangeError);
        expect(e).not.toBeInstanceOf(TypeError);
      }
    }),
    { numRuns: RUNS, seed: 42 },
  );
  expect(errors).toBeGreaterThan(RUNS / 10); // the mutations do reach the checks
}

describe('export readers under mutation', () => {
  it('safetensors (deserializeQuantized)', () => {
    const g = new Generator(1);
    const m = new Sequential(new Linear(16, 8, { generator: g }), new ReLU(), new Linear(8, 4, { generator: g }));
    Q.prepareQAT(m, { default: { weight: { grid: 'int', bits: 4, granularity: { group: 8 } }, input: { bits: 8 } } });
    m.train();
    m.forward(randn([4, 16], { generator: g }));
    Q.convert(m);
    survives((b) => Q.deserializeQuantized(b), Q.serializeQuantized(m));
  });

  it('GGUF (readGguf, then every tensor decoded)', () => {
    const llama = new Llama({ vocabSize: 32, dim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, hiddenDim: 32, maxSeqLen: 8, normEps: 1e-5, ropeTheta: 1e4, tieWordEmbeddings: true }, { generator: new Generator(2) });
    Q.prepareQAT(llama, { default: { weight: { grid: 'int', bits: 4, granularity: { group: 32 } } }, types: ['Linear'] });
    llama.forward(tensor([[1, 2]], { dtype: 'int32' }));
    Q.convert(llama);
    survives((b) => {
      const f = Q.readGguf(b);
      for (const t of f.tensors) Q.ggufTensorData(f, b, t);
    }, Q.llamaToGguf(llama, { type: 'Q4_0' }).bytes);
  });

  it('ONNX (readOnnx)', () => {
    const g = new Generator(3);
    const m = new Sequential(new Linear(8, 4, { generator: g }), new ReLU(), new Linear(4, 2, { generator: g }));
    Q.prepareQAT(m, { default: { weight: { grid: 'int', bits: 8 }, input: { bits: 8 } } });
    m.train();
    m.forward(randn([4, 8], { generator: g }));
    m.eval();
    Q.convert(m);
    survives((b) => Q.readOnnx(b), Q.modelToOnnx(m, { inputShape: [1, 8] }).bytes);
  });

  it('ONNX with com.microsoft MatMulNBits and INT4 QDQ (readOnnx: domains, attributes, packed sizes)', () => {
    const g = new Generator(4);
    const m = new Sequential(new Linear(32, 4, { generator: g }), new ReLU(), new Linear(4, 2, { generator: g }));
    Q.prepareQAT(m, { rules: [{ match: '0', weight: { grid: 'int', bits: 4, granularity: { group: 16 }, asymmetric: true } }], default: { weight: { grid: 'int', bits: 4 } } });
    m.eval();
    Q.convert(m);
    const bytes = Q.modelToOnnx(m, { inputShape: [1, 32] }).bytes;
    expect(Q.readOnnx(bytes).initializers.map((t) => t.dtype)).toEqual(expect.arrayContaining([2, 22])); // MatMulNBits' uint8 B, INT4 codes
    survives((b) => Q.readOnnx(b), bytes);
  });
});
