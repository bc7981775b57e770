/**
 * @file Bits per parameter of a whole model, QAT (prepared) or converted: quantized weights at
 * their grid's bits, their scales and zero points as overhead, everything else at its dtype's width.
 */
import type { Tensor } from '@qgrad/core';
import type { Module } from '@qgrad/nn';
import { isQuantLayer } from '../qat/modules.js';
import { ActQuantizer, WeightQuantizer } from '../qat/quantizers.js';
import { QuantizedConv2d, QuantizedEmbedding, QuantizedLinear } from '../qat/convert.js';

export interface BitsOptions {
  /** Bits of each stored scale / zero point / offset (default 32). */
  scaleBits?: number;
  /** Ternary weights: 'log2' counts log2(3) ≈ 1.585 bits (entropy bound), 2 counts a 2-bit field (default 'log2'). */
  ternaryBits?: 'log2' | 2;
  /** Count activation-quantizer scales as overhead (default true). */
  activationScales?: boolean;
}

export interface BitsRow {
  name: string;
  /** Parameters (weights, biases, …) in this entry. */
  params: number;
  bits: number;
  what: string;
}

export interface BitsReport {
  /** Model parameters, excluding quantizer scales (they are overhead). */
  params: number;
  totalBits: number;
  bitsPerParameter: number;
  rows: BitsRow[];
}

const DTYPE_BITS: Record<string, number> = { float32: 32, float64: 64, int32: 32, int8: 8, uint8: 8 };

/** Bits of one code of an integer range [qmin, qmax] (levels = qmax − qmin + 1). */
function codeBits(qmin: number, qmax: number, ternary: 'log2' | 2): number {
  const levels = qmax - qmin + 1;
  if (levels === 3) return ternary === 2 ? 2 : Math.log2(3);
  return Math.ceil(Math.log2(levels));
}

/**
 * Counts the storage of `model` per parameter. A quantized weight costs numel·bits plus
 * (#scales + #zero points)·scaleBits; its dynamic scales count as stored (they are after convert).
 * @example bitsPerParameter(model).bitsPerParameter; // e.g. 4.27 for W4 per-channel with fp32 biases
 */
export function bitsPerParameter(model: Module, opts: BitsOptions = {}): BitsReport {
  const sb = opts.scaleBits ?? 32;
  const ternary = opts.ternaryBits ?? 'log2';
  const rows: BitsRow[] = [];
  const counted = new Set<Tensor>();
  for (const [name, m] of model.namedModules()) {
    if (isQuantLayer(m) && m.weightQuantizer?.enabled) {
      const wq: WeightQuantizer = m.weightQuantizer;
      const n = m.weight.numel();
      const nScales = wq.view[0] * wq.view[1];
      const offsets = wq.zeroPoint ? wq.zeroPoint.numel() : 0;
      const b = wq.grid === 'hestia' ? codeBits(-1, 1, ternary) : codeBits(wq.qmin, wq.qmax, ternary);
      rows.push({ name: `${name}.weight`, params: n, bits: n * b + (nScales + offsets) * sb, what: `${n}×${+b.toFixed(3)} + ${nScales + offsets} scales` });
      counted.add(m.weight);
      for (const t of [wq.scale, wq.zeroPoint, wq.initialized]) if (t) counted.add(t);
    } else if (m instanceof QuantizedLinear || m instanceof QuantizedConv2d || m instanceof QuantizedEmbedding) {
      const n = m.weightCodes.numel();
      const over = m.weightScale.numel() + (m.weightZeroPoint?.numel() ?? 0);
      const b = codeBits(m.weightGrid.qmin, m.weightGrid.qmax, ternary);
      rows.push({ name: `${name}.weightCodes`, params: n, bits: n * b + over * sb, what: `${n}×${+b.toFixed(3)} + ${over} scales` });
      for (const t of [m.weightCodes, m.weightScale, m.weightZeroPoint]) if (t) counted.add(t);
      const bias = (m as { bias?: Tensor | null }).bias; // a buffer after convert, still a parameter of the model
      if (bias) {
        rows.push({ name: `${name}.bias`, params: bias.numel(), bits: bias.numel() * (DTYPE_BITS[bias.dtype] ?? 32), what: `${bias.numel()}×${DTYPE_BITS[bias.dtype] ?? 32} (${bias.dtype})` });
        counted.add(bias);
      }
      const inOver = (m.inputScale?.numel() ?? 0) + (m.inputZeroPoint?.numel() ?? 0);
      if (inOver && opts.activationScales !== false) rows.push({ name: `${name}.input`, params: 0, bits: inOver * sb, what: `${inOver} activation scales` });
      for (const t of [m.inputScale, m.inputZeroPoint]) if (t) counted.add(t);
    } else if (m instanceof ActQuantizer) {
      const k = (m.scale?.numel() ?? 0) + (m.zeroPoint?.numel() ?? 0);
      if (k && opts.activationScales !== false) rows.push({ name, params: 0, bits: k * sb, what: `${k} activation scales` });
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
    rows.push({ name, params: t.numel(), bits: t.numel() * b, what: `${t.numel()}×${b} (${t.dtype})` });
  }
  const params = rows.reduce((a, r) => a + r.params, 0);
  const totalBits = rows.reduce((a, r) => a + r.bits, 0);
  return { params, totalBits, bitsPerParameter: params ? totalBits / params : 0, rows };
}
