/**
 * @file `npm run bench`: qgrad beside its peers in one run on this machine — op-dispatch
 * overhead, matmul GFLOP/s, training steps — printed as medians with qgrad/peer ratios and
 * written to bench-results/bench.json. Benchmarks are not tests: nothing here asserts a time.
 * The gpu backend joins dispatch, matmul, mlp and llama wherever a gpu.js mode works (in Node,
 * headless-gl needs a display: xvfb-run -a npm run bench); scripts/bench/gpu.ts says on what it renders.
 * Usage: npm run bench -- [--sections dispatch,matmul,quant,packed,sparse24,int8,mlp,llama,lora,llamacpp] [--quick]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as q from '@qgrad/core';
import { benchMatmul, defaultContenders, llamaMatmulShapes, macs, median, squareShape, type MatmulResult } from './matmul.js';
import { type BenchContext, usPerCall } from './context.js';
import { jaxContender, peerDispatch, tfContender } from './peers.js';
import { announceGpu, gpuContender } from './gpu.js';

/** Every section, in the order a full run takes them (the default). */
const SECTIONS = 'dispatch,matmul,quant,packed,sparse24,int8,mlp,llama,lora,llamacpp';
const { values: args } = parseArgs({
  options: {
    sections: { type: 'string', default: SECTIONS },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(`npm run bench -- [--sections ${SECTIONS}] [--quick]`);
  process.exit(0);
}
const sections = new Set(args.sections!.split(','));
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const report: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, cpus: (await import('node:os')).cpus().length };

/** Sections whose PyTorch figures are rates (higher is better); the others are times. */
const RATE_SECTIONS = new Set(['matmul', 'quant']);
const torchPolicies: Record<string, unknown> = {};
report.pytorchPolicies = torchPolicies;

function torchOnce(policy: 'PASSIVE' | 'default', section: string, rest: string[]): Record<string, number> | null {
  try {
    const env = { ...process.env };
    // OPENBLAS_CORETYPE/L2_SIZE are set on these machines for old OpenBLAS builds and slow current ones
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    // OpenMP's spinning threads fight each other and the other process on 2 vCPUs (1.5–3× slower)
    if (policy === 'PASSIVE') env.OMP_WAIT_POLICY = 'PASSIVE';
    else delete env.OMP_WAIT_POLICY;
    const out = execFileSync('/usr/bin/python3', [resolve(root, 'scripts/bench/torch_bench.py'), section, ...rest], { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'ignore'] });
    return JSON.parse(out) as Record<string, number>;
  } catch {
    return null;
  }
}

/**
 * Runs PyTorch's side of a section at its best setting: once with OMP_WAIT_POLICY=PASSIVE and once
 * with OpenMP's default, keeping for each figure the better of the two (which one is printed and
 * written to the report); null when torch is not importable.
 */
function torch(section: string, ...rest: string[]): Record<string, number> | null {
  const passive = torchOnce('PASSIVE', section, rest);
  if (!passive) return null;
  const byDefault = torchOnce('default', section, rest) ?? {};
  const rate = RATE_SECTIONS.has(section);
  const best: Record<string, number> = {};
  const chosen: Record<string, string> = {};
  for (const [k, v] of Object.entries(passive)) {
    const d = byDefault[k];
    const useDefault = d !== undefined && (rate ? d > v : d < v);
    best[k] = useDefault ? d : v;
    chosen[k] = useDefault ? 'default' : 'PASSIVE';
  }
  torchPolicies[section] = { passive, default: byDefault, chosen };
  const n = Object.values(chosen).filter((c) => c === 'PASSIVE').length;
  console.log(`pytorch ${section}: OMP_WAIT_POLICY=PASSIVE was the better setting for ${n} of ${Object.keys(chosen).length} figures (each figure uses the better one)`);
  return best;
}

// one line up front: which gpu mode runs and on what renderer, or why there are no gpu figures
const gpu = ['dispatch', 'matmul', 'mlp', 'llama'].some((s) => sections.has(s)) ? announceGpu() : null;
if (gpu) report.gpu = gpu;

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
  // the gpu only when its figures are wanted (gpu.ts disposes a skipped one)
  for (const backend of q.availableBackends().filter((b) => b !== 'gpu' || gpu?.available)) {
    q.setBackend(backend);
    // a gpu op here only queues work (nothing reads back): its figure is the cost of submitting it
    const name = backend === 'gpu' ? gpu!.label : `qgrad-${backend}`;
    const a = q.tensor([1, 2, 3, 4]);
    const b = q.tensor([5, 6, 7, 8]);
    const ag = q.tensor([1, 2, 3, 4], { requiresGrad: true });
    rows.push([`${name} add`, usPerCall(() => a.add(b), iters, reps, median)]);
    rows.push([`${name} add (recording)`, usPerCall(() => ag.add(b), iters, reps, median)]);
    const x = q.randn([64, 64], { requiresGrad: true });
    const w = q.randn([64, 64], { requiresGrad: true });
    rows.push([`${name} 64² matmul fwd+bwd`, usPerCall(() => x.matmul(w).sum().backward(), args.quick ? 20 : 100, reps, median)]);
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
  if (gpu?.available) console.log(`${gpu.note.replace(/; each timed.*/, '')}; the dispatch rows time submitting the op, without a read-back`);
  report.dispatch = Object.fromEntries(rows);
}

if (sections.has('matmul')) {
  const sizes = args.quick ? [64, 256] : [64, 128, 256, 512, 1024];
  const squares = sizes.map(squareShape);
  const shapes = llamaMatmulShapes();
  const peers = () => [tfContender('wasm'), jaxContender()];
  // one PyTorch process for both tables (importing torch takes seconds), before the JS contenders start
  const budgetMs = args.quick ? 100 : 400; // per contender and shape, PyTorch's included
  const t = torch('matmul', JSON.stringify([...squares, ...shapes]), String(budgetMs / 1000));
  console.log('\nmatmul float32 square (median GFLOP/s, higher is better)');
  const gpus = () => (gpu?.available ? [gpuContender()] : []);
  const results = await benchMatmul({ shapes: squares, budgetMs, contenders: [...defaultContenders(), ...gpus(), ...peers(), tfContender('cpu', 256 ** 3)] });
  const gflops = (rs: MatmulResult[], name: string): Record<string, number> => ({
    ...Object.fromEntries(rs.filter((r) => r.shape === name).map((r) => [r.contender, r.gflops])),
    ...(t?.[name] !== undefined && { pytorch: t[name] }),
  });
  const bestWasm = (g: Record<string, number>) => Math.max(g['qgrad-wasm-1t'] ?? 0, g['qgrad-wasm-2t'] ?? 0);
  const ratio = (x: number, peer: number | undefined) => (peer ? x / peer : '-');
  const rows = squares.map(({ name }) => {
    const g = gflops(results, name);
    const best = bestWasm(g);
    return [name, best, ratio(best, g['jax-js-wasm']), ratio(best, g['tfjs-wasm']), ratio(best, g.pytorch)];
  });
  table('ratios of qgrad-wasm (best thread count) to peers', ['n', 'GFLOP/s', '× jax-js', '× tfjs-wasm', '× pytorch'], rows);
  if (gpu?.available) {
    const g = gpu.label;
    table(`${g} against qgrad's CPU backends (GFLOP/s; ratios gpu / cpu, > 1 is the gpu backend faster)`, ['n', g, 'qgrad-wasm best', 'qgrad-js', '× wasm', '× js'], squares.map(({ name }) => {
      const r = gflops(results, name);
      return [name, r[g] ?? '-', bestWasm(r), r['qgrad-js'] ?? '-', r[g] ? ratio(r[g], bestWasm(r)) : '-', r[g] ? ratio(r[g], r['qgrad-js']) : '-'];
    }));
    console.log(gpu.note);
  }

  console.log('\nmatmul float32, the products of one tiny-Llama training step (median GFLOP/s)');
  // qgrad-js only where it finishes quickly (defaultContenders caps it at 256³ multiply-adds)
  const llamaResults = await benchMatmul({ shapes, budgetMs, contenders: [...defaultContenders(), ...gpus(), ...peers()] });
  const cols = ['qgrad-js', 'qgrad-wasm-1t', 'qgrad-wasm-2t', ...(gpu?.available ? [gpu.label] : []), 'tfjs-wasm', 'jax-js-wasm', 'pytorch'];
  const perShape = shapes.map((s) => ({ ...s, macs: macs(s), gflops: gflops(llamaResults, s.name) }));
  // one step's worth: Σ count · median time per contender, for those that ran every shape
  const stepMs: Record<string, number> = {};
  for (const c of cols) {
    if (perShape.every((s) => s.gflops[c])) stepMs[c] = perShape.reduce((sum, s) => sum + (s.count * 2 * s.macs) / (s.gflops[c]! * 1e6), 0);
  }
  const stepFlops = perShape.reduce((sum, s) => sum + s.count * 2 * s.macs, 0);
  // the step's qgrad-wasm is one thread count for all its products, the better one
  const wasmStepMs = Math.min(stepMs['qgrad-wasm-1t'] ?? Infinity, stepMs['qgrad-wasm-2t'] ?? Infinity);
  const stepGflops = Object.fromEntries(Object.entries(stepMs).map(([c, ms]) => [c, stepFlops / (ms * 1e6)]));
  const line = (name: string, count: number, mflop: number, g: Record<string, number>, best: number) => [
    name, String(count), mflop, ...cols.map((c) => g[c] ?? '-'), ratio(best, g['tfjs-wasm']), ratio(best, g['jax-js-wasm']), ratio(best, g.pytorch),
  ];
  table(
    'tiny-Llama matmul shapes (median GFLOP/s; ratios: best qgrad-wasm / peer, > 1 is qgrad faster)',
    ['shape (batch× m×k·k×n, ᵀ = transposed view)', '×/step', 'MFLOP', ...cols, '× tfjs-wasm', '× jax-js', '× pytorch'],
    [
      ...perShape.map((s) => line(`${s.name}: ${s.batch > 1 ? `${s.batch}× ` : ''}${s.m}×${s.k}${s.transposeA ? 'ᵀ' : ''}·${s.k}×${s.n}${s.transposeB ? 'ᵀ' : ''}`, s.count, (2 * s.macs) / 1e6, s.gflops, bestWasm(s.gflops))),
      line('one step (Σ count·time)', perShape.reduce((n, s) => n + s.count, 0), stepFlops / 1e6, stepGflops, stepFlops / (wasmStepMs * 1e6)),
    ],
  );
  console.log(`one step's matmuls, ms: ${Object.entries(stepMs).map(([c, ms]) => `${c} ${ms.toFixed(1)}`).join(', ')}`);
  if (gpu?.available) console.log(gpu.note);
  const pytorch = t && Object.fromEntries(squares.filter((s) => t[s.name] !== undefined).map((s) => [s.name, t[s.name]!]));
  report.matmul = { results, pytorch, llamaShapes: { shapes: perShape, results: llamaResults, stepMs, stepGflops, stepMflop: stepFlops / 1e6 } };
}

for (const s of ['quant', 'packed', 'sparse24', 'int8', 'mlp', 'llama', 'lora', 'llamacpp']) {
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
