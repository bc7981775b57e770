/**
 * @file `npm run bench`: qgrad beside its peers in one run on this machine — op-dispatch
 * overhead, matmul GFLOP/s, training steps — printed as medians with qgrad/peer ratios and
 * written to bench-results/bench.json. Benchmarks are not tests: nothing here asserts a time.
 * Usage: npm run bench -- [--sections dispatch,matmul,quant,mlp,llama] [--quick]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as q from '@qgrad/core';
import { benchMatmul, defaultContenders } from './matmul.js';
import type { BenchContext } from './context.js';
import { jaxContender, peerDispatch, tfContender } from './peers.js';

const { values: args } = parseArgs({
  options: {
    sections: { type: 'string', default: 'dispatch,matmul,quant,mlp,llama' },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log('npm run bench -- [--sections dispatch,matmul,quant,mlp,llama] [--quick]');
  process.exit(0);
}
const sections = new Set(args.sections!.split(','));
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const report: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, cpus: (await import('node:os')).cpus().length };

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Runs PyTorch's side of a section, or null when torch is not importable. */
function torch(section: string, ...rest: string[]): Record<string, number> | null {
  try {
    const env = { ...process.env };
    // OPENBLAS_CORETYPE/L2_SIZE are set on these machines for old OpenBLAS builds and slow current ones
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    const out = execFileSync('/usr/bin/python3', [resolve(root, 'scripts/bench/torch_bench.py'), section, ...rest], { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'ignore'] });
    return JSON.parse(out) as Record<string, number>;
  } catch {
    return null;
  }
}

/** µs per call of `fn`, median over `reps` batches of `iters` calls. */
function usPerCall(fn: () => void, iters: number, reps: number): number {
  for (let i = 0; i < iters; i++) fn();
  const ts: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    for (let i = 0; i < iters; i++) fn();
    ts.push(((performance.now() - t) * 1000) / iters);
  }
  return median(ts);
}

function table(title: string, header: string[], rows: (string | number)[][]): void {
  console.log(`\n${title}`);
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? (Math.abs(c) >= 100 ? c.toFixed(0) : c.toFixed(2)) : c)))];
  const w = header.map((_, i) => Math.max(...cells.map((r) => String(r[i]).length)));
  for (const r of cells) console.log(r.map((c, i) => String(c).padStart(w[i]!)).join('  '));
}

if (sections.has('dispatch')) {
  const iters = args.quick ? 2000 : 20000;
  const reps = args.quick ? 3 : 7;
  const rows: [string, number][] = [];
  for (const backend of q.availableBackends()) {
    q.setBackend(backend);
    const a = q.tensor([1, 2, 3, 4]);
    const b = q.tensor([5, 6, 7, 8]);
    const ag = q.tensor([1, 2, 3, 4], { requiresGrad: true });
    rows.push([`qgrad-${backend} add`, usPerCall(() => a.add(b), iters, reps)]);
    rows.push([`qgrad-${backend} add (recording)`, usPerCall(() => ag.add(b), iters, reps)]);
    const x = q.randn([64, 64], { requiresGrad: true });
    const w = q.randn([64, 64], { requiresGrad: true });
    rows.push([`qgrad-${backend} 64² matmul fwd+bwd`, usPerCall(() => x.matmul(w).sum().backward(), args.quick ? 20 : 100, reps)]);
  }
  q.setBackend('js');
  for (const [name, us] of await peerDispatch(iters)) rows.push([`${name} add`, us]);
  const t = torch('dispatch');
  if (t) {
    rows.push(['pytorch add', t.add_us!], ['pytorch add (recording)', t.add_grad_us!], ['pytorch 64² matmul fwd+bwd', t.matmul64_fwd_bwd_us!]);
  }
  const ref = (label: string) => rows.find(([n]) => n === label)?.[1];
  table('op dispatch (µs per op, 4-element add; lower is better)', ['what', 'µs', '× pytorch'], rows.map(([n, us]) => {
    const kind = n.includes('recording') ? 'pytorch add (recording)' : n.includes('matmul') ? 'pytorch 64² matmul fwd+bwd' : 'pytorch add';
    const p = ref(kind);
    return [n, us, p ? us / p : '-'];
  }));
  report.dispatch = Object.fromEntries(rows);
}

if (sections.has('matmul')) {
  const sizes = args.quick ? [64, 256] : [64, 128, 256, 512, 1024];
  console.log('\nmatmul float32 square (median GFLOP/s, higher is better)');
  const results = await benchMatmul({ sizes, contenders: [...defaultContenders(), tfContender('wasm'), tfContender('cpu', 256), jaxContender()] });
  const t = torch('matmul', sizes.join(','));
  const byN = new Map<number, Record<string, number>>();
  for (const r of results) byN.set(r.n, { ...(byN.get(r.n) ?? {}), [r.contender]: r.gflops });
  if (t) for (const [n, g] of Object.entries(t)) byN.set(Number(n), { ...(byN.get(Number(n)) ?? {}), pytorch: g });
  const rows = [...byN].map(([n, g]) => {
    const best = Math.max(g['qgrad-wasm-1t'] ?? 0, g['qgrad-wasm-2t'] ?? 0);
    return [String(n), best, g['jax-js-wasm'] ? best / g['jax-js-wasm'] : '-', g['tfjs-wasm'] ? best / g['tfjs-wasm'] : '-', g.pytorch ? best / g.pytorch : '-'];
  });
  table('ratios of qgrad-wasm (best thread count) to peers', ['n', 'GFLOP/s', '× jax-js', '× tfjs-wasm', '× pytorch'], rows);
  report.matmul = { results, pytorch: t };
}

for (const s of ['quant', 'mlp', 'llama']) {
  if (sections.has(s)) {
    const mod = await import(`./${s}.js`).catch(() => null);
    if (mod) report[s] = await (mod as { run(ctx: BenchContext): Promise<unknown> }).run({ quick: args.quick!, torch, table, median });
    else console.log(`\n${s}: not benchmarked yet (scripts/bench/${s}.ts is missing)`);
  }
}

report.peakRssMiB = process.resourceUsage().maxRSS / 1024;
console.log(`\npeak RSS ${(report.peakRssMiB as number).toFixed(0)} MiB`);
const dir = resolve(root, 'bench-results');
mkdirSync(dir, { recursive: true });
writeFileSync(resolve(dir, 'bench.json.tmp'), JSON.stringify(report, null, 2));
(await import('node:fs')).renameSync(resolve(dir, 'bench.json.tmp'), resolve(dir, 'bench.json'));
console.log(`wrote ${resolve(dir, 'bench.json')}`);
