/**
 * @file fast-check arbitraries on the one quantizer vocabulary: grid configs (every grid of the
 * table, with bit widths and codebook levels), granularities that fit a shape, and whole
 * `FakeQuantConfig`s paired with an input shape they fit.
 */
import fc from 'fast-check';
import type { Granularity } from '../grids/granularity.js';
import { GRID_NAMES, GRIDS, type GridName } from '../grids/table.js';
import type { FakeQuantConfig } from '../quantizer/functional.js';

/** A grid's part of a config: `{ grid }` plus its options. */
export type GridConfig = Pick<FakeQuantConfig, 'grid' | 'bits' | 'levels' | 'signed' | 'narrow' | 'asymmetric'>;

/**
 * Integer grids: bits in [minBits, maxBits] (default 2–8), signed (full or narrow) or unsigned.
 * @example fc.assert(fc.property(arbQuant.intGrid({ maxBits: 4 }), (g) => { fakeQuant(randn([16]), g); }));
 */
export function intGrid(c: { minBits?: number; maxBits?: number } = {}): fc.Arbitrary<GridConfig> {
  return fc.record({ bits: fc.integer({ min: c.minBits ?? 2, max: c.maxBits ?? 8 }), kind: fc.constantFrom('signed', 'narrow', 'unsigned') }).map(({ bits, kind }) => ({
    grid: 'int' as const, bits, ...(kind === 'unsigned' ? { signed: false } : kind === 'narrow' ? { narrow: true } : {}),
  }));
}

/**
 * 2–`max` codebook levels in [−1, 1] on a 1/256 lattice: distinct in float32 by far more than its
 * rounding, so x̂/s lands back on its level and idempotence holds in float32 too.
 * @example fc.assert(fc.property(arbQuant.codebookLevels(8), (levels) => { fakeQuant(randn([16]), { grid: 'codebook', levels }); }));
 */
export function codebookLevels(max = 16): fc.Arbitrary<number[]> {
  return fc
    .uniqueArray(fc.integer({ min: -256, max: 256 }), { minLength: 2, maxLength: max })
    .map((l) => l.sort((a, b) => a - b).map((k) => k / 256));
}

/**
 * The config of grid `name` with its options drawn (int bits and signedness, codebook levels, 1–8 bits for any other grid that reads bits).
 * @example fc.assert(fc.property(arbQuant.gridOf('nf4'), (g) => { fakeQuant(randn([64]), g); }));
 */
export function gridOf(name: GridName): fc.Arbitrary<GridConfig> {
  if (name === 'int') return intGrid();
  if (name === 'codebook') return codebookLevels().map((levels) => ({ grid: 'codebook' as const, levels }));
  if ((GRIDS[name].options as readonly string[]).includes('bits')) return fc.integer({ min: 1, max: 8 }).map((bits) => ({ grid: name, bits }));
  return fc.constant({ grid: name });
}

/**
 * Any grid of the table (MX grids need their blocks of 32: use `quantizerCase`).
 * @example fc.assert(fc.property(arbQuant.gridConfig(), (g) => { fakeQuant(randn([16]), g); }));
 */
export function gridConfig(names: readonly GridName[] = GRID_NAMES): fc.Arbitrary<GridConfig> {
  return fc.constantFrom(...names).chain(gridOf);
}

/**
 * A granularity that fits `shape` (group and block sizes divide their axis).
 * @example fc.assert(fc.property(arbQuant.granularity([8, 64]), (granularity) => { fakeQuant(randn([8, 64]), { grid: 'int', bits: 4, granularity }); }));
 */
export function granularity(shape: number[]): fc.Arbitrary<Granularity> {
  const opts: fc.Arbitrary<Granularity>[] = [fc.constant('tensor' as const)];
  const divisors = (n: number) => Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);
  if (shape.length > 0) {
    opts.push(fc.constant('token' as const), fc.constant('channel' as const));
    opts.push(fc.integer({ min: 0, max: shape.length - 1 }).map((channel) => ({ channel })));
    opts.push(fc.constantFrom(...divisors(shape[shape.length - 1]!)).map((group) => ({ group })));
    opts.push(fc.constantFrom(...divisors(shape.reduce((a, b) => a * b, 1))).map((block) => ({ block })));
  }
  return fc.oneof(...opts);
}

/**
 * A config and an input shape it fits (dims ≤ 3, last dim a multiple of 32 for MX grids, else of
 * 4); NF4 takes blocks of 4 here so small shapes fit.
 * @example fc.assert(fc.property(quantizerCase(), ({ config, shape }) => { fakeQuant(randn(shape), config); }));
 */
export function quantizerCase(names: readonly GridName[] = GRID_NAMES): fc.Arbitrary<{ config: FakeQuantConfig; shape: number[] }> {
  return gridConfig(names).chain((grid) => {
    const mx = grid.grid === 'mxfp4' || grid.grid === 'mxfp8';
    const shape = fc.tuple(fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }), fc.integer({ min: 1, max: 2 })).map(([lead, k]) => [...lead, (mx ? 32 : 4) * k]);
    return shape.chain((s) => {
      if (mx) return fc.constant({ config: grid as FakeQuantConfig, shape: s });
      const g: fc.Arbitrary<Granularity> = grid.grid === 'nf4' ? fc.constant({ block: 4 }) : granularity(s);
      return g.map((gr) => ({ config: { ...grid, granularity: gr } as FakeQuantConfig, shape: s }));
    });
  });
}
