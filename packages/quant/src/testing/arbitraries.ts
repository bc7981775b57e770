/**
 * @file fast-check arbitraries for quantizer configurations: grids (with bit widths), granularity
 * (with group sizes) and whole `QuantizerSpec`s paired with an input shape they fit.
 */
import fc from 'fast-check';
import type { Granularity } from '../grids/granularity.js';
import type { FpFormatName } from '../grids/fp.js';
import type { GridSpec, QuantizerSpec } from '../grids/spec.js';

/** Integer grids: bits in [minBits, maxBits] (default 2–8), signed or unsigned, full or narrow. */
export function intGrid(c: { minBits?: number; maxBits?: number } = {}): fc.Arbitrary<GridSpec> {
  return fc.record({
    kind: fc.constant('int' as const),
    bits: fc.integer({ min: c.minBits ?? 2, max: c.maxBits ?? 8 }),
    signed: fc.boolean(),
    narrow: fc.boolean(),
  });
}

/** Any grid of @qgrad/quant except MX (which has its own block layout; see `mxCase`). */
export function gridSpec(): fc.Arbitrary<GridSpec> {
  return fc.oneof(
    intGrid(),
    fc.constantFrom<FpFormatName>('e4m3fn', 'e5m2', 'e2m1', 'e3m2', 'e2m3').map((format) => ({ kind: 'fp' as const, format })),
    fc.constant({ kind: 'nf4' as const, blockSize: 4 }),
    fc.constant({ kind: 'ternary' as const }),
    fc.constant({ kind: 'binary' as const }),
    fc.uniqueArray(fc.double({ min: -1, max: 1, noNaN: true }), { minLength: 2, maxLength: 6 }).map((levels) => ({ kind: 'codebook' as const, levels: levels.sort((a, b) => a - b) })),
  );
}

/** A granularity that fits `shape` (group sizes divide the grouped axis). */
export function granularity(shape: number[]): fc.Arbitrary<Granularity> {
  const opts: fc.Arbitrary<Granularity>[] = [fc.constant('tensor' as const)];
  if (shape.length > 0) {
    opts.push(fc.constant('token' as const));
    opts.push(fc.integer({ min: 0, max: shape.length - 1 }).map((channel) => ({ channel })));
    const last = shape[shape.length - 1]!;
    const divisors = Array.from({ length: last }, (_, i) => i + 1).filter((d) => last % d === 0);
    opts.push(fc.constantFrom(...divisors).map((group) => ({ group })));
  }
  return fc.oneof(...opts);
}

/**
 * A spec and an input shape it fits (dims ≤ 4, last dim a multiple of 4 so NF4 blocks of 4 fit).
 * @example fc.assert(fc.property(quantizerCase(), ({ spec, shape }) => { fakeQuant(randn(shape), spec); }));
 */
export function quantizerCase(): fc.Arbitrary<{ spec: QuantizerSpec; shape: number[] }> {
  const shape = fc.tuple(fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }), fc.integer({ min: 1, max: 2 })).map(([lead, k]) => [...lead, 4 * k]);
  return shape.chain((s) =>
    fc.record({ grid: gridSpec(), granularity: granularity(s) }).map(({ grid, granularity: g }) => ({
      spec: { grid, granularity: grid.kind === 'nf4' ? { group: 4 } : g } as QuantizerSpec,
      shape: s,
    })),
  );
}
