/**
 * @file The wasm backend: tensors are typed-array views of one shared wasm memory (heap.ts), which
 * generated SIMD kernels read and write in place (operands from elsewhere are copied in and out),
 * per-call fallback to the js oracle (fallback.ts) for missing kernels, other dtypes and sizes too
 * small to pay for a call, and a listing of what ran where and of the bytes staged.
 */
import type { Backend, BackendEntry, KernelArg, KernelTable } from '../backend.js';
import { type KernelStat, type NativeTable, withJsFallback } from '../fallback.js';
import { jsBackend } from '../js/index.js';
import { isContiguous } from '../layout.js';
import { ARRAY_TYPES, type KernelName, type KernelParams, type TypedArray } from '../names.js';
import { col2imWasm, emitConv2d, im2colWasm } from './conv.js';
import { binaryWasm, copyWasm, emitElementwise, swigluBackwardWasm, unaryWasm, whereWasm } from './elementwise.js';
import { emitFpRound, fpRoundWasm } from './fp-round.js';
import { emitGather, gatherWasm, indexAddWasm, indexSelectWasm, scatterAddWasm } from './gather.js';
import { emitHadamard, fwhtWasm } from './hadamard.js';
import { emitInt8Matmul, int8MatmulWasm } from './int8-matmul.js';
import { emitLoraBackward, loraBackwardWasm, loraMergePackedWasm, loraMergeWasm } from './lora.js';
import { MATMUL_MIN_MACS, matmulWasm } from './matmul.js';
import { emitMatvec } from './matvec.js';
import { emitPacked, packedMatmulWasm } from './packed.js';
import { emitPackedGatherKernels, packedGatherWasm } from './packed-gather.js';
import { emitSparse24, sparse24MatmulWasm } from './sparse24.js';
import { emitNorm, normBackwardWasm, normWasm, ropeWasm, softmaxBackwardWasm, softmaxWasm } from './norm.js';
import { emitQuant, fakeQuantizeBackwardWasm, fakeQuantizeWasm } from './quant.js';
import { argReduceWasm, emitReduce, reduceWasm } from './reduce.js';
import type { Heap } from './heap.js';
import { Engine, type Emitter, newHeap, type ThreadInfo, wasmFeatures } from './runtime.js';
import { emitMatmul } from './simd-matmul.js';
import { adamStepWasm, emitOptim } from './optim.js';
import { defaultThreadCount } from './threads.js';

type Arg = KernelArg<TypedArray>;
/** A wasm kernel runs on an engine and returns false to hand the call to the js kernel. */
type WasmRule<K extends KernelName> = (engine: Engine, inputs: readonly Arg[], out: Arg, params: KernelParams[K]) => boolean;

const RULES: { [K in KernelName]?: WasmRule<K> } = {
  matmul: (engine, inputs, out) => matmulWasm(engine, inputs, out),
  loraBackward: loraBackwardWasm,
  loraMerge: loraMergeWasm,
  loraMergePacked: loraMergePackedWasm,
  unary: unaryWasm,
  binary: binaryWasm,
  copy: copyWasm,
  where: whereWasm,
  swigluBackward: swigluBackwardWasm,
  // no fill: js's TypedArray#fill already writes a tensor in wasm memory in place, at memset speed
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
  fpRound: fpRoundWasm,
  adamStep: adamStepWasm,
  packedMatmul: packedMatmulWasm,
  packedGather: packedGatherWasm,
  int8Matmul: int8MatmulWasm,
  sparse24Matmul: sparse24MatmulWasm,
};

const EMITTERS: Emitter[] = [emitMatmul, emitLoraBackward, emitMatvec, (mb) => emitElementwise(mb), (mb) => emitReduce(mb), (mb) => emitConv2d(mb), (mb) => emitQuant(mb), (mb) => emitHadamard(mb), (mb) => emitGather(mb), (mb) => emitNorm(mb), (mb) => emitOptim(mb), emitPacked, (mb) => emitPackedGatherKernels(mb), emitInt8Matmul, emitSparse24, (mb) => emitFpRound(mb)];

/** Options of `createWasmBackend`: threads, relaxed SIMD, the workers' idle spin, the js cut-off for small matmuls, the heap ceiling. */
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
  /** Whether skinny matmuls may read their large operand in place instead of packing it (default true; false for tests). */
  matmulDirect?: boolean;
  /**
   * Bytes the tensor memory may grow to (default and ceiling 2 GiB). Past it, new tensors go to
   * host memory, staged per kernel, with a one-time warning.
   */
  maxBytes?: number;
}

/** The wasm backend: tensors in one shared wasm memory, SIMD kernels generated by TypeScript, a worker pool, js for the rest. */
export interface WasmBackend extends Backend<TypedArray> {
  /** Threads actually in use (1 when shared memory or workers are unavailable); starts the engine. */
  readonly threads: number;
  /** Whether the matmul micro-kernel uses relaxed-SIMD FMA; starts the engine. */
  readonly relaxed: boolean;
  /** How many calls of each kernel and dtype ran in wasm (how many of those on the pool) and how many fell back to js. */
  stats(): KernelStat[];
  /**
   * Bytes kernels copied so far from arrays outside wasm memory into it (operands that are not
   * this backend's tensors) and out of it into such arrays (results written to a foreign array).
   */
  staged(): { in: number; out: number };
  /** The heap tensors live in (null where shared memory is unavailable: tensors are plain arrays). */
  readonly heap: Heap | null;
  /**
   * How many threads kernels run on, over which workers, or why on one (starts the engine):
   * 'wasm, 2 threads (worker_threads)', 'wasm, 2 threads (Web Workers)', 'wasm, 1 thread: page
   * not cross-origin isolated (COOP/COEP headers missing)'.
   */
  info(): WasmInfo;
  /**
   * Starts the engine and settles once its workers run. Node's start with the engine; a
   * browser's only once the page's current task ends, and jobs run on the threads up so far.
   */
  ready(): Promise<WasmInfo>;
}

/** What `WasmBackend.info()` reports. */
export type WasmInfo = ThreadInfo;

/**
 * A wasm backend of its own (the default one is `wasmBackend`, what `setBackend('wasm')` selects):
 * for tests and benchmarks that need another thread count or heap size beside it.
 * @example const b = createWasmBackend({ threads: 1 }); console.log(b.info().message); b.dispose();
 */
export function createWasmBackend(options: WasmBackendOptions = {}): WasmBackend {
  let engine: Engine | null | undefined;
  let engineError = '';
  // tensors live in a shared memory (views stay valid across growth); without one, tensors are
  // plain arrays and the memory only holds the kernels' scratch
  let heap: Heap | null | undefined;
  const getHeap = (): Heap | null => (heap === undefined ? (heap = newHeap(options.maxBytes)) : heap);
  const tensorHeap = (): Heap | null => {
    const h = getHeap();
    return h?.shared ? h : null;
  };
  // staged bytes of engines already disposed
  const staged = { in: 0, out: 0 };
  const getEngine = (): Engine | null => {
    if (engine === undefined) {
      const h = getHeap();
      try {
        engine = h && new Engine(EMITTERS, { threads: options.threads ?? defaultThreadCount(), relaxed: options.relaxed ?? true, spinMicros: options.spinMicros }, h);
      } catch (e) {
        engineError = (e as Error).message;
        engine = null;
      }
    }
    return engine;
  };
  const matmulRule: WasmRule<'matmul'> = (engine, inputs, out) => matmulWasm(engine, inputs, out, options.matmulMinMacs ?? MATMUL_MIN_MACS, options.matmulDirect ?? true);
  // each rule bound to the engine; wasm kernels write a contiguous result, so a strided output
  // view (copy into a slice) is js's, except rope's (rows through a table of row offsets)
  const table: NativeTable = Object.fromEntries(
    (Object.keys(RULES) as KernelName[]).map((k) => {
      const rule = (k === 'matmul' ? matmulRule : RULES[k]) as WasmRule<typeof k>;
      const anyOut = k === 'rope';
      const own = (inputs: readonly Arg[], out: Arg, params: never): boolean => {
        if (!anyOut && !isContiguous(out.shape, out.strides)) return false;
        const eng = getEngine();
        if (eng === null) return false;
        // a kernel whose scratch did not fit declined before writing anything: grow it, run again
        return rule(eng, inputs, out, params) || (eng.regrowScratch() && rule(eng, inputs, out, params));
      };
      return [k, own];
    }),
  );
  const runner = withJsFallback('wasm', () => table, {
    pooledJobs: () => engine?.pooledJobs ?? 0,
    guess: (kernel, dtype) => RULES[kernel] !== undefined && (dtype === 'float32' || dtype === 'float64') && wasmFeatures().simd,
    header: () => `qgrad wasm backend (${backend.threads} thread(s), relaxed SIMD ${backend.relaxed ? 'on' : 'off'}):`,
    footer: () => {
      const { in: i, out: o } = backend.staged();
      const { bytes, buffers } = backend.memory();
      return [`  staged into wasm memory ${i} bytes, out of it ${o} bytes (operands outside wasm memory); ${buffers} tensors, ${bytes} bytes in wasm memory at exit; ${spilled} tensors spilled to host memory`];
    },
  });
  let spillWarned = false;
  let spilled = 0;
  const backend: WasmBackend = {
    name: 'wasm',
    dtypes: jsBackend.dtypes,
    hostMemory: true,
    alloc: (dtype, size) => {
      const h = size > 0 ? tensorHeap() : null;
      if (!h) return jsBackend.alloc(dtype, size);
      try {
        return h.alloc(dtype, size);
      } catch (e) {
        // wasm memory is full (2 GiB), typically a loop whose tensors nobody releases: their
        // finalizers only run once the loop yields. Host memory keeps it correct, staged per kernel.
        if (!(e instanceof RangeError) || !Number.isFinite(size)) throw e;
        if (!spillWarned) {
          spillWarned = true;
          console.warn(`qgrad wasm backend: ${e.message.replace(/^wasm backend: /, '')}; new tensors now go to host memory and are copied in and out of wasm per kernel (slower). Release what a loop no longer needs with tidy(), trainStep() or dispose().`);
        }
        spilled++;
        return jsBackend.alloc(dtype, size);
      }
    },
    allocCollected: (dtype, size) => new ARRAY_TYPES[dtype](size),
    write: jsBackend.write,
    readSync: jsBackend.readSync,
    read: jsBackend.read,
    free: (data) => {
      const h = tensorHeap();
      if (h && data.length > 0 && h.resident(data)) h.free(data);
      else jsBackend.free(data);
    },
    memory: () => tensorHeap()?.usage() ?? jsBackend.memory(),
    staged: () => ({ in: staged.in + (engine?.stagedIn ?? 0), out: staged.out + (engine?.stagedOut ?? 0) }),
    get heap() {
      return tensorHeap();
    },
    run: runner.run,
    ranOn: runner.ranOn,
    stats: runner.stats,
    get threads() {
      return getEngine()?.threads ?? 1;
    },
    get relaxed() {
      return getEngine()?.flavor.relaxed ?? false;
    },
    info: () => getEngine()?.threadInfo() ?? { threads: 1, workers: null, message: `wasm unavailable (${engineError || 'no WebAssembly'}): kernels run on js` },
    ready: async () => (getEngine() ? getEngine()!.started() : backend.info()),
    sync: async () => {},
    dispose() {
      if (engine) {
        staged.in += engine.stagedIn;
        staged.out += engine.stagedOut;
      }
      engine?.dispose();
      engine = undefined;
    },
  };
  return backend;
}

/** The default wasm backend; its engine (module compile, workers) starts on the first kernel run. */
export const wasmBackend: WasmBackend = createWasmBackend();

/** The kernels wasm implements, each running on `wasmBackend` with its per-call js fallback. */
export const wasmKernels: Partial<KernelTable<TypedArray>> = Object.fromEntries(
  (Object.keys(RULES) as KernelName[]).map((k) => [k, (inputs: readonly Arg[], out: Arg, params: never) => wasmBackend.run(k, inputs, out, params)]),
) as Partial<KernelTable<TypedArray>>;

/** wasm's line in the backend list (backends.ts): available wherever WebAssembly is. */
export const wasmEntry: BackendEntry<'wasm'> = {
  name: 'wasm',
  available: () => typeof (globalThis as { WebAssembly?: unknown }).WebAssembly !== 'undefined',
  instance: () => wasmBackend as Backend,
  create: (o = {}) => createWasmBackend({ threads: o.threads, matmulMinMacs: o.eager ? 0 : undefined }) as Backend,
};
