/**
 * @file WebGPU in Node through Dawn (the `webgpu` package, which gpu.js depends on): installs a
 * `navigator.gpu` for gpu.js's webgpu mode where Node has none. Dawn's default backends come first
 * (Vulkan, on a machine with a GPU driver); where they give no adapter, as on machines without a
 * GPU (lavapipe answers nothing here), Dawn's OpenGL ES backend over Mesa's surfaceless EGL does,
 * at WebGPU's compatibility feature level.
 */

interface DawnAdapterRequest {
  featureLevel?: string;
  powerPreference?: string;
}
interface DawnGpu {
  requestAdapter(options?: DawnAdapterRequest): Promise<unknown>;
  getPreferredCanvasFormat?(): string;
  wgslLanguageFeatures?: unknown;
}
interface DawnModule {
  create(flags: string[]): DawnGpu;
  globals: Record<string, unknown>;
}

type NodeRequire = ((id: string) => unknown) & { resolve(id: string): string };
type Host = {
  navigator?: { gpu?: unknown };
  process?: { env: Record<string, string | undefined>; platform: string; arch: string; getBuiltinModule?: (m: string) => unknown };
};

/** What installing failed on, kept so every later call answers the same without retrying. */
let failed: string | null = null;

/**
 * Gives Node a `navigator.gpu` backed by Dawn, unless there already is one (a browser, or a user's
 * own). Returns null when WebGPU is there, else why not, in one line.
 *
 * @example
 * ```ts
 * const why = installNodeWebGpu();
 * if (why) console.log(`no WebGPU: ${why}`);
 * ```
 */
export function installNodeWebGpu(): string | null {
  const g = globalThis as unknown as Host;
  if (g.navigator?.gpu) return null;
  if (failed) return failed;
  const mod = g.process?.getBuiltinModule?.('node:module') as { createRequire(url: string): NodeRequire } | undefined;
  if (!mod || !g.process) return (failed = 'no WebGPU (navigator.gpu) here');
  const proc = g.process;
  let dawn: DawnModule;
  try {
    // the package is ESM around a native addon; the addon itself loads through require
    const require = mod.createRequire(import.meta.url);
    const pkg = require.resolve('webgpu/package.json');
    dawn = require(`${pkg.slice(0, -'package.json'.length)}dist/${proc.platform}-${proc.platform === 'darwin' ? 'universal' : proc.arch}.dawn.node`) as DawnModule;
  } catch (e) {
    return (failed = `no WebGPU: Dawn (the \`webgpu\` package, installed with gpu.js) did not load (${(e as Error).message.split('\n')[0]})`);
  }
  const native = dawn.create([]);
  let gles: DawnGpu | null = null;
  const gpu: DawnGpu = {
    async requestAdapter(options: DawnAdapterRequest = {}) {
      const adapter = await native.requestAdapter(options);
      if (adapter) return adapter;
      // Mesa's EGL needs a platform without a window system when no display is asked for; a
      // user's own choice stands
      proc.env.EGL_PLATFORM ??= 'surfaceless';
      gles ??= dawn.create(['backend=opengles']);
      const fallback = await gles.requestAdapter({ ...options, featureLevel: 'compatibility' });
      if (fallback) return fallback;
      // process.env of a worker thread is its own copy: EGL never sees a value set there
      throw new Error(
        'no WebGPU adapter: Dawn found none through its native backends nor through OpenGL ES ' +
          `(EGL_PLATFORM=${proc.env.EGL_PLATFORM}; in a worker thread it must be in the environment the process started with)`,
      );
    },
    getPreferredCanvasFormat: () => 'rgba8unorm',
    wgslLanguageFeatures: native.wgslLanguageFeatures,
  };
  const globals = globalThis as unknown as Record<string, unknown>;
  // the WebGPU constants (GPUBufferUsage, GPUMapMode, …), but not the interface `GPU`: that global
  // name is gpu.js's own in a browser, where a script tag loads it
  for (const [name, value] of Object.entries(dawn.globals)) if (name !== 'GPU' && !(name in globals)) globals[name] = value;
  if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  else g.navigator = { gpu };
  return null;
}
