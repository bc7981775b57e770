import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Tests run against the packages' TypeScript sources (the same map as tsconfig.json's paths), so
// `npm test` needs no build; the published exports point at dist/ (test/packaging checks those).
const src = (path: string): string => fileURLToPath(new URL(`./packages/${path}`, import.meta.url));
const alias = [
  { find: /^@qgrad\/core\/testing$/, replacement: src('core/src/testing/index.ts') },
  { find: /^@qgrad\/quant\/testing$/, replacement: src('quant/src/testing/index.ts') },
  ...['kernels', 'core', 'nn', 'quant'].map((p) => ({ find: new RegExp(`^@qgrad/${p}$`), replacement: src(`${p}/src/index.ts`) })),
];

// Dawn's OpenGL ES adapter (the gpu backend's webgpu mode in Node, gpu-webgpu.test.ts) needs Mesa's
// surfaceless EGL platform; the test workers are threads, whose process.env never reaches EGL, so
// it is set here, in the process that starts them
process.env.EGL_PLATFORM ??= 'surfaceless';
// auto selection would run the gpu backend on Dawn's software adapter wherever it opens, and every
// suite that walks the available backends (the testing kit's checkOp) would spread onto it; the
// gpu suites choose their mode themselves (gpu-remote.test.ts: auto), the rest see headless-gl
// only (none without a display), as before auto could choose webgpu
process.env.QGRAD_GPU_MODE ??= 'headlessgl';

export default defineConfig({
  resolve: { alias },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'examples/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    pool: 'threads',
  },
});
