/**
 * @file The backend list: one line per backend. Core's `setBackend`/`availableBackends` and the
 * kernel test suite read it, so a backend added here is selectable and tested everywhere.
 */
import type { BackendEntry } from './backend.js';
import { jsEntry } from './js/index.js';
import { wasmEntry } from './wasm/index.js';
import { gpuEntry } from './gpu/index.js';

/** The backend list: every backend qgrad can select, in order of preference (adding a backend is one folder plus one entry here). */
export const BACKENDS = [
  jsEntry,
  wasmEntry,
  gpuEntry,
] as const satisfies readonly BackendEntry[];

/** Names of the backends in the list. */
export type BackendName = (typeof BACKENDS)[number]['name'];

/**
 * The list's entry for `name`, or undefined.
 * @example backendEntry('wasm')?.name; // 'wasm'
 */
export function backendEntry(name: string): BackendEntry | undefined {
  return BACKENDS.find((b) => b.name === name);
}
