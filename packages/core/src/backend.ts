/**
 * @file Backend selection, like TensorFlow.js: `setBackend('js' | 'wasm' | 'gpu')`.
 * New tensors are created on the current backend; ops run where their inputs live.
 */
import { jsBackend, wasmBackend, type Backend } from '@qgrad/kernels';

export type BackendName = 'js' | 'wasm' | 'gpu';

const factories: Partial<Record<BackendName, () => Backend>> = {
  js: () => jsBackend as Backend,
  wasm: () => wasmBackend as Backend,
};
const instances = new Map<BackendName, Backend>();

/**
 * wasm is the default CPU backend (its kernels fall back to js per call where it has none);
 * QGRAD_BACKEND=js selects the plain-JS reference from the start.
 */
function initialBackend(): Backend {
  const env = typeof process !== 'undefined' ? process.env?.QGRAD_BACKEND : undefined;
  const name: BackendName = env === 'js' || env === 'wasm' || env === 'gpu' ? env : 'wasm';
  const f = factories[name] ?? factories.js!;
  const b = f();
  instances.set(b.name as BackendName, b);
  return b;
}
let current: Backend = initialBackend();

/** Makes a backend selectable (the kernels package's wasm and gpu entry points call this). */
export function registerBackend(name: BackendName, factory: () => Backend): void {
  factories[name] = factory;
}

/**
 * Selects the backend new tensors are created on.
 * @example setBackend('js'); zeros([2]).device === 'js'
 */
export function setBackend(name: BackendName): void {
  let b = instances.get(name);
  if (!b) {
    const f = factories[name];
    if (!f) throw new Error(`setBackend: backend '${name}' is not available (have: ${Object.keys(factories).join(', ')})`);
    b = f();
    instances.set(name, b);
  }
  current = b;
}

export function getBackend(): BackendName {
  return current.name as BackendName;
}

/** @internal the Backend object new tensors go to. */
export function currentBackend(): Backend {
  return current;
}

/** Names of the backends that can be selected in this process. */
export function availableBackends(): BackendName[] {
  return Object.keys(factories) as BackendName[];
}

/** Runs `fn` with `name` as the current backend, restoring the previous one afterwards. */
export function withBackend<T>(name: BackendName, fn: () => T): T {
  const prev = current;
  setBackend(name);
  try {
    return fn();
  } finally {
    current = prev;
  }
}
