/**
 * @file The generic js fallback every backend other than js uses: a backend supplies a partial
 * table of its own kernels, each of which may decline a call (dtype, size, layout); whatever is
 * missing or declined runs on the js oracle. Counts what ran where, per kernel and dtype, and
 * prints the counts at exit under QGRAD_DEBUG_KERNELS=1. Host-memory backends (wasm) hand their
 * typed arrays to js as they are; a backend with device memory (gpu) supplies a `HostTransfer`,
 * and the fallback moves the operands to the host and the written results back around the call.
 */
import type { KernelArg, KernelStat } from './backend.js';
import { jsKernels } from './js/index.js';
import type { DType, KernelName, KernelParams, TypedArray } from './names.js';

export type { KernelStat };

type Arg = KernelArg<TypedArray>;

/** One of a backend's own kernels (`D`: its buffer type): returns false to hand this call to the js oracle. */
export type NativeKernel<K extends KernelName, D = TypedArray> = (inputs: readonly KernelArg<D>[], out: KernelArg<D>, params: KernelParams[K]) => boolean;

/** A backend's own kernels; the ones it lacks run on js. */
export type NativeTable<D = TypedArray> = { [K in KernelName]?: NativeKernel<K, D> };

/**
 * How a backend whose buffers live in device memory lends them to the js oracle: `toHost` gives a
 * host view of an operand (same shape, strides and offset; the buffer's current values read back
 * when only the device has them, the whole buffer so a partial write keeps the rest), and
 * `fromHost` is told that js wrote that view's host values (the device copy is now stale).
 */
export interface HostTransfer<D> {
  toHost(arg: KernelArg<D>): Arg;
  fromHost(arg: KernelArg<D>, host: Arg): void;
}

/**
 * Inputs a kernel writes besides `out` (names.ts: adamStep updates expAvg and expAvgSq in place;
 * fakeQuantize with absmaxScale its scales, fakeQuantizeBackward with rowSums its row sums).
 */
const WRITTEN_INPUTS: { [K in KernelName]?: readonly number[] } = { adamStep: [2, 3], fakeQuantize: [1], fakeQuantizeBackward: [4], loraBackward: [4] };

/** How `withJsFallback` moves device operands to the host, reports fallbacks and lists its counts. */
export interface FallbackOptions<D = TypedArray> {
  /** Required when `D` is not a host typed array (device memory): see HostTransfer. */
  transfer?: HostTransfer<D>;
  /**
   * Called before each call that runs on js: `declined` is true when the backend's table has the
   * kernel and it declined this call, false when the table lacks it (or the backend cannot run).
   */
  onFallback?: (kernel: KernelName, dtype: DType, declined: boolean) => void;
  /** Work items handed to the backend's thread pool so far: a call that raises it counts as pooled. */
  pooledJobs?: () => number;
  /** Where a kernel would run before any call has been seen (default: native when the table has it). */
  guess?: (kernel: KernelName, dtype: DType) => boolean;
  /** Extra lines for the QGRAD_DEBUG_KERNELS=1 listing (a header first, then the table). */
  header?: () => string;
  footer?: () => string[];
}

/** What `withJsFallback` returns: runs a kernel natively or on js, and says where each kernel ran. */
export interface FallbackRunner<D = TypedArray> {
  run<K extends KernelName>(kernel: K, inputs: readonly KernelArg<D>[], out: KernelArg<D>, params: KernelParams[K]): void;
  /** The backend (its name, or 'js') that ran the last call of this kernel and dtype. */
  ranOn(kernel: KernelName, dtype: DType): string;
  stats(): KernelStat[];
}

/** True under QGRAD_DEBUG_KERNELS=1. */
export function debugKernels(): boolean {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.QGRAD_DEBUG_KERNELS === '1';
}

/**
 * Wraps a backend's partial kernel table (`table()` may return null: the backend cannot run at
 * all, e.g. its engine failed to start) with the js oracle as the fallback.
 * @example const { run, ranOn, stats } = withJsFallback('wasm', () => RULES);
 * @example const gpu = withJsFallback<GpuData>('gpu', () => table, { transfer: { toHost, fromHost } });
 */
export function withJsFallback<D = TypedArray>(name: string, table: () => NativeTable<D> | null, options: FallbackOptions<D> = {}): FallbackRunner<D> {
  // counted per call, so keyed without building strings: kernel → dtype → stat
  const counts = new Map<KernelName, Map<DType, KernelStat & { last: string }>>();
  const record = (kernel: KernelName, dtype: DType, where: 'native' | 'js', pooled: boolean) => {
    let byDtype = counts.get(kernel);
    if (!byDtype) counts.set(kernel, (byDtype = new Map()));
    let s = byDtype.get(dtype);
    if (!s) byDtype.set(dtype, (s = { kernel, dtype, native: 0, js: 0, pooled: 0, last: where }));
    s[where]++;
    if (pooled) s.pooled++;
    s.last = where === 'native' ? name : 'js';
  };
  let listed = false;
  const runner: FallbackRunner<D> = {
    run<K extends KernelName>(kernel: K, inputs: readonly KernelArg<D>[], out: KernelArg<D>, params: KernelParams[K]): void {
      if (!listed) {
        listed = true;
        if (debugKernels()) printAtExit(name, runner, options);
      }
      const dtype = inputs[0]?.dtype ?? out.dtype;
      const own = table()?.[kernel] as NativeKernel<K, D> | undefined;
      const jobs = options.pooledJobs?.() ?? 0;
      if (own && own(inputs, out, params)) {
        record(kernel, dtype, 'native', (options.pooledJobs?.() ?? 0) > jobs);
        return;
      }
      options.onFallback?.(kernel, dtype, own !== undefined);
      const js = jsKernels[kernel] as (i: readonly Arg[], o: Arg, p: KernelParams[K]) => void;
      const transfer = options.transfer;
      if (!transfer) js(inputs as readonly KernelArg[] as readonly Arg[], out as KernelArg as Arg, params);
      else {
        const hostInputs = inputs.map((a) => transfer.toHost(a));
        const hostOut = transfer.toHost(out);
        js(hostInputs, hostOut, params);
        transfer.fromHost(out, hostOut);
        for (const i of WRITTEN_INPUTS[kernel] ?? []) transfer.fromHost(inputs[i]!, hostInputs[i]!);
      }
      record(kernel, dtype, 'js', false);
    },
    ranOn(kernel, dtype) {
      const seen = counts.get(kernel)?.get(dtype)?.last;
      if (seen) return seen;
      return (options.guess ? options.guess(kernel, dtype) : table()?.[kernel] !== undefined) ? name : 'js';
    },
    stats: () => [...counts.values()].flatMap((m) => [...m.values()].map(({ kernel, dtype, native, js, pooled }) => ({ kernel, dtype, native, js, pooled }))),
  };
  return runner;
}

function printAtExit<D>(name: string, runner: FallbackRunner<D>, options: FallbackOptions<D>): void {
  const proc = (globalThis as { process?: { once?: (e: string, f: () => void) => void } }).process;
  proc?.once?.('exit', () => {
    const rows = runner.stats().map((s) => `  ${s.kernel.padEnd(12)} ${s.dtype.padEnd(8)} ${name} ${String(s.native).padStart(6)} (pooled ${String(s.pooled).padStart(6)})  js ${String(s.js).padStart(6)}`);
    console.error([options.header?.() ?? `qgrad ${name} backend:`, ...rows, ...(options.footer?.() ?? [])].join('\n'));
  });
}
