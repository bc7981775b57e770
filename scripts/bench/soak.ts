/**
 * @file Soak test of the lifetime model (issue 15): trains the reference tiny Llama (or the
 * bench's MNIST MLP on random batches, `--model mlp`) for N steps with trainStep on a backend
 * (`--backend`, default the current one) and prints, every `--every` steps, the live buffers and
 * bytes (core's memory()), the backend's own tensor memory, the gpu backend's live textures, and
 * the process RSS, then the growth after warm-up.
 * Usage: npx tsx scripts/bench/soak.ts [--steps 1000] [--every 100] [--quant] [--model llama|mlp] [--backend wasm|gpu|js]
 * (gpu in Node: webgpu in a worker thread where Dawn opens; headless-gl needs a display:
 * QGRAD_GPU_MODE=headlessgl xvfb-run -a npx tsx scripts/bench/soak.ts --backend gpu --model mlp)
 */
import { parseArgs } from 'node:util';
import * as q from '@qgrad/core';
import { backendEntry, type Backend } from '@qgrad/kernels';
import { Adam, trainStep } from '@qgrad/nn';
import { benchLlama, llamaStep } from './llama.js';
import { Mlp } from './mlp.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '1000' },
    every: { type: 'string', default: '100' },
    quant: { type: 'boolean', default: false },
    model: { type: 'string', default: 'llama' },
    backend: { type: 'string' },
  },
});
const steps = Number(values.steps);
const every = Number(values.every);
if (values.model !== 'llama' && values.model !== 'mlp') throw new Error(`soak: --model must be llama or mlp, got '${values.model}'`);
if (values.backend) q.setBackend(values.backend as q.BackendName);
const backend = backendEntry(q.getBackend())!.instance() as Backend & { deviceMemory?: () => { textures: number } };
const g = new q.Generator(0);

/** One training step of the chosen model on a fresh random batch. */
function stepper(): () => void {
  if (values.model === 'mlp') {
    q.manualSeed(0);
    const model = new Mlp(values.quant);
    const opt = new Adam(model.parameters(), { lr: 1e-3 });
    return () => {
      const x = q.rand([64, 784], { generator: g });
      const y = q.randint(0, 10, [64], { generator: g });
      trainStep(model, opt, () => {
        const loss = q.crossEntropy(model.forward(x), y);
        opt.zeroGrad();
        loss.backward();
        opt.step();
      });
      q.dispose([x, y]);
    };
  }
  const { model, opt } = benchLlama(values.quant, g);
  return () => {
    const idx = q.randint(0, 256, [16, 129], { generator: g });
    const x = idx.narrow(1, 0, 128).contiguous();
    const y = idx.narrow(1, 1, 128).contiguous();
    llamaStep(model, opt, x, y);
    q.dispose([idx, x, y]);
  };
}

const step = stepper();
const mib = (b: number) => (b / 2 ** 20).toFixed(1);
const rows: { step: number; buffers: number; bytes: number; own: number; textures: number | null; rss: number }[] = [];
const t0 = performance.now();
for (let s = 1; s <= steps; s++) {
  step();
  if (s % every === 0 || s === 10) {
    const m = q.memory();
    const r = { step: s, buffers: m.buffers, bytes: m.bytes, own: backend.memory().bytes, textures: backend.deviceMemory?.().textures ?? null, rss: process.memoryUsage().rss };
    rows.push(r);
    const textures = r.textures === null ? '' : `, ${r.textures} gpu textures`;
    console.log(`step ${s}: ${r.buffers} live buffers, ${mib(r.bytes)} MiB live, ${backend.name} tensor memory ${mib(r.own)} MiB${textures}, RSS ${mib(r.rss)} MiB, ${((performance.now() - t0) / s).toFixed(0)} ms/step`);
  }
  // let finalizers run, as any real loop that awaits something does
  if (s % every === 0) await new Promise((r) => setTimeout(r, 0));
}
const a = rows[0]!;
const b = rows[rows.length - 1]!;
const textures = a.textures === null ? '' : `, gpu textures ${a.textures} → ${b.textures}`;
console.log(`${values.model} on ${backend.name}, after warm-up (step ${a.step} → ${b.step}): live buffers ${a.buffers} → ${b.buffers}, ${backend.name} tensor memory ${mib(a.own)} → ${mib(b.own)} MiB${textures}, RSS ${mib(a.rss)} → ${mib(b.rss)} MiB (${(((b.rss - a.rss) / a.rss) * 100).toFixed(1)} %)`);
