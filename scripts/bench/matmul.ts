/**
 * @file Square float32 matmul micro-benchmark: median GFLOP/s of qgrad-js and qgrad-wasm (1 and 2
 * threads) at 64…1024. `benchMatmul` takes extra contenders so a combined harness can add peers.
 * Run: npx tsx scripts/bench/matmul.ts [--sizes 64,128] [--reps 7]; writes bench-results/matmul.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { contiguousStrides, createWasmBackend, jsBackend, type Backend, type KernelArg, type TypedArray } from '@qgrad/kernels';

/** One contender: `prepare(n, a, b)` returns a function computing one n×n product. */
export interface MatmulContender {
  name: string;
  /** Largest size worth timing (slow contenders stop early). */
  maxSize?: number;
  prepare(n: number, a: Float32Array, b: Float32Array): (() => void) | Promise<() => void>;
  dispose?(): void | Promise<void>;
}

export interface MatmulResult {
  contender: string;
  n: number;
  reps: number;
  medianMs: number;
  gflops: number;
}

/** A contender running the `matmul` kernel of a qgrad backend. */
export function qgradContender(name: string, backend: Backend<TypedArray>, maxSize?: number): MatmulContender {
  return {
    name,
    maxSize,
    prepare(n, a, b) {
      const arg = (data: TypedArray): KernelArg<TypedArray> => ({ data, dtype: 'float32', shape: [n, n], strides: contiguousStrides([n, n]), offset: 0 });
      const out = arg(new Float32Array(n * n));
      return () => backend.run('matmul', [arg(a), arg(b)], out, {});
    },
    dispose: () => backend.dispose(),
  };
}

export function defaultContenders(): MatmulContender[] {
  return [
    qgradContender('qgrad-js', jsBackend, 256),
    qgradContender('qgrad-wasm-1t', createWasmBackend({ threads: 1 })),
    qgradContender('qgrad-wasm-2t', createWasmBackend({ threads: 2 })),
  ];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/**
 * Times every contender at every size, interleaving contenders rep by rep so machine noise hits
 * them alike; reps default to what fits in ~0.4 s per contender and size (at least 5).
 */
export async function benchMatmul(options: { sizes?: number[]; reps?: number; contenders?: MatmulContender[]; log?: (line: string) => void } = {}): Promise<MatmulResult[]> {
  const sizes = options.sizes ?? [64, 128, 256, 512, 1024];
  const contenders = options.contenders ?? defaultContenders();
  const log = options.log ?? ((l: string) => console.log(l));
  const results: MatmulResult[] = [];
  log(`${'n'.padStart(5)}  ${contenders.map((c) => c.name.padStart(14)).join('  ')}   (median GFLOP/s)`);
  for (const n of sizes) {
    const a = Float32Array.from({ length: n * n }, (_, i) => Math.sin(i) * 0.5);
    const b = Float32Array.from({ length: n * n }, (_, i) => Math.cos(i) * 0.5);
    const active = contenders.filter((c) => n <= (c.maxSize ?? Infinity));
    const runs = await Promise.all(active.map((c) => c.prepare(n, a, b)));
    // warm up (tier-up to optimised code) and estimate one run's time
    const first = runs.map((run) => {
      run();
      const t = performance.now();
      run();
      return performance.now() - t;
    });
    const reps = options.reps ?? Math.max(5, Math.min(50, Math.floor(400 / Math.max(...first, 0.01))));
    const times = runs.map(() => [] as number[]);
    for (let r = 0; r < reps; r++)
      runs.forEach((run, i) => {
        const t = performance.now();
        run();
        times[i]!.push(performance.now() - t);
      });
    const row = contenders.map((c) => {
      const i = active.indexOf(c);
      if (i < 0) return '-'.padStart(14);
      const ms = median(times[i]!);
      const gflops = (2 * n ** 3) / (ms * 1e6);
      results.push({ contender: c.name, n, reps, medianMs: ms, gflops });
      return gflops.toFixed(1).padStart(14);
    });
    log(`${String(n).padStart(5)}  ${row.join('  ')}`);
  }
  for (const c of contenders) await c.dispose?.();
  return results;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const sizes = flag('--sizes')?.split(',').map(Number);
  const reps = flag('--reps') ? Number(flag('--reps')) : undefined;
  // the machines are shared: record how busy this one was
  const loadBefore = loadavg()[0];
  const results = await benchMatmul({ sizes, reps });
  const machine = { cpu: cpus()[0]?.model, cores: cpus().length, loadBefore, loadAfter: loadavg()[0] };
  console.log(`load average ${machine.loadBefore.toFixed(1)} → ${machine.loadAfter.toFixed(1)} on ${machine.cores} cores`);
  const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../bench-results');
  mkdirSync(dir, { recursive: true });
  const file = resolve(dir, 'matmul.json');
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), node: process.version, machine, results }, null, 2));
  console.log(`wrote ${file}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await main();
