/**
 * @file Per-layer quantization error of a QAT model's weights: MSE and SQNR (dB) between each
 * weight and its fake-quantized value, as rows and as a printable table.
 */
import { noGrad, type Tensor } from '@qgrad/core';
import type { Module } from '@qgrad/nn';
import { isQuantLayer } from '../qat/modules.js';

/** One layer's quantization error: MSE and SQNR of its quantized weight against the float one. */
export interface LayerError {
  name: string;
  numel: number;
  /** mean (w − ŵ)². */
  mse: number;
  /** 10·log10(Σw² / Σ(w − ŵ)²); Infinity when exact. */
  sqnrDb: number;
}

/** MSE and SQNR of `x̂` against `x`. @example tensorError(w, wHat).sqnrDb */
export function tensorError(x: Tensor, xHat: Tensor): { mse: number; sqnrDb: number } {
  const a = x.dataSync();
  const b = xHat.dataSync();
  let sig = 0;
  let err = 0;
  for (let i = 0; i < a.length; i++) {
    sig += a[i]! ** 2;
    err += (a[i]! - b[i]!) ** 2;
  }
  return { mse: err / a.length, sqnrDb: err === 0 ? Infinity : 10 * Math.log10(sig / err) };
}

/**
 * The weight quantization error of every enabled QAT layer (eval-mode quantizers, no gradient).
 * @example console.log(formatErrorTable(quantizationError(model)));
 */
export function quantizationError(model: Module): LayerError[] {
  const rows: LayerError[] = [];
  for (const [name, m] of model.namedModules()) {
    if (!isQuantLayer(m) || !m.weightQuantizer?.enabled) continue;
    const wHat = noGrad(() => m.quantizedWeight());
    rows.push({ name, numel: m.weight.numel(), ...tensorError(m.weight, wHat) });
  }
  return rows;
}

/**
 * The rows as an aligned text table.
 * @example console.log(formatErrorTable(quantizationError(model)));
 */
export function formatErrorTable(rows: LayerError[]): string {
  const lines = rows.map((r) => [r.name, String(r.numel), r.mse.toExponential(3), r.sqnrDb === Infinity ? 'inf' : r.sqnrDb.toFixed(2)]);
  const head = ['layer', 'numel', 'mse', 'sqnr dB'];
  const w = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  return [head, ...lines].map((l) => l.map((c, i) => (i ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join('  ')).join('\n');
}
