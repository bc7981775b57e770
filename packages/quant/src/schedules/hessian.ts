/**
 * @file Hessian-trace estimates by double backward and HESTIA's per-tensor temperature scales:
 * `hutchinsonTrace` (tr(∇²_{W_i} L) per parameter from Rademacher probes, Hv by `gradOf` with
 * `createGraph`), `hessianTempScales` (exp(−α·sigmoid(κ·z)) of the standardised log traces) and
 * `calibrateHestia`, which writes them into a model's HESTIA quantizers.
 */
import { add, cast, defaultGenerator, gradOf, lt, mul, noGrad, rand, sum, tidy, type Generator, type Tensor } from '@qgrad/core';
import type { Module } from '@qgrad/nn';
import { isQuantLayer, type QuantLayer } from '../qat/modules.js';

/** Options of Hutchinson's Hessian-trace estimate: probe vectors per parameter and their generator. */
export interface HutchinsonOptions {
  /** Probe vectors per parameter (default 16). */
  samples?: number;
  generator?: Generator;
}

/** A Rademacher (±1) tensor like `p`. */
function rademacher(p: Tensor, generator: Generator): Tensor {
  const u = rand([...p.shape], { dtype: p.dtype, generator });
  return add(mul(cast(lt(u, 0.5), p.dtype), 2), -1);
}

/**
 * Hutchinson's estimate of each parameter block's Hessian trace, tr(∇²_{p_i} L) ≈ mean_v vᵀ(H v),
 * with one Hessian-vector product per probe (double backward). `loss` is re-evaluated per probe
 * (so it may draw a fresh batch). Exact for diagonal Hessians. One probe spans all parameters, so
 * v_iᵀ(Hv)_i also holds cross terms v_iᵀH_ij v_j; their expectation is 0, so each block's
 * estimate stays unbiased for tr(H_ii).
 * @example const [t] = hutchinsonTrace(() => w.square().sum(), [w]); // 2·numel(w)
 */
export function hutchinsonTrace(loss: () => Tensor, params: Tensor[], opts: HutchinsonOptions = {}): number[] {
  const n = opts.samples ?? 16;
  const gen = opts.generator ?? defaultGenerator;
  const acc = params.map(() => 0);
  for (let k = 0; k < n; k++) {
    // each probe's forward and double-backward graph is released when the probe ends: left to
    // the garbage collector (which runs between event-loop turns, not inside this loop), four
    // probes of the tiny Llama at batch 16 × 128 filled the 2 GiB wasm heap
    tidy(() => {
      const L = loss();
      const grads = gradOf([L], params, { createGraph: true });
      const vs = params.map((p) => rademacher(p, gen));
      // Σ_i ⟨∇_i L, v_i⟩, differentiated again: Hv restricted to the diagonal blocks we read below
      let gv: Tensor | null = null;
      for (let i = 0; i < params.length; i++) {
        const t = sum(mul(grads[i]!, vs[i]!));
        gv = gv ? add(gv, t) : t;
      }
      const hv = gradOf([gv!], params, { allowUnused: true });
      noGrad(() => {
        for (let i = 0; i < params.length; i++) acc[i]! += sum(mul(hv[i]!, vs[i]!)).item();
      });
    });
  }
  return acc.map((a) => a / n);
}

/** How a layer's Hessian trace lowers its temperature scale (HESTIA): the largest drop α and the sigmoid's sharpness κ. */
export interface TempScaleOptions {
  /** α_H: how far the scale can drop, to e^{−α} (default 0.5; 0 disables). */
  alpha?: number;
  /** κ: sharpness of the sigmoid (default 1). */
  kappa?: number;
}

/**
 * HESTIA's temperature scales from traces: z = standardised log max(χ, 1e−8) over all tensors,
 * scale = exp(−α·sigmoid(κ·z)) ∈ (e^{−α}, 1). Higher curvature ⇒ smaller scale ⇒ colder.
 * @example hessianTempScales([0.1, 1, 10]); // descending: the layer with most curvature gets the coldest scale
 */
export function hessianTempScales(traces: number[], opts: TempScaleOptions = {}): number[] {
  const alpha = opts.alpha ?? 0.5;
  const kappa = opts.kappa ?? 1;
  const logs = traces.map((t) => Math.log(Math.max(t, 1e-8)));
  const mu = logs.reduce((a, b) => a + b, 0) / logs.length;
  const sd = Math.sqrt(logs.reduce((a, b) => a + (b - mu) ** 2, 0) / logs.length);
  return logs.map((l) => Math.exp(-alpha / (1 + Math.exp(-kappa * ((l - mu) / (sd + 1e-8))))));
}

/** One layer's Hessian calibration: its trace and the temperature scale it gets. */
export interface HestiaCalibration {
  name: string;
  trace: number;
  tempScale: number;
}

/**
 * Estimates the Hessian trace of `loss` for the weight of every HESTIA-quantized layer and sets
 * each quantizer's `tempScale` (methods.md §4, granularity "tensor"). Like HESTIA's offline
 * calibration, the curvature is that of the full-precision model: the weight quantizers are
 * switched off while the traces are estimated (`quantized: true` keeps them on; the soft
 * quantizer's own curvature then makes traces negative, which clamp to 1e−8).
 * @example const rows = calibrateHestia(model, () => crossEntropy(model.forward(x), y), { samples: 8 });
 */
export function calibrateHestia(model: Module, loss: () => Tensor, opts: HutchinsonOptions & TempScaleOptions & { quantized?: boolean } = {}): HestiaCalibration[] {
  const layers = [...model.namedModules()].filter(([, m]) => isQuantLayer(m) && m.weightQuantizer?.soft) as [string, QuantLayer][];
  if (!layers.length) throw new Error("calibrateHestia: the model has no weight quantizers with HESTIA's soft forward (weight option soft)");
  const was = layers.map(([, m]) => m.weightQuantizer!.enabled);
  if (!opts.quantized) for (const [, m] of layers) m.weightQuantizer!.enabled = false;
  let traces: number[];
  try {
    traces = hutchinsonTrace(loss, layers.map(([, m]) => m.weight), opts);
  } finally {
    layers.forEach(([, m], i) => (m.weightQuantizer!.enabled = was[i]!));
  }
  const scales = hessianTempScales(traces, opts);
  return layers.map(([name, m], i) => {
    m.weightQuantizer!.soft!.tempScale = scales[i]!;
    return { name, trace: traces[i]!, tempScale: scales[i]! };
  });
}
