/**
 * @file `ptq(model, calibrationBatches, options)`: post-training quantization in place, on the
 * vocabulary of prepareQAT (rules by name/type, default, skip). Layers are chosen and wrapped by
 * prepareQAT, then handled one at a time in module order on inputs that already flow through the
 * quantized earlier layers (GPTQ's sequential calibration): RTN, GPTQ (gptq.ts), FlexRound
 * (flexround.ts), AWQ's and SmoothQuant's channel migration (migrate.ts) with AWQ's clip search
 * (clip.ts), each after an optional Hadamard rotation. The
 * result is an ordinary QAT-layer model (some layers inside an InputTransform) that `convert` takes;
 * PTQTP (ptqtp.ts, calibration-free) instead leaves TritPlaneLinear layers, already in their
 * packed inference form, which `convert` passes over.
 */
import { cat, dispose, fromTypedArray, hadamard, keep, noGrad, tidy, type Tensor } from '@qgrad/core';
import type { Module } from '@qgrad/nn';
import type { FloatDType } from '../grids/grid.js';
import { fakeQuantView } from '../quantizer/apply.js';
import { resolveQuantizer } from '../quantizer/config.js';
import { tensorError } from '../inspect/error.js';
import { QuantLinear, type QuantLayer, type QuantLayerConfig } from '../qat/modules.js';
import { matchesName, prepareQAT, replaceSubmodule, type LayerType, type NamePattern, type QATConfig, type QATRule } from '../qat/prepare.js';
import type { WeightQuantConfig, WeightQuantizer } from '../qat/quantizers.js';
import { gptq, HessianAccumulator } from './gptq.js';
import { flexRound } from './flexround.js';
import { awqSearch, smoothQuantScales } from './migrate.js';
import { awqClipSearch, type AwqClipOptions } from './clip.js';
import { InputTransform } from './transform.js';
import { TritPlaneLinear, tritPlanes, type TritPlaneOptions } from './ptqtp.js';

/** The post-training quantization methods `ptq` runs. */
export type PtqMethod = 'rtn' | 'gptq' | 'awq' | 'smoothquant' | 'flexround' | 'ptqtp';

/** What `ptq` takes: a QAT config's rules, the method, its settings and an optional Hadamard rotation. */
export interface PtqOptions extends QATConfig {
  method: PtqMethod;
  /** Rotate each Linear's input and weight by a normalised block Hadamard transform first (true: the largest power of two ≤ 128 dividing `in`). */
  hadamard?: boolean | { blockSize?: number };
  /** GPTQ: damping fraction of mean(diag H) (default 0.01) and act-order (default true). */
  percDamp?: number;
  actOrder?: boolean;
  /** SmoothQuant's migration strength α (default 0.5). */
  alpha?: number;
  /** AWQ's grid of exponents k/n, k = 0…n−1 (default 20, as the reference). */
  awqGrid?: number;
  /**
   * AWQ's clip search after the scale search (clip.ts), on by default as in the reference: per output
   * row (per group of a row on grouped grids) the range absmax·(1 − i/grid), i = 0 … grid·maxShrink − 1
   * (defaults 20 and 0.5), with the lowest output error on the calibration inputs; the weight is
   * clamped to it before it is quantized. `false` turns it off. Layers matching `skip` keep their
   * range (default: q and k projections, as the reference, since their outputs only meet in QKᵀ).
   * Clips per row or per group of a row, so other granularities need `awqClip: false`.
   * @example ptq(model, batches, { method: 'awq', awqClip: false }); // scale search only
   */
  awqClip?: boolean | (AwqClipOptions & { skip?: NamePattern | NamePattern[] });
  /** FlexRound: Adam steps per layer (default 200) and learning rate (default 3e−3). */
  flexRoundIters?: number;
  flexRoundLr?: number;
  /** PTQTP: group size, ridge λ, iterations and tolerance of the trit-plane fit (ptqtp.ts). */
  ptqtp?: TritPlaneOptions;
  /** Called after each layer (drive a progress bar with it). */
  onProgress?: (p: { done: number; total: number; layer: string }) => void;
  /** Print a one-line progress bar to stderr (default false). */
  progress?: boolean;
}

/** One calibrated layer: output error of plain round-to-nearest and of the method, on the calibration inputs. */
export interface PtqLayerReport {
  name: string;
  type: LayerType;
  /** What ran on it: Conv2d / Embedding layers get 'rtn' whatever the method. */
  method: PtqMethod;
  /** 'int4 channel ste fixed' style. */
  weight: string;
  /** Calibration rows seen (tokens for Linear). */
  tokens: number;
  /** Output MSE and SQNR (dB) of the layer with round-to-nearest weights (before), and as quantized by the method (after). */
  rtnMse: number;
  mse: number;
  rtnSqnrDb: number;
  sqnrDb: number;
  /** AWQ's chosen exponent or SmoothQuant's α. */
  alpha?: number;
  /** AWQ's clip search: fraction of clip units (rows, or groups of a row) whose range it shrank. */
  clipped?: number;
  hadamardBlock?: number;
}

/**
 * ptq's per-layer report; `toString()` prints it as a table.
 * @example const { report } = ptq(model, calibration, { method: 'gptq', default: { weight: { grid: 'int', bits: 4 } } });
 * console.log(report.toString());
 */
export class PtqReport {
  constructor(readonly rows: PtqLayerReport[]) {}
  toString(): string {
    const head = ['layer', 'type', 'method', 'weight', 'tokens', 'rtn mse', 'mse', 'rtn sqnr', 'sqnr'];
    const f = (x: number) => (Number.isFinite(x) ? x.toPrecision(4) : String(x));
    const body = this.rows.map((r) => [r.name, r.type, r.method + (r.hadamardBlock ? `+H${r.hadamardBlock}` : '') + (r.alpha !== undefined ? ` α=${r.alpha}` : '') + (r.clipped !== undefined ? ` clip ${(100 * r.clipped).toFixed(0)}%` : ''), r.weight, String(r.tokens), f(r.rtnMse), f(r.mse), f(r.rtnSqnrDb), f(r.sqnrDb)]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
    return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
  }
}

const DEFAULTS: Record<PtqMethod, QuantLayerConfig> = {
  rtn: { weight: { grid: 'int', bits: 4 } },
  gptq: { weight: { grid: 'int', bits: 4 } },
  awq: { weight: { grid: 'int', bits: 4, granularity: { group: 128 } } },
  flexround: { weight: { grid: 'int', bits: 4 } },
  smoothquant: { weight: { grid: 'int', bits: 8 }, input: { grid: 'int', bits: 8, granularity: 'token', scale: 'dynamic' } },
  // PTQTP replaces its Linear layers outright; this grid is the report's baseline (absmean ternary per row) and what other layer types get
  ptqtp: { weight: { grid: 'ternary' } },
};

/**
 * PTQ scales are set once from the (transformed) float weight: a weight config that names neither
 * a scale nor an estimator gets a fixed scale (absmax, or minmax when asymmetric, on integer grids)
 * instead of QAT's learned LSQ one; power-of-two (MX) grids keep their dynamic block scales.
 */
function fixScale(w: WeightQuantConfig | null | undefined): WeightQuantConfig | null | undefined {
  if (!w || w.scale !== undefined || w.estimator !== undefined) return w;
  const plan = resolveQuantizer(w, 'weight', 'ptq');
  if (plan.grid.scale.kind === 'pow2') return w;
  return { ...w, scale: plan.grid.integer ? { mode: 'fixed', rule: w.asymmetric ? 'minmax' : 'absmax' } : { mode: 'fixed' } };
}

function largestPow2Block(n: number, cap = 128): number {
  let b = 1;
  while (b * 2 <= cap && n % (b * 2) === 0) b *= 2;
  return b;
}

/** Runs the model on every batch and returns the inputs `layer` saw, concatenated on dim 0 (kept). */
function captureInputs(model: Module, batches: readonly (Tensor | Tensor[])[], layer: Module): Tensor[] {
  const seen: Tensor[] = [];
  const target = layer as unknown as { forward: (x: Tensor) => Tensor };
  const orig = target.forward;
  target.forward = (x: Tensor) => {
    seen.push(keep(x.detach().clone()));
    return orig(x);
  };
  try {
    const run = (model as unknown as { forward: (...a: Tensor[]) => Tensor }).forward;
    for (const b of batches) tidy(() => noGrad(() => void run(...(Array.isArray(b) ? b : [b]))));
  } finally {
    target.forward = orig;
  }
  return seen;
}

/**
 * Round-to-nearest of `w` by the layer's own quantizer, its scales initialised from `w`.
 * @example const wq = roundToNearest(layer.weightQuantizer!, layer.weight);
 */
export function roundToNearest(wq: WeightQuantizer, w: Tensor): Tensor {
  return noGrad(() => {
    const on = wq.enabled;
    wq.enabled = true;
    wq.initFrom(w);
    const y = wq.forward(w);
    wq.enabled = on;
    return y;
  });
}

/** GPTQ on a QuantLinear whose weight (and stored scales) hold the float weight to quantize; x: [n, in] float64. */
function gptqLayer(layer: QuantLinear, x: Tensor, o: PtqOptions, who: string): void {
  const wq = layer.weightQuantizer!;
  const w = layer.weight;
  const dtype = w.dtype as FloatDType;
  const [rows, cols] = [layer.outFeatures, layer.inFeatures];
  const acc = new HessianAccumulator(cols);
  acc.add(x.dataSync(), x.shape[0]!);
  const { scaleOf, zeroOf } = noGrad(() => {
    const g = wq.group(w);
    const gp = wq.gridParams(w);
    const full = (t: Tensor) => g.restore(t.add(g.view.mul(0))).reshape([rows, cols]).to('float64').dataSync() as Float64Array;
    return { scaleOf: full(gp.scale), zeroOf: typeof gp.zeroPoint === 'number' ? gp.zeroPoint : full(gp.zeroPoint) };
  });
  const column = (a: ArrayLike<number> | number, j: number) => {
    if (typeof a === 'number') return a;
    const c = new Float64Array(rows);
    for (let r = 0; r < rows; r++) c[r] = a[r * cols + j]!;
    return fromTypedArray(dtype === 'float64' ? c : Float32Array.from(c), [rows, 1], dtype);
  };
  const quantizeColumn = (values: Float64Array, j: number) =>
    tidy(() => noGrad(() => fakeQuantView(wq.plan, fromTypedArray(dtype === 'float64' ? values : Float32Array.from(values), [rows, 1], dtype), column(scaleOf, j) as Tensor, column(zeroOf, j)).to('float64').dataSync().slice()));
  const { q } = gptq(w.to('float64').dataSync(), rows, cols, acc.symmetric(), quantizeColumn, { percDamp: o.percDamp, actOrder: o.actOrder ?? true, who });
  noGrad(() => w.copy_(fromTypedArray(dtype === 'float64' ? q : Float32Array.from(q), [rows, cols], dtype)));
}

/** FlexRound on a QuantLinear with a stored per-channel scale on a symmetric int grid: weight ← Ŵ, scale ← s1. */
function flexRoundLayer(layer: QuantLinear, x: Tensor, o: PtqOptions, who: string): void {
  const wq = layer.weightQuantizer!;
  const p = wq.plan;
  if (!p.grid.integer || p.granularity !== 'channel' || !wq.scale || p.hasZeroPoint) {
    throw new Error(`${who}: flexround learns one scale per output channel of a symmetric integer grid; this layer's weight is ${row(p)}`);
  }
  const r = flexRound(layer.weight, x, { qmin: p.grid.integer.qmin, qmax: p.grid.integer.qmax, scale: wq.scale, iters: o.flexRoundIters, lr: o.flexRoundLr });
  layer.weight.copy_(r.weight.to(layer.weight.dtype));
  wq.scale.copy_(r.scale.reshape([...wq.scale.shape]).to(wq.scale.dtype));
}

/** The reference's q/k test (a substring of the name) narrowed to whole name parts. */
const QK_PROJECTIONS: NamePattern[] = [/(^|\.)(q_proj|k_proj|qProj|kProj|query|key|Wqkv)$/];

/** Inputs per clip unit of a Linear's weight grid: a whole row, or a group along the inputs. */
function clipGroupSize(p: WeightQuantizer['plan'], inFeatures: number, who: string): number {
  const g = p.granularity;
  if (g === 'channel' || (typeof g === 'object' && 'channel' in g && g.channel === 0)) return inFeatures;
  if (typeof g === 'object' && 'group' in g && (g.axis === undefined || g.axis === -1 || g.axis === 1)) return g.group;
  throw new Error(`${who}: AWQ's clip search clips per output row or per group of a row; this layer's weight is ${row(p)} (pass awqClip: false)`);
}

const row = (p: WeightQuantizer['plan']) => `${p.grid.label} ${typeof p.granularity === 'string' ? p.granularity : JSON.stringify(p.granularity)} ${p.mode}${p.hasZeroPoint ? ' asymmetric' : ''}`;

/**
 * Quantizes `model` in place after calibration on `calibrationBatches` (each a model input, or the
 * argument list of its forward). Layers are picked as prepareQAT picks them (`rules`, `default`,
 * `skip`, `types`); without rules or default, the method's default is used (int4 per channel;
 * AWQ int4 in groups of 128; SmoothQuant W8A8 with per-token dynamic inputs). GPTQ, AWQ,
 * SmoothQuant, FlexRound, PTQTP and the Hadamard rotation apply to Linear layers; Conv2d and Embedding layers are
 * rounded to nearest. AWQ runs its scale search and then, unless `awqClip: false`, its clip search.
 * PTQTP needs no calibration (batches, if any, only feed the report, whose
 * RTN baseline is then absmean ternary per row) and replaces each Linear by a TritPlaneLinear.
 * Returns the model and the per-layer report.
 * @example
 * const { report } = ptq(model, batches, { method: 'gptq', default: { weight: { grid: 'int', bits: 3, granularity: { group: 64 } } } });
 * console.log(report.toString());
 * const inference = convert(model);
 */
export function ptq<M extends Module>(model: M, calibrationBatches: readonly (Tensor | Tensor[])[], o: PtqOptions): { model: M; report: PtqReport } {
  if (!(['rtn', 'gptq', 'awq', 'smoothquant', 'flexround', 'ptqtp'] as string[]).includes(o.method)) throw new Error(`ptq: unknown method ${JSON.stringify(o.method)}; methods are rtn, gptq, awq, smoothquant, flexround, ptqtp`);
  if (!calibrationBatches.length && o.method !== 'rtn' && o.method !== 'ptqtp') throw new Error(`ptq: method '${o.method}' needs calibration batches; got none`);
  const useDefault = !o.rules?.length && !o.default;
  const fix = (r: QuantLayerConfig) => ({ ...r, weight: fixScale(r.weight) });
  const cfg: QATConfig = {
    rules: o.rules?.map((r) => fix(r) as QATRule),
    default: useDefault ? fix(DEFAULTS[o.method]) : o.default ? fix(o.default) : undefined,
    skip: o.skip,
    types: o.types,
  };
  const summary = prepareQAT(model, cfg);
  const targets = summary.rows.filter((r) => r.status === 'quantized').map((r) => ({ row: r, layer: model.getSubmodule(r.name) as unknown as QuantLayer & { forward(x: Tensor): Tensor } }));
  const setOn = (l: QuantLayer, on: boolean) => {
    if (l.weightQuantizer) l.weightQuantizer.enabled = on;
    if (l.inputQuantizer) l.inputQuantizer.enabled = on;
  };
  for (const t of targets) setOn(t.layer, false);
  const rows: PtqLayerReport[] = [];
  for (const [i, { row, layer }] of targets.entries()) {
    const who = `ptq(${o.method}): layer '${row.name}' (${row.type})`;
    const xs = calibrationBatches.length ? captureInputs(model, calibrationBatches, layer) : [];
    const linearOnly = row.type === 'Linear' && layer instanceof QuantLinear && layer.weightQuantizer;
    const method: PtqMethod = linearOnly ? o.method : 'rtn';
    const report: PtqLayerReport = { name: row.name, type: row.type, method, weight: row.weight, tokens: 0, rtnMse: NaN, mse: NaN, rtnSqnrDb: NaN, sqnrDb: NaN };
    // a tidy per layer: this loop never yields to the garbage collector, and a layer's float64
    // copies, rotations and AWQ trials (~0.5 GiB on a 4-layer Llama) would fill the 2 GiB wasm heap
    // within one model; what outlives the layer is written in place or kept (the migration scale)
    tidy(() => noGrad(() => {
      const x = xs.length ? (row.type === 'Linear' ? cat(xs.map((t) => t.reshape([-1, t.shape[t.ndim - 1]!]))) : cat(xs)) : null;
      dispose(xs);
      const yFloat = x ? keep(layer.forward(x)) : null;
      setOn(layer, true);
      if (x && yFloat) {
        const e = tensorError(yFloat, layer.forward(x));
        Object.assign(report, { tokens: x.shape[0]!, rtnMse: e.mse, rtnSqnrDb: e.sqnrDb });
      }
      let final: Module & { forward(x: Tensor): Tensor } = layer;
      if (linearOnly && o.method === 'ptqtp') {
        // calibration-free: the planes are fitted to the weight alone; the inputs only feed the report
        const ql = layer as QuantLinear;
        let wf = ql.weight.to('float64');
        const block = o.hadamard ? (typeof o.hadamard === 'object' && o.hadamard.blockSize) || largestPow2Block(ql.inFeatures) : 0;
        if (block && ql.inFeatures % block) throw new Error(`${who}: Hadamard block ${block} must divide inFeatures ${ql.inFeatures}`);
        if (block) {
          wf = hadamard(wf, { blockSize: block });
          report.hadamardBlock = block;
        }
        const planes = tritPlanes(wf, o.ptqtp);
        report.weight = `2 trit-planes g${planes.groupSize}`;
        const tp = new TritPlaneLinear(planes, ql.bias, ql.weight.dtype === 'float64' ? 'float64' : 'float32');
        final = block ? new InputTransform(tp, { hadamardBlock: block }) : tp;
        replaceSubmodule(model, row.name, final);
      } else if (linearOnly && x && yFloat) {
        const ql = layer as QuantLinear;
        const wq = ql.weightQuantizer!;
        const w = ql.weight;
        let xw = x.to('float64'); // the input as the (transformed) weight sees it
        let wf = w.to('float64');
        const block = o.hadamard ? (typeof o.hadamard === 'object' && o.hadamard.blockSize) || largestPow2Block(ql.inFeatures) : 0;
        if (block && ql.inFeatures % block) throw new Error(`${who}: Hadamard block ${block} must divide inFeatures ${ql.inFeatures}`);
        if (block) {
          xw = hadamard(xw, { blockSize: block });
          wf = hadamard(wf, { blockSize: block }); // rows of W times H: (xH)(WH)ᵀ = xWᵀ
          report.hadamardBlock = block;
        }
        let multiplier: Tensor | null = null;
        if (o.method === 'awq' || o.method === 'smoothquant') {
          const r = o.method === 'awq' ? awqSearch(wf, xw, (v) => roundToNearest(wq, v.to(w.dtype)).to('float64'), o.awqGrid ?? 20) : smoothQuantScales(wf, xw, o.alpha ?? 0.5);
          report.alpha = r.alpha;
          wf = wf.mul(r.scale); // W·diag(s)
          xw = xw.div(r.scale);
          multiplier = r.scale.reciprocal().to(w.dtype);
        }
        const clip = o.awqClip ?? true;
        if (o.method === 'awq' && clip && !matchesName(row.name, (typeof clip === 'object' && clip.skip) || QK_PROJECTIONS)) {
          const c = awqClipSearch(wf, xw, (v) => roundToNearest(wq, v.to(w.dtype)).to('float64'), clipGroupSize(wq.plan, ql.inFeatures, who), typeof clip === 'object' ? clip : {});
          wf = c.weight;
          report.clipped = c.clipped;
        }
        w.copy_(wf.to(w.dtype));
        wq.initFrom(w);
        if (o.method === 'gptq') gptqLayer(ql, xw, o, who);
        if (o.method === 'flexround') flexRoundLayer(ql, xw, o, who);
        if (block || multiplier) {
          final = new InputTransform(ql, { multiplier: multiplier ? keep(multiplier) : null, hadamardBlock: block });
          replaceSubmodule(model, row.name, final);
        }
      }
      if (x && yFloat) Object.assign(report, tensorError(yFloat, final.forward(x)));
      dispose([yFloat, x].filter((t): t is Tensor => t !== null));
    }));
    rows.push(report);
    o.onProgress?.({ done: i + 1, total: targets.length, layer: row.name });
    if (o.progress) {
      const n = 30;
      const k = Math.round(((i + 1) / targets.length) * n);
      process.stderr.write(`\rptq ${o.method} [${'#'.repeat(k)}${'.'.repeat(n - k)}] ${i + 1}/${targets.length} ${row.name}${i + 1 === targets.length ? '\n' : ''}`);
    }
  }
  return { model, report: new PtqReport(rows) };
}
