/**
 * @file Backend selection, like TensorFlow.js: `setBackend('js' | 'wasm' | …)` over the backend
 * list of @qgrad/kernels (BACKENDS). New tensors are created on the current backend; ops run
 * where their inputs live.
 */
import { BACKENDS, backendEntry, type Backend, type BackendName } from '@qgrad/kernels';

/** A backend in @qgrad/kernels' list (js, wasm, gpu); selecting one this runtime cannot run is an error. */
export type { BackendName };

/** Backends added at run time with `registerBackend` (out-of-tree backends); the list's own come first. */
const extra = new Map<BackendName, () => Backend>();
const instances = new Map<BackendName, Backend>();

function factory(name: BackendName): (() => Backend) | undefined {
  const entry = backendEntry(name);
  if (entry) return entry.available() ? entry.instance : undefined;
  return extra.get(name);
}

/**
 * wasm is the default CPU backend (its kernels fall back to js per call where it has none);
 * QGRAD_BACKEND=<name> selects another from the start (js: the plain-JS reference).
 */
function initialBackend(): Backend {
  const env = typeof process !== 'undefined' ? process.env?.QGRAD_BACKEND : undefined;
  const f = (env && factory(env as BackendName)) || factory('wasm') || factory('js')!;
  const b = f();
  instances.set(b.name as BackendName, b);
  return b;
}
let current: Backend = initialBackend();

/**
 * Makes a backend selectable that is not in @qgrad/kernels' list (an out-of-tree backend).
 * @example registerBackend('wasm', () => createWasmBackend({ threads: 2 }));
 */
export function registerBackend(name: BackendName, factory: () => Backend): void {
  extra.set(name, factory);
}

/**
 * Selects the backend new tensors are created on.
 * @example setBackend('js'); zeros([2]).device === 'js'
 */
export function setBackend(name: BackendName): void {
  let b = instances.get(name);
  if (!b) {
    const f = factory(name);
    if (!f) throw new Error(`setBackend: backend '${name}' is not available (have: ${availableBackends().join(', ')})`);
    b = f();
    instances.set(name, b);
  }
  current = b;
}

/**
 * The name of the backend new tensors go to (set by `setBackend`, `withBackend`).
 * @example setBackend('wasm'); getBackend(); // 'wasm'
 */
export function getBackend(): BackendName {
  return current.name as BackendName;
}

/** @internal the Backend object new tensors go to. */
export function currentBackend(): Backend {
  return current;
}

/**
 * Names of the backends that can be selected in this process.
 * @example availableBackends(); // ['js', 'wasm'] where no GPU is found
 */
export function availableBackends(): BackendName[] {
  return [...BACKENDS.filter((b) => b.available()).map((b) => b.name), ...extra.keys()];
}

/**
 * Runs `fn` with `name` as the current backend, restoring the previous one afterwards.
 * @example const y = withBackend('js', () => randn([4]).exp()); // made and computed on the js oracle
 */
export function withBackend<T>(name: BackendName, fn: () => T): T {
  const prev = current;
  setBackend(name);
  try {
    return fn();
  } finally {
    current = prev;
  }
}

/**
 * One line saying what a backend (default: the current one) computes on: wasm its thread count
 * and workers, or why it runs on one thread; gpu its gpu.js mode; js its reference loops.
 * @example backendInfo('wasm'); // 'wasm, 2 threads (worker_threads)'; on a page without COOP/COEP: 'wasm, 1 thread: page not cross-origin isolated (COOP/COEP headers missing)'
 */
export function backendInfo(name?: BackendName): string {
  let b = name === undefined ? current : instances.get(name);
  if (!b) {
    const f = factory(name!);
    if (!f) return `${name}: not available (have: ${availableBackends().join(', ')})`;
    instances.set(name!, (b = f()));
  }
  const info = (b as { info?: () => { message?: string } }).info?.();
  return info?.message ?? (b.name === 'js' ? 'js, 1 thread: the reference loops' : b.name);
}
