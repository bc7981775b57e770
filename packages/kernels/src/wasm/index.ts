/**
 * @file The wasm backend: js-compatible typed-array buffers, kernels that copy into a (shared)
 * wasm memory and run generated SIMD code there, per-call fallback to the js oracle for missing
 * kernels, other dtypes and sizes too small to pay for the copies, and a listing of what ran where.
 */
import type { Backend, Kernel, KernelArg, KernelTable } from '../backend.js';
import { jsBackend, jsKernels } from '../js/index.js';
import { isContiguous } from '../js/layout.js';
import type { DType, KernelName, KernelParams, TypedArray } from '../names.js';
import { col2imWasm, emitConv2d, im2colWasm } from './conv.js';
import { binaryWasm, copyWasm, emitElementwise, unaryWasm, whereWasm } from './elementwise.js';
import { emitGather, gatherWasm, indexAddWasm, indexSelectWasm, scatterAddWasm } from './gather.js';
import { emitHadamard, fwhtWasm } from './hadamard.js';
import { MATMUL_MIN_MACS, matmulWasm } from './matmul.js';
import { emitNorm, normBackwardWasm, normWasm, ropeWasm, softmaxBackwardWasm, softmaxWasm } from './norm.js';
import { emitQuant, fakeQuantizeBackwardWasm, fakeQuantizeWasm } from './quant.js';
import { argReduceWasm, emitReduce, reduceWasm } from './reduce.js';
import { Engine, type Emitter, wasmFeatures } from './runtime.js';
import { emitMatmul } from './simd-matmul.js';
import { adamStepWasm, emitOptim } from './optim.js';
import { defaultThreadCount } from './threads.js';

type Arg = KernelArg<TypedArray>;
/** A wasm kernel runs on an engine and returns false to hand the call to the js kernel. */
type WasmRule<K extends KernelName> = (engine: Engine, inputs: readonly Arg[], out: Arg, params: KernelParams[K]) => boolean;

const RULES: { [K in KernelName]?: WasmRule<K> } = {
  matmul: (engine, inputs, out) => matmulWasm(engine, inputs, out),
  unary: unaryWasm,
  binary: binaryWasm,
  copy: copyWasm,
  where: whereWasm,
  // no fill: the result would still have to be copied out of wasm memory, and that copy alone costs
  // more than TypedArray#fill (1M float32: fill 45–92 µs, the copy out 106–129 µs)
  gather: gatherWasm,
  scatterAdd: scatterAddWasm,
  indexSelect: indexSelectWasm,
  indexAdd: indexAddWasm,
  reduce: reduceWasm,
  argReduce: argReduceWasm,
  im2col: im2colWasm,
  col2im: col2imWasm,
  softmax: softmaxWasm,
  softmaxBackward: softmaxBackwardWasm,
  norm: normWasm,
  normBackward: normBackwardWasm,
  rope: ropeWasm,
  fakeQuantize: fakeQuantizeWasm,
  fakeQuantizeBackward: fakeQuantizeBackwardWasm,
  fwht: fwhtWasm,
  adamStep: adamStepWasm,
};

const EMITTERS: Emitter[] = [emitMatmul, (mb) => emitElementwise(mb), (mb) => emitReduce(mb), (mb) => emitConv2d(mb), (mb) => emitQuant(mb), (mb) => emitHadamard(mb), (mb) => emitGather(mb), (mb) => emitNorm(mb), (mb) => emitOptim(mb)];

export interface WasmBackendOptions {
  /** Threads including the caller; default QGRAD_THREADS or os.availableParallelism(). */
  threads?: number;
  /** Use relaxed-SIMD FMA when available (default true; QGRAD_WASM_RELAXED=0 turns it off). */
  relaxed?: boolean;
  /**
   * How long idle workers poll for the next job before sleeping, in µs; default QGRAD_SPIN_US or
   * 250 (as OpenMP runtimes spin before blocking), clamped to [0, 100 000]. 0 makes them sleep at
   * once, which suits a machine shared by more busy threads than cores.
   */
  spinMicros?: number;
  /** Matmuls with fewer multiply-adds (batch·M·N·K) run on js; default 16³. 0 forces wasm (tests). */
  matmulMinMacs?: number;
}

export interface KernelStat {
  kernel: KernelName;
  dtype: DType;
  wasm: number;
  js: number;
  /** Of the wasm calls, those that split their work over the worker pool. */
  pooled: number;
}

export interface WasmBackend extends Backend<TypedArray> {
  /** Threads actually in use (1 when shared memory or workers are unavailable); starts the engine. */
  readonly threads: number;
  /** Whether the matmul micro-kernel uses relaxed-SIMD FMA; starts the engine. */
  readonly relaxed: boolean;
  /** How many calls of each kernel and dtype ran in wasm (how many of those on the pool) and how many fell back to js. */
  stats(): KernelStat[];
}

export function createWasmBackend(options: WasmBackendOptions = {}): WasmBackend {
  let engine: Engine | null | undefined;
  const matmulRule: WasmRule<'matmul'> = (engine, inputs, out) => matmulWasm(engine, inputs, out, options.matmulMinMacs ?? MATMUL_MIN_MACS);
  const getEngine = (): Engine | null => {
    if (engine === undefined) {
      try {
        engine = new Engine(EMITTERS, { threads: options.threads ?? defaultThreadCount(), relaxed: options.relaxed ?? true, spinMicros: options.spinMicros });
      } catch {
        engine = null;
      }
      if (debugKernels()) printAtExit(backend);
    }
    return engine;
  };
  // counted per call, so keyed without building strings: kernel → dtype → stat
  const table = new Map<KernelName, Map<DType, KernelStat & { last: 'wasm' | 'js' }>>();
  const record = (kernel: KernelName, dtype: DType, where: 'wasm' | 'js', pooled = false) => {
    let byDtype = table.get(kernel);
    if (!byDtype) table.set(kernel, (byDtype = new Map()));
    let s = byDtype.get(dtype);
    if (!s) byDtype.set(dtype, (s = { kernel, dtype, wasm: 0, js: 0, pooled: 0, last: where }));
    s[where]++;
    if (pooled) s.pooled++;
    s.last = where;
  };
  const backend: WasmBackend = {
    name: 'wasm',
    dtypes: jsBackend.dtypes,
    hostMemory: true,
    alloc: jsBackend.alloc,
    write: jsBackend.write,
    readSync: jsBackend.readSync,
    read: jsBackend.read,
    free: jsBackend.free,
    run<K extends KernelName>(kernel: K, inputs: readonly Arg[], out: Arg, params: KernelParams[K]): void {
      const rule = (kernel === 'matmul' ? matmulRule : RULES[kernel]) as WasmRule<K> | undefined;
      const dtype = inputs[0]?.dtype ?? out.dtype;
      // wasm kernels write a contiguous result; a strided output view (copy into a slice) is js's
      const eng = rule && isContiguous(out.shape, out.strides) ? getEngine() : null;
      const jobs = eng?.pooledJobs ?? 0;
      if (rule && eng && rule(eng, inputs, out, params)) {
        record(kernel, dtype, 'wasm', eng.pooledJobs > jobs);
        return;
      }
      (jsKernels[kernel] as Kernel<K, TypedArray>)(inputs, out, params);
      record(kernel, dtype, 'js');
    },
    ranOn(kernel, dtype) {
      return table.get(kernel)?.get(dtype)?.last ?? (RULES[kernel] && (dtype === 'float32' || dtype === 'float64') && wasmFeatures().simd ? 'wasm' : 'js');
    },
    stats: () => [...table.values()].flatMap((m) => [...m.values()].map(({ kernel, dtype, wasm, js, pooled }) => ({ kernel, dtype, wasm, js, pooled }))),
    get threads() {
      return getEngine()?.threads ?? 1;
    },
    get relaxed() {
      return getEngine()?.flavor.relaxed ?? false;
    },
    sync: async () => {},
    dispose() {
      engine?.dispose();
      engine = undefined;
    },
  };
  return backend;
}

function debugKernels(): boolean {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.QGRAD_DEBUG_KERNELS === '1';
}

function printAtExit(backend: WasmBackend): void {
  const proc = (globalThis as { process?: { once?: (e: string, f: () => void) => void } }).process;
  proc?.once?.('exit', () => {
    const rows = backend.stats().map((s) => `  ${s.kernel.padEnd(12)} ${s.dtype.padEnd(8)} wasm ${String(s.wasm).padStart(6)} (pooled ${String(s.pooled).padStart(6)})  js ${String(s.js).padStart(6)}`);
    console.error(`qgrad wasm backend (${backend.threads} thread(s), relaxed SIMD ${backend.relaxed ? 'on' : 'off'}):\n${rows.join('\n')}`);
  });
}

/** The default wasm backend; its engine (module compile, workers) starts on the first kernel run. */
export const wasmBackend: WasmBackend = createWasmBackend();

/** The kernels wasm implements, each running on `wasmBackend` with its per-call js fallback. */
export const wasmKernels: Partial<KernelTable<TypedArray>> = Object.fromEntries(
  (Object.keys(RULES) as KernelName[]).map((k) => [k, (inputs: readonly Arg[], out: Arg, params: never) => wasmBackend.run(k, inputs, out, params)]),
) as Partial<KernelTable<TypedArray>>;
