/**
 * @file Bench section `mlp`: one epoch of the MNIST MLP (784-256-256-10, batch 64, Adam, the
 * 8,000 training digits in a fixed order) in float32 and with LSQ W4A4 fake quantization
 * (per-tensor learnable scales on weights and inputs), against PyTorch on the same data.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as q from '@qgrad/core';
import { Adam, Linear, loadMnist, Module, trainStep } from '@qgrad/nn';
import { type BenchContext, readBack } from './context.js';
import { gpuStatus } from './gpu.js';

/** The bench's MNIST MLP (784-256-256-10), with LSQ W4A4 when `quant` (scripts/bench/soak.ts trains it too). */
export class Mlp extends Module {
  layers: Linear[];
  scales: q.Tensor[] = [];
  constructor(readonly quant: boolean) {
    super();
    this.layers = [784, 256, 256].map((d, i) => this.registerModule(`fc${i}`, new Linear(d, i === 2 ? 10 : 256)));
    if (quant) {
      // one learnable step for each weight and each layer input (LSQ init 2·mean|w|/√qmax is applied lazily)
      for (let i = 0; i < 6; i++) this.scales.push(this.registerParameter(`s${i}`, q.tensor([i % 2 ? 0.02 : 0.1], { requiresGrad: true })));
    }
  }
  forward(x: q.Tensor): q.Tensor {
    let h = x;
    this.layers.forEach((l, i) => {
      let w = l.weight;
      if (this.quant) {
        // activations are non-negative (pixels, ReLU outputs): unsigned 4-bit; weights signed 4-bit
        h = q.fakeQuantize(h, this.scales[2 * i]!, 0, { qmin: 0, qmax: 15, estimator: 'lsq', gradScale: 'lsq' });
        w = q.fakeQuantize(w, this.scales[2 * i + 1]!, 0, { qmin: -8, qmax: 7, estimator: 'lsq', gradScale: 'lsq' });
      }
      h = q.linear(h, w, l.bias);
      if (i < 2) h = h.relu();
    });
    return h;
  }
}

function epoch(quant: boolean, images: q.Tensor, labels: q.Tensor): number {
  q.manualSeed(0);
  const model = new Mlp(quant);
  const opt = new Adam(model.parameters(), { lr: 1e-3 });
  const n = images.shape[0]!;
  const t = performance.now();
  for (let s = 0; s + 64 <= n; s += 64) {
    // trainStep recycles the step's activations at its end (what PyTorch's refcounting does)
    trainStep(model, opt, () => {
      const loss = q.crossEntropy(model.forward(images.narrow(0, s, 64)), labels.narrow(0, s, 64));
      opt.zeroGrad();
      loss.backward();
      opt.step();
    });
  }
  readBack(model);
  return performance.now() - t;
}

export async function run(ctx: BenchContext): Promise<Record<string, number>> {
  const { train } = loadMnist({ flatten: true });
  const n = ctx.quick ? 1024 : train.images.shape[0]!;
  const images = train.images.narrow(0, 0, n).contiguous();
  const labels = train.labels.narrow(0, 0, n).contiguous();
  const reps = ctx.quick ? 1 : 3;
  const steps = Math.floor(n / 64);
  const out: Record<string, number> = {};
  const gpu = gpuStatus();
  for (const backend of q.availableBackends().filter((b) => b !== 'gpu' || gpu.available)) {
    q.setBackend(backend);
    const label = backend === 'gpu' ? gpu.label : `qgrad-${backend}`;
    const imgs = q.tensor(images.dataSync(), { shape: images.shape });
    const labs = q.tensor(labels.dataSync());
    for (const quant of [false, true]) {
      // warm-up: one whole epoch, as the PyTorch side runs (torch_bench.py); a few steps left the
      // first timed epochs still tiering up (epochs after such a warm-up ran 277, 303, 246, 237, 224 ms)
      epoch(quant, imgs, labs);
      const ms = ctx.median(Array.from({ length: reps }, () => epoch(quant, imgs, labs)));
      out[`${label} ${quant ? 'W4A4 LSQ' : 'fp32'} ms/epoch`] = ms;
    }
  }
  q.setBackend('js');
  const dir = mkdtempSync(join(tmpdir(), 'qgrad-bench-'));
  try {
    writeFileSync(join(dir, 'x.f32'), images.dataSync() as Float32Array);
    writeFileSync(join(dir, 'y.i32'), labels.dataSync() as Int32Array);
    const t = ctx.torch('mlp', dir, String(n), String(reps));
    if (t) for (const [k, v] of Object.entries(t)) out[`pytorch ${k} ms/epoch`] = v;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rows = Object.entries(out).map(([k, v]) => {
    const kind = k.includes('W4A4') ? 'W4A4 LSQ' : 'fp32';
    const ref = out[`pytorch ${kind} ms/epoch`];
    return [k, v, v / steps, ref ? v / ref : '-'];
  });
  ctx.table(`MNIST MLP 784-256-256-10, one epoch of ${n} digits (${steps} steps of batch 64), Adam (median of ${reps})`, ['what', 'ms', 'ms/step', '× pytorch'], rows);
  if (gpu.available) console.log(gpu.note);
  return out;
}
