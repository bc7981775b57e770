/**
 * @file What run.ts hands each bench section: the quick flag, PyTorch's side of the section, the
 * table printer and the median; and the timers sections share.
 */
export interface BenchContext {
  quick: boolean;
  /** Runs scripts/bench/torch_bench.py <section> …; null when PyTorch is not importable. */
  torch: (section: string, ...rest: string[]) => Record<string, number> | null;
  table: (title: string, header: string[], rows: (string | number)[][]) => void;
  median: (xs: number[]) => number;
}

/** Median µs per call of `fn` over `reps` timed batches of `iters` calls (after one warm-up batch). */
export function usPerCall(fn: () => void, iters: number, reps: number, median: (xs: number[]) => number): number {
  for (let i = 0; i < iters; i++) fn();
  const ts: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    for (let i = 0; i < iters; i++) fn();
    ts.push(((performance.now() - t) * 1000) / iters);
  }
  return median(ts);
}

/**
 * `fn`'s cost in ms of this process's CPU time (user + system, every thread). On the shared bench
 * machines wall time also holds the time another process had the core; with QGRAD_THREADS=1 CPU
 * time is the work itself (wasm tier-up on background threads counts too: warm up first).
 */
export function cpuMs(fn: () => void): number {
  const c = process.cpuUsage();
  fn();
  const u = process.cpuUsage(c);
  return (u.user + u.system) / 1000;
}

/**
 * Ends a timed training step or epoch: reads back the first and the last parameter. On the gpu
 * backend kernels only queue work and a read-back is the one synchronisation; the last parameter
 * is the last one the optimizer wrote (GL runs commands in order) and the first one's update needs
 * the whole backward pass. On the CPU backends it costs a copy of two small arrays.
 */
export function readBack(model: { parameters(): { dataSync(): unknown }[] }): void {
  const ps = model.parameters();
  ps[0]?.dataSync();
  ps[ps.length - 1]?.dataSync();
}
