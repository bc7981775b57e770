/**
 * @file Bits per parameter of a whole model, QAT (prepared) or converted, two ways: ideal (each
 * code at its grid's information, log2 of its levels — ternary 1.585) and stored (as convert
 * stores it: packed 1/2/4-bit fields, else bytes); scales and zero points as overhead (MX's E8M0
 * scales at 8 bits), everything else at its dtype's width. The report prints as a table.
 */
import type { Tensor } from '@qgrad/core';
import type { Module } from '@qgrad/nn';
import { storedBits, type Grid } from '../grids/grid.js';
import { DOUBLE_BLOCK } from '../scale/double.js';
import { isQuantLayer } from '../qat/modules.js';
import { ActQuantizer, WeightQuantizer } from '../qat/quantizers.js';
import { QuantizedConv2d, QuantizedEmbedding, QuantizedLinear } from '../qat/convert.js';

/** Options of the bits-per-parameter count: bits per stored scale, and whether activation scales count. */
export interface BitsOptions {
  /** Bits of each stored real scale / zero point / offset (default 32; MX block scales are always 8). */
  scaleBits?: number;
  /** Count activation-quantizer scales as overhead (default true). */
  activationScales?: boolean;
}

/** One entry of the bits-per-parameter count: its parameters and bits, at the grid's information content and as stored. */
export interface BitsRow {
  name: string;
  /** Parameters (weights, biases, …) in this entry. */
  params: number;
  /** Bits at each grid's information content, and as stored. */
  idealBits: number;
  storedBits: number;
  what: string;
}

const DTYPE_BITS: Record<string, number> = { float32: 32, float64: 64, int32: 32, int8: 8, uint8: 8 };
const fmtBits = (b: number) => String(+b.toFixed(3));

/**
 * What bitsPerParameter returns; `toString()` prints the table.
 * @example console.log(bitsPerParameter(model).toString());
 */
export class BitsReport {
  /** Model parameters, excluding quantizer scales (they are overhead). */
  readonly params: number;
  readonly totalBits: number;
  readonly totalStoredBits: number;
  constructor(readonly rows: BitsRow[]) {
    this.params = rows.reduce((a, r) => a + r.params, 0);
    this.totalBits = rows.reduce((a, r) => a + r.idealBits, 0);
    this.totalStoredBits = rows.reduce((a, r) => a + r.storedBits, 0);
  }
  /** Ideal bits per parameter. */
  get bitsPerParameter(): number {
    return this.params ? this.totalBits / this.params : 0;
  }
  /** Bits per parameter as convert stores the model. */
  get storedBitsPerParameter(): number {
    return this.params ? this.totalStoredBits / this.params : 0;
  }
  toString(): string {
    const head = ['entry', 'params', 'ideal bits', 'stored bits', 'what'];
    const body = this.rows.map((r) => [r.name, String(r.params), fmtBits(r.idealBits), fmtBits(r.storedBits), r.what]);
    body.push(['total', String(this.params), fmtBits(this.totalBits), fmtBits(this.totalStoredBits), `${fmtBits(this.bitsPerParameter)} ideal / ${fmtBits(this.storedBitsPerParameter)} stored bits per parameter`]);
    const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (c: string[]) => c.map((v, i) => (i === 1 || i === 2 || i === 3 ? v.padStart(w[i]!) : v.padEnd(w[i]!))).join('  ').trimEnd();
    return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...body.map(line)].join('\n');
  }
}

/** A quantized weight's row: n codes plus its scales (and zero points); double-quantized scales take 8 bits + a float per 256 + the mean. */
function weightRow(name: string, n: number, grid: Grid, nScales: number, nZero: number, sb: number, double = false): BitsRow {
  const scaleBits = grid.scale.kind === 'pow2' || double ? 8 : sb;
  const over = nScales * scaleBits + nZero * sb + (double ? (Math.ceil(nScales / DOUBLE_BLOCK) + 1) * sb : 0);
  const stored = storedBits(grid);
  return {
    name, params: n, idealBits: n * grid.idealBits + over, storedBits: Math.ceil((n * stored) / 8) * 8 + over,
    what: `${grid.label}: ${n}×${fmtBits(grid.idealBits)} (stored ${stored}) + ${nScales + nZero} scales`,
  };
}

/**
 * Counts the storage of `model` per parameter. A quantized weight costs its codes plus
 * (#scales + #zero points)·scaleBits; dynamic scales count as stored (they are after convert).
 * @example console.log(String(bitsPerParameter(model))); bitsPerParameter(model).storedBitsPerParameter;
 */
export function bitsPerParameter(model: Module, opts: BitsOptions = {}): BitsReport {
  const sb = opts.scaleBits ?? 32;
  const rows: BitsRow[] = [];
  const counted = new Set<Tensor>();
  const fixed = (name: string, n: number, bits: number, what: string) => rows.push({ name, params: n, idealBits: n * bits, storedBits: n * bits, what });
  for (const [name, m] of model.namedModules()) {
    if (isQuantLayer(m) && m.weightQuantizer?.enabled) {
      const wq: WeightQuantizer = m.weightQuantizer;
      const nScales = wq.viewShape.slice(0, -1).reduce((a, b) => a * b, 1);
      rows.push(weightRow(`${name}.weight`, m.weight.numel(), wq.grid, nScales, wq.plan.hasZeroPoint ? nScales : 0, sb, wq.plan.doubleScale));
      counted.add(m.weight);
      for (const t of [wq.scale, wq.zeroPoint, wq.initialized]) if (t) counted.add(t);
    } else if (m instanceof QuantizedLinear || m instanceof QuantizedConv2d || m instanceof QuantizedEmbedding) {
      const n = m.weightShape.reduce((a, b) => a * b, 1);
      rows.push(weightRow(`${name}.weightCodes`, n, m.weightPlan.grid, m.weightScale.numel(), m.weightZeroPoint?.numel() ?? 0, sb, m.weightPlan.doubleScale));
      for (const t of [m.weightCodes, m.weightScale, m.weightScaleSecond, m.weightScaleMean, m.weightZeroPoint]) if (t) counted.add(t);
      const bias = (m as { bias?: Tensor | null }).bias; // a buffer after convert, still a parameter of the model
      if (bias) {
        const b = DTYPE_BITS[bias.dtype] ?? 32;
        fixed(`${name}.bias`, bias.numel(), b, `${bias.numel()}×${b} (${bias.dtype})`);
        counted.add(bias);
      }
      const inOver = (m.inputScale?.numel() ?? 0) + (m.inputZeroPoint?.numel() ?? 0);
      if (inOver && opts.activationScales !== false) rows.push({ name: `${name}.input`, params: 0, idealBits: inOver * sb, storedBits: inOver * sb, what: `${inOver} activation scales` });
      for (const t of [m.inputScale, m.inputZeroPoint]) if (t) counted.add(t);
    } else if (m instanceof ActQuantizer) {
      const k = (m.scale?.numel() ?? 0) + (m.zeroPoint?.numel() ?? 0);
      if (k && opts.activationScales !== false) rows.push({ name, params: 0, idealBits: k * sb, storedBits: k * sb, what: `${k} activation scales` });
      for (const t of [m.scale, m.zeroPoint, m.initialized]) if (t) counted.add(t);
    } else if (m instanceof WeightQuantizer) {
      for (const t of [m.scale, m.zeroPoint, m.initialized]) if (t) counted.add(t);
    }
  }
  // everything else that is a parameter (buffers such as running statistics are not parameters)
  for (const [name, t] of model.namedParameters()) {
    if (counted.has(t)) continue;
    counted.add(t);
    const b = DTYPE_BITS[t.dtype] ?? 32;
    fixed(name, t.numel(), b, `${t.numel()}×${b} (${t.dtype})`);
  }
  return new BitsReport(rows);
}
