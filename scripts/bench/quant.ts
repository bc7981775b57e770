/**
 * @file Bench section `quant`: throughput of the fused fakeQuantize primitive (forward, and
 * forward + backward for x, scale and zero point) on 1M float32 elements, per tensor and per
 * channel, beside PyTorch's learnable fake-quantize ops on the same sizes.
 */
import * as q from '@qgrad/core';
import type { BenchContext } from './context.js';

const ROWS = 1024;
const COLS = 1024;

function melemPerS(fn: () => void, reps: number, median: (xs: number[]) => number): number {
  fn();
  const ts: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    fn();
    ts.push(performance.now() - t);
  }
  return (ROWS * COLS) / (median(ts) * 1e3);
}

export async function run(ctx: BenchContext): Promise<Record<string, number>> {
  const reps = ctx.quick ? 3 : 9;
  const out: Record<string, number> = {};
  const x = q.randn([ROWS, COLS], { requiresGrad: true });
  const g = q.randn([ROWS, COLS]);
  for (const [label, axis] of [['per-tensor', undefined], ['per-channel', 0]] as const) {
    const n = axis === undefined ? 1 : ROWS;
    const s = q.full([n], 0.05, { requiresGrad: true });
    const z = q.zeros([n], { requiresGrad: true });
    const opts = { qmin: -8, qmax: 7, estimator: 'lsq', gradScale: 'lsq' as const, axis };
    out[`qgrad ${label} fwd`] = melemPerS(() => q.noGrad(() => q.fakeQuantize(x, s, z, opts)), reps, ctx.median);
    out[`qgrad ${label} fwd+bwd`] = melemPerS(() => q.gradOf([q.fakeQuantize(x, s, z, opts)], [x, s, z], { gradOutputs: [g] }), reps, ctx.median);
  }
  const t = ctx.torch('quant', String(ROWS), String(COLS), String(reps));
  if (t) for (const [k, v] of Object.entries(t)) out[`pytorch ${k}`] = v;
  const rows = Object.entries(out).map(([k, v]) => {
    const ref = out[k.replace('qgrad', 'pytorch')];
    return [k, v, k.startsWith('qgrad') && ref ? v / ref : '-'];
  });
  ctx.table(`fakeQuantize throughput, ${ROWS}×${COLS} float32, 4-bit LSQ (Melem/s, higher is better; median of ${reps})`, ['what', 'Melem/s', '× pytorch'], rows);
  return out;
}
