/**
 * @file Soak test of the lifetime model (issue 15): trains the reference tiny Llama for N steps
 * with trainStep and prints, every `--every` steps, the live buffers and bytes (core's memory()),
 * the wasm backend's tensor memory and the process RSS, then the growth after warm-up.
 * Usage: npx tsx scripts/bench/soak.ts [--steps 1000] [--every 100] [--quant]
 */
import { parseArgs } from 'node:util';
import * as q from '@qgrad/core';
import { wasmBackend } from '@qgrad/kernels';
import { benchLlama, llamaStep } from './llama.js';

const { values } = parseArgs({ options: { steps: { type: 'string', default: '1000' }, every: { type: 'string', default: '100' }, quant: { type: 'boolean', default: false } } });
const steps = Number(values.steps);
const every = Number(values.every);
const g = new q.Generator(0);
const { model, opt } = benchLlama(values.quant, g);
const mib = (b: number) => (b / 2 ** 20).toFixed(1);
const rows: { step: number; buffers: number; bytes: number; wasm: number; rss: number }[] = [];
const t0 = performance.now();
for (let s = 1; s <= steps; s++) {
  const idx = q.randint(0, 256, [16, 129], { generator: g });
  const x = idx.narrow(1, 0, 128).contiguous();
  const y = idx.narrow(1, 1, 128).contiguous();
  llamaStep(model, opt, x, y);
  q.dispose([idx, x, y]);
  if (s % every === 0 || s === 10) {
    const m = q.memory();
    const r = { step: s, buffers: m.buffers, bytes: m.bytes, wasm: wasmBackend.memory?.().bytes ?? 0, rss: process.memoryUsage().rss };
    rows.push(r);
    console.log(`step ${s}: ${r.buffers} live buffers, ${mib(r.bytes)} MiB live, wasm tensor memory ${mib(r.wasm)} MiB, RSS ${mib(r.rss)} MiB, ${((performance.now() - t0) / s).toFixed(0)} ms/step`);
  }
  // let finalizers run, as any real loop that awaits something does
  if (s % every === 0) await new Promise((r) => setTimeout(r, 0));
}
const a = rows[0]!;
const b = rows[rows.length - 1]!;
console.log(`after warm-up (step ${a.step} → ${b.step}): live buffers ${a.buffers} → ${b.buffers}, wasm tensor memory ${mib(a.wasm)} → ${mib(b.wasm)} MiB, RSS ${mib(a.rss)} → ${mib(b.rss)} MiB (${(((b.rss - a.rss) / a.rss) * 100).toFixed(1)} %)`);
