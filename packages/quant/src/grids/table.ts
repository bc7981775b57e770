/**
 * @file The list of grids: one plain table from the name a config gives (`{ grid: 'nf4' }`) to
 * the grid's factory and the grid options it reads. Adding a grid is its file plus one row here.
 */
import { binaryGrid } from './binary.js';
import { centeredGrid } from './centered.js';
import { codebookGrid } from './codebook.js';
import { fpGrid } from './fp.js';
import type { Grid, GridOptions } from './grid.js';
import { intGrid } from './int.js';
import { mxfp4Grid, mxfp8Grid } from './mx.js';
import { nf4Grid } from './nf4.js';
import { ternaryGrid } from './ternary.js';

type Option = keyof GridOptions;

/** One row: the factory, the grid options it reads (any other is an error) and a line for listings. */
export interface GridRow {
  make: (o: GridOptions) => Grid;
  options: readonly Option[];
  about: string;
}

/** Every grid by name, with the options it takes and one line about it: the vocabulary of `grid:` in quantizer configs (one file per grid in grids/). */
export const GRIDS = {
  int: { make: intGrid, options: ['bits', 'signed', 'narrow', 'asymmetric'], about: 'integers, 1–16 bits, signed / unsigned / asymmetric' },
  e4m3: { make: () => fpGrid('e4m3', 'e4m3fn'), options: [], about: 'FP8 E4M3 (OCP fn), max 448' },
  e5m2: { make: () => fpGrid('e5m2', 'e5m2'), options: [], about: 'FP8 E5M2, max 57344' },
  e3m2: { make: () => fpGrid('e3m2', 'e3m2'), options: [], about: 'FP6 E3M2, max 28' },
  e2m3: { make: () => fpGrid('e2m3', 'e2m3'), options: [], about: 'FP6 E2M3, max 7.5' },
  e2m1: { make: () => fpGrid('e2m1', 'e2m1'), options: [], about: 'FP4 E2M1, max 6' },
  mxfp4: { make: mxfp4Grid, options: [], about: 'E2M1 with a power-of-two (E8M0) scale per block of 32' },
  mxfp8: { make: mxfp8Grid, options: [], about: 'E4M3 with a power-of-two (E8M0) scale per block of 32' },
  nf4: { make: nf4Grid, options: [], about: 'QLoRA NormalFloat4, absmax blocks of 64' },
  ternary: { make: ternaryGrid, options: [], about: '{−1, 0, 1} (BitNet b1.58)' },
  binary: { make: binaryGrid, options: [], about: '{−1, +1} (sign)' },
  codebook: { make: codebookGrid, options: ['levels', 'bits'], about: 'any finite level set (e.g. kmeansLevels)' },
  centered: { make: centeredGrid, options: ['bits'], about: 'half-integer levels, no zero (QuEST, StatsQ), 1–8 bits' },
} satisfies Record<string, GridRow>;

/** Every grid a config can name (`{ grid: 'nf4' }`): the table's keys. */
export type GridName = keyof typeof GRIDS;

/** The grid names, in table order. */
export const GRID_NAMES = Object.keys(GRIDS) as GridName[];

/**
 * The grid a config names, with its options checked: an option the grid does not read is an
 * error naming `who` (the layer), the grid and the option, never ignored.
 * @example makeGrid({ grid: 'int', bits: 4 }).integer; // { qmin: -8, qmax: 7 }
 */
export function makeGrid(config: GridOptions & { grid?: GridName | string }, who = 'quantizer'): Grid {
  const name = (config.grid ?? 'int') as GridName;
  const row: GridRow | undefined = (GRIDS as Record<string, GridRow>)[name];
  if (!row) throw new Error(`${who}: unknown grid ${JSON.stringify(config.grid)}; grids are ${GRID_NAMES.join(', ')}`);
  for (const k of ['bits', 'levels', 'signed', 'narrow', 'asymmetric'] as const) {
    if (config[k] !== undefined && !row.options.includes(k)) throw new Error(`${who}: grid '${name}' takes no option '${k}' (it reads ${row.options.length ? row.options.join(', ') : 'none'})`);
  }
  try {
    return row.make(config);
  } catch (e) {
    throw new Error(`${who}: ${(e as Error).message}`);
  }
}
