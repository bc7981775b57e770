/**
 * @file The worker pool: workers (worker_threads in Node, Web Workers in a browser: workers.ts)
 * that instantiate the kernel module on the shared memory and take task indices from an atomic
 * counter in its control block. Synchronous for the caller: it works too, then waits until every
 * task is done (Atomics.wait where it may block, polling on a browser's main thread). Which thread
 * runs a task never changes what the task computes, so results do not depend on the thread count.
 */
import type { WorkerPlatform } from './workers.js';

/** Word indices of the control block (an Int32Array at byte 0 of the shared memory). */
const GEN = 0;
const FN = 1;
const ARG = 2;
const NTASKS = 3;
/** (job tag << INDEX_BITS) | next task index: a worker holding a stale tag cannot take a task. */
const NEXT = 4;
const DONE = 5;
const READY = 6;
const ERROR = 7;
const QUIT = 8;
/** Tasks taken per claim: one CAS and one DONE update per run of tasks, not per task. */
const GRAIN = 9;
/** The optional second phase of a job: its export, argument block, task count and grain. */
const FN2 = 10;
const ARG2 = 11;
const NTASKS2 = 12;
const GRAIN2 = 13;
const INDEX_BITS = 20;
const MAX_TASKS = 1 << INDEX_BITS;
const TAG_MASK = (1 << (31 - INDEX_BITS)) - 1;
export const CONTROL_BYTES = 64;

/**
 * The job loop every worker runs, as script text: `module`, `memory`, `names` and `spinMicros` are
 * in scope, and `onReady` is a statement run once the worker counts itself ready. Tasks are
 * taken by compare-and-swap on NEXT, whose tag names the job: a worker that wakes late for a job
 * that is already over finds a newer tag and goes back to sleep, so the caller never waits for
 * idle or descheduled workers, only for tasks in progress (DONE).
 */
export const workerLoop = (onReady: string): string => `
const ex = new WebAssembly.Instance(module, { env: { memory } }).exports;
const fns = names.map((n) => ex[n]);
const c = new Int32Array(memory.buffer, 0, 16);
let gen = Atomics.load(c, ${GEN});
Atomics.add(c, ${READY}, 1);
Atomics.notify(c, ${READY});
${onReady}
for (;;) {
  // spin a while before sleeping: kernels come in bursts, and a futex wake of a vCPU that has
  // halted costs tens of µs (256² matmul, 2 threads, 2 ms of JS between calls: 58 → 67 GFLOP/s;
  // scripts/bench/kernels.ts)
  if (spinMicros > 0 && Atomics.load(c, ${GEN}) === gen) {
    const until = performance.now() + spinMicros / 1000;
    for (let i = 0; Atomics.load(c, ${GEN}) === gen; i++) if ((i & 63) === 0 && performance.now() > until) break;
  }
  while (Atomics.load(c, ${GEN}) === gen) Atomics.wait(c, ${GEN}, gen);
  gen = Atomics.load(c, ${GEN});
  if (Atomics.load(c, ${QUIT})) break;
  // a job has one or two phases; tasks [n1, n1 + n2) of the second start once the first's are done
  const f1 = fns[Atomics.load(c, ${FN})], a1 = Atomics.load(c, ${ARG}), n1 = Atomics.load(c, ${NTASKS});
  const n2 = Atomics.load(c, ${NTASKS2}), f2 = n2 ? fns[Atomics.load(c, ${FN2})] : null, a2 = Atomics.load(c, ${ARG2});
  const n = n1 + n2, tag = gen & ${TAG_MASK}, g1 = Atomics.load(c, ${GRAIN}), g2 = Atomics.load(c, ${GRAIN2});
  for (;;) {
    const v = Atomics.load(c, ${NEXT});
    const t0 = v & ${MAX_TASKS - 1};
    if (v >>> ${INDEX_BITS} !== tag || t0 >= n) break;
    const second = t0 >= n1;
    const t1 = second ? Math.min(n, t0 + g2) : Math.min(n1, t0 + g1);
    if (Atomics.compareExchange(c, ${NEXT}, v, v + (t1 - t0)) !== v) continue;
    if (second) while (Atomics.load(c, ${DONE}) < n1);
    try {
      if (second) for (let t = t0; t < t1; t++) f2(a2, t - n1);
      else for (let t = t0; t < t1; t++) f1(a1, t);
    } catch {
      Atomics.store(c, ${ERROR}, 1);
    }
    if (Atomics.add(c, ${DONE}, t1 - t0) + (t1 - t0) === n) Atomics.notify(c, ${DONE});
  }
}
`;

/**
 * Thread count: explicit option, else QGRAD_THREADS, else os.availableParallelism() (Node) or
 * navigator.hardwareConcurrency (a browser).
 */
export function defaultThreadCount(): number {
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined>; getBuiltinModule?: (id: string) => unknown } }).process;
  const env = Number(proc?.env?.QGRAD_THREADS);
  if (Number.isInteger(env) && env >= 1) return env;
  const os = proc?.getBuiltinModule?.('node:os') as { availableParallelism?: () => number } | undefined;
  const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
  return Math.max(1, os?.availableParallelism?.() ?? nav?.hardwareConcurrency ?? 1);
}

/** Longest poll allowed: past this a sleeping worker's wake-up is noise, and a typo must not pin a core. */
export const MAX_SPIN_MICROS = 100_000;

/**
 * How long an idle worker (and the caller waiting for workers) polls before it sleeps: QGRAD_SPIN_US
 * when it is a number (clamped to [0, MAX_SPIN_MICROS]), else 250 µs. Polling costs CPU time only
 * while the pool is idle between kernels; on a machine shared by more busy threads than cores, set
 * it to 0.
 */
export function defaultSpinMicros(): number {
  const raw = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.QGRAD_SPIN_US;
  return raw === undefined || raw.trim() === '' ? 250 : clampSpin(Number(raw), 250);
}

function clampSpin(us: number, fallback: number): number {
  return Number.isNaN(us) ? fallback : Math.min(MAX_SPIN_MICROS, Math.max(0, us));
}

let mayBlock: boolean | null = null;

/**
 * Whether this thread may sleep in Atomics.wait: Node's main thread and any worker may, a browser
 * page's main thread may not (it throws), so the pool's caller polls there instead.
 */
function callerMayBlock(): boolean {
  if (mayBlock === null) {
    try {
      // returns 'not-equal' at once where waiting is allowed
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
      mayBlock = true;
    } catch {
      mayBlock = false;
    }
  }
  return mayBlock;
}

/** A fixed set of workers over one shared memory, plus the caller, running jobs of wasm task exports. */
export class ThreadPool {
  /** Workers started (the caller is the pool's last thread). */
  readonly workers: number;
  readonly platform: WorkerPlatform['name'];
  /** Settles once every worker runs the job loop or has failed to start. */
  readonly started: Promise<void>;
  readonly #control: Int32Array;
  readonly #handles: { terminate(): void }[] = [];
  readonly #spinMicros: number;
  readonly #mayBlock = callerMayBlock();
  /** Why workers failed to start (a browser pool goes on without them). */
  readonly #failures: string[] = [];
  /** Set when a worker dies after it started: it may hold tasks that never finish. */
  #broken: string | null = null;

  /**
   * Starts `threads - 1` workers from `platform`. Where workers start while the caller is busy
   * (Node) it waits until they are ready and throws when they do not start (callers then run
   * single-threaded); in a browser it returns at once, and each worker takes part in jobs from
   * the first dispatched after it is up (`started` says when all are). An idle worker polls for
   * `spinMicros` after each job before it sleeps on a futex, and so does the caller waiting for
   * the workers' last tasks.
   */
  constructor(module: object, memory: { buffer: ArrayBufferLike }, names: readonly string[], threads: number, platform: WorkerPlatform, spinMicros = defaultSpinMicros()) {
    if (!(memory.buffer instanceof SharedArrayBuffer)) throw new Error('the wasm memory is not shared');
    this.#control = new Int32Array(memory.buffer, 0, CONTROL_BYTES / 4);
    this.#spinMicros = clampSpin(spinMicros, defaultSpinMicros());
    this.#control.fill(0);
    this.workers = threads - 1;
    this.platform = platform.name;
    let unsettled = this.workers;
    let allSettled!: () => void;
    this.started = new Promise((resolve) => (allSettled = resolve));
    const up: boolean[] = [];
    const data = { module, memory, names, spinMicros: this.#spinMicros };
    for (let i = 0; i < this.workers; i++) {
      up.push(false);
      const handle = platform.spawn(data, {
        ready: () => {
          up[i] = true;
          if (--unsettled === 0) allSettled();
        },
        failed: (reason) => {
          if (up[i]) this.#broken = reason;
          else {
            this.#failures.push(reason);
            if (--unsettled === 0) allSettled();
          }
        },
      });
      this.#handles.push(handle);
    }
    if (platform.startsWhileBusy) {
      const deadline = Date.now() + 10_000;
      for (let r; (r = Atomics.load(this.#control, READY)) < this.workers; ) {
        if (Date.now() > deadline) {
          this.dispose();
          throw new Error(`only ${r} of ${this.workers} wasm workers started`);
        }
        Atomics.wait(this.#control, READY, r, 100);
      }
      up.fill(true);
      unsettled = 0;
    }
    if (unsettled === 0) allSettled();
  }

  /** Threads that run or may still join jobs: the caller and every worker that has not failed to start. */
  get threads(): number {
    return 1 + this.workers - this.#failures.length;
  }

  /** Workers running the job loop now (a browser's start a while after the pool). */
  get running(): number {
    return Atomics.load(this.#control, READY);
  }

  /** Why workers failed to start, one reason each. */
  get failures(): readonly string[] {
    return this.#failures;
  }

  /**
   * Runs tasks 0..n-1 of export `fn` (index into `names`) with argument block `arg`, then, when
   * `then` is given, its tasks in the same wake-up of the workers once every first-phase task is
   * done (a barrier inside the job: one dispatch where two would each wake the workers).
   */
  run(fn: number, arg: number, n: number, local: (t: number) => void, then?: { fn: number; arg: number; n: number; local: (t: number) => void }): void {
    const c = this.#control;
    if (this.#broken !== null) throw new Error(`a wasm worker failed: ${this.#broken}`);
    const n2 = then?.n ?? 0;
    const total = n + n2;
    if (total >= MAX_TASKS) throw new RangeError(`thread pool: ${total} tasks, at most ${MAX_TASKS - 1}`);
    const gen = (Atomics.load(c, GEN) + 1) | 0;
    const tag = gen & TAG_MASK;
    // retag NEXT first: from here on no worker can take a task of the previous job
    Atomics.store(c, NEXT, tag << INDEX_BITS);
    Atomics.store(c, DONE, 0);
    Atomics.store(c, ERROR, 0);
    Atomics.store(c, FN, fn);
    Atomics.store(c, ARG, arg);
    Atomics.store(c, NTASKS, n);
    Atomics.store(c, FN2, then?.fn ?? 0);
    Atomics.store(c, ARG2, then?.arg ?? 0);
    Atomics.store(c, NTASKS2, n2);
    // ~8 claims per thread keep dynamic balancing while thousands of tiny tasks (packing panels)
    // stop paying a contended CAS each
    const grain = (k: number) => Math.max(1, Math.floor(k / (8 * (this.workers + 1))));
    const [g1, g2] = [grain(n), grain(n2)];
    Atomics.store(c, GRAIN, g1);
    Atomics.store(c, GRAIN2, g2);
    Atomics.store(c, GEN, gen);
    Atomics.notify(c, GEN);
    let failure: unknown = null;
    for (;;) {
      const v = Atomics.load(c, NEXT);
      const t0 = v & (MAX_TASKS - 1);
      if (t0 >= total) break;
      const second = t0 >= n;
      const t1 = second ? Math.min(total, t0 + g2) : Math.min(n, t0 + g1);
      if (Atomics.compareExchange(c, NEXT, v, v + (t1 - t0)) !== v) continue;
      if (second) while (Atomics.load(c, DONE) < n);
      try {
        if (second) for (let t = t0; t < t1; t++) then!.local(t - n);
        else for (let t = t0; t < t1; t++) local(t);
      } catch (e) {
        failure ??= e;
      }
      Atomics.add(c, DONE, t1 - t0);
    }
    // the caller, out of tasks, polls for the workers' last ones before sleeping (as they poll for
    // jobs): interleaved, 256² 67.0 → 68.0 GFLOP/s, larger products unchanged
    if (this.#spinMicros > 0 && Atomics.load(c, DONE) < total) {
      const until = performance.now() + this.#spinMicros / 1000;
      for (let i = 0; Atomics.load(c, DONE) < total; i++) if ((i & 63) === 0 && performance.now() > until) break;
    }
    // a browser page's main thread may not block: it polls until the workers' last tasks are done
    if (this.#mayBlock) for (let d; (d = Atomics.load(c, DONE)) < total; ) Atomics.wait(c, DONE, d, 1000);
    else while (Atomics.load(c, DONE) < total);
    if (failure) throw failure;
    if (Atomics.load(c, ERROR)) throw new Error('a wasm kernel task failed in a worker');
  }

  dispose(): void {
    Atomics.store(this.#control, QUIT, 1);
    Atomics.add(this.#control, GEN, 1);
    Atomics.notify(this.#control, GEN);
    for (const w of this.#handles) w.terminate();
    this.#handles.length = 0;
  }
}
