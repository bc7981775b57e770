/**
 * @file The browser path: each package, bundled from its sources by esbuild for the browser
 * platform, imports no Node built-in (core, kernels, nn and quant reach node:fs, node:os,
 * node:worker_threads … only through process.getBuiltinModule, which a browser lacks).
 */
import { builtinModules } from 'node:module';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';
import { describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const ENTRIES = ['@qgrad/kernels', '@qgrad/core', '@qgrad/core/testing', '@qgrad/nn', '@qgrad/quant', '@qgrad/quant/testing'];
const BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

/** Records every import of a Node built-in with the file that imports it, and leaves it external. */
function nodeBuiltins(found: string[]): Plugin {
  return {
    name: 'node-builtins',
    setup(b) {
      b.onResolve({ filter: /.*/ }, (args) => {
        if (!BUILTINS.has(args.path) && !args.path.startsWith('node:')) return undefined;
        found.push(`${args.path} (imported by ${args.importer.replace(repo, '')})`);
        return { path: args.path, external: true };
      });
    },
  };
}

describe('bundled for the browser', () => {
  for (const entry of ENTRIES) {
    it(`${entry} imports no Node built-in`, async () => {
      const found: string[] = [];
      const result = await build({
        stdin: { contents: `export * from '${entry}';`, resolveDir: repo, loader: 'ts' },
        bundle: true,
        write: false,
        format: 'esm',
        platform: 'browser',
        // resolve the workspace packages to their TypeScript sources, as tests do; fast-check is
        // the user's own dependency of the testing subpaths
        conditions: ['@qgrad/source'],
        external: ['fast-check'],
        logLevel: 'silent',
        plugins: [nodeBuiltins(found)],
      });
      expect(found).toEqual([]);
      expect(result.outputFiles[0]!.text.length).toBeGreaterThan(1000);
    }, 60_000);
  }
});
