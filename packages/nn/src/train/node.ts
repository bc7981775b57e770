/**
 * @file The Node built-ins the training API writes files with, looked up at call time through
 * `process.getBuiltinModule` (as core's safetensors I/O does), so importing `@qgrad/nn` in a
 * browser pulls in no `node:` module; only the file-writing parts need Node.
 */

/** The subset of `node:fs` the trainer uses. */
export interface Fs {
  existsSync(path: string): boolean;
  mkdirSync(path: string, opts: { recursive: true }): unknown;
  readFileSync(path: string, encoding: 'utf8'): string;
  writeFileSync(path: string, data: string): void;
  appendFileSync(path: string, data: string): void;
}

type Proc = { getBuiltinModule?: (m: string) => unknown; stdout?: { isTTY?: boolean; write(s: string): boolean } };

/** `process` where there is one (Node), else undefined (browsers). */
export function proc(): Proc | undefined {
  return (globalThis as { process?: Proc }).process;
}

/** `node:fs`, or an error naming `what` needs Node (≥ 20.16, which has getBuiltinModule). */
export function nodeFs(what: string): Fs {
  const fs = proc()?.getBuiltinModule?.('node:fs') as Fs | undefined;
  if (!fs) throw new Error(`${what}: writing files needs Node.js ≥ 20.16 (no node:fs here)`);
  return fs;
}

/** `a/b` joined with one slash (paths here are always relative or POSIX-like). */
export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;
}
