/**
 * @file Vite config of the playground (`npm run playground`, or `vite build examples/playground`):
 * the @qgrad packages from their TypeScript sources, COOP/COEP on every response so the page is
 * cross-origin isolated and the wasm backend gets Web Workers (dev and preview), and the MNIST
 * slice made from the installed `mnist` package when served or built, never a file in the repo.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig, runnerImport, type Alias, type Plugin } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));
const src = (path: string): string => fileURLToPath(new URL(`../../packages/${path}`, import.meta.url));

/** The packages' sources, as vitest.config.ts maps them (their exports' default is dist/, which may not be built). */
export const alias: Alias[] = ['kernels', 'core', 'nn', 'quant'].map((p) => ({ find: new RegExp(`^@qgrad/${p}$`), replacement: src(`${p}/src/index.ts`) }));

/** The headers that make a page cross-origin isolated (SharedArrayBuffer, so Web Workers share the wasm memory). */
export const ISOLATION = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

/**
 * Serves (dev) or emits (build) data.ts's slice. data.ts imports @qgrad/nn, which Node cannot load
 * from its sources, and a config file's own imports are loaded by Node: so it goes through Vite's
 * module runner with the aliases above, once, when first asked for.
 */
function mnistSlice(): Plugin {
  let made: Promise<{ file: string; bytes: Uint8Array }> | undefined;
  const make = () =>
    (made ??= runnerImport<typeof import('./data.js')>(`${here}data.ts`, { resolve: { alias }, logLevel: 'error' }).then(({ module }) => ({ file: module.SLICE_FILE, bytes: module.mnistSliceBytes() })));
  return {
    name: 'qgrad-mnist-slice',
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        if (!req.url?.endsWith('.bin')) return next();
        make().then(({ file, bytes }) => {
          if (req.url !== `/${file}`) return next();
          res.writeHead(200, { 'content-type': 'application/octet-stream', ...ISOLATION });
          res.end(bytes);
        }, next);
      });
    },
    async generateBundle() {
      const { file, bytes } = await make();
      this.emitFile({ type: 'asset', fileName: file, source: bytes });
    },
  };
}

export default defineConfig({
  root: here,
  // relative asset URLs: the built page works from any directory it is served from
  base: './',
  resolve: { alias },
  plugins: [mnistSlice()],
  server: { headers: ISOLATION },
  preview: { headers: ISOLATION },
  build: { target: 'es2022', chunkSizeWarningLimit: 2000 },
});
