/**
 * @file The gpu backend in the bench: whether it runs here and on what (gpu.js mode, GL renderer,
 * and whether that renderer is software rasterising on the CPU), the label and note its figures
 * carry, its matmul contender, and the read-back that ends every timed gpu call.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as q from '@qgrad/core';
import { backendEntry, type Backend, type KernelArg } from '@qgrad/kernels';
import type { MatmulContender, MatmulShape } from './matmul.js';

export interface GpuStatus {
  available: boolean;
  /** gpu.js's mode, or null when none works. */
  mode: string | null;
  /** The backend's own line: the mode in use, or why no mode works. */
  info: string;
  /** What the GL context reports (headless-gl: 'ANGLE', vendor, version), when one was opened. */
  glRenderer: string | null;
  /** The GL driver mapped into this process (Linux), e.g. Mesa's swrast_dri.so. */
  driver: string | null;
  /** true: a software rasteriser (Mesa llvmpipe/softpipe) does the work on the CPU; null: unknown. */
  software: boolean | null;
  /** The name gpu figures go under: qgrad-gpu-sw when software rendering, else qgrad-gpu. */
  label: string;
  /** One line printed under every table that holds a gpu figure. */
  note: string;
}

let cached: GpuStatus | null = null;

/**
 * Opens the gpu backend (never throws: without a display or a `gl` build it reports why) and
 * works out what renders. headless-gl offers no WEBGL_debug_renderer_info (its RENDERER is just
 * 'ANGLE'), so the driver comes from the shared objects the GL context loaded into this process.
 */
export function gpuStatus(): GpuStatus {
  if (cached) return cached;
  const entry = backendEntry('gpu');
  let info: { mode: string | null; message: string };
  try {
    info = entry ? (entry.instance() as unknown as { info(): { mode: string | null; message: string } }).info() : { mode: null, message: 'no gpu entry in the backend list' };
  } catch (e) {
    info = { mode: null, message: `opening the gpu backend threw: ${(e as Error).message.split('\n')[0]}` };
  }
  const available = info.mode !== null && q.availableBackends().includes('gpu');
  const glRenderer = available && info.mode === 'headlessgl' ? headlessGlRenderer() : null;
  const driver = available ? mappedGlDriver() : null;
  // Xvfb offers GLX only through Mesa's software rasterisers; a hardware driver shows up by name
  const software = driver === null ? null : /swrast|llvmpipe|softpipe|lavapipe/i.test(driver);
  const label = software ? 'qgrad-gpu-sw' : 'qgrad-gpu';
  const what = `gpu.js ${info.mode} mode${glRenderer ? `, GL '${glRenderer}'` : ''}${driver ? ` over ${driver}` : ''}`;
  const kind = software === true
    ? 'SOFTWARE RENDERING on this machine\'s CPU cores, not a GPU'
    : software === false ? 'a hardware GL driver' : 'GL driver not found among the mapped libraries: may be software rendering';
  const note = `${label} = ${what}: ${kind}; each timed gpu call or step ends in a read-back (the gpu backend's only synchronisation)`;
  // A software rasteriser runs its own threads on the cores the CPU contenders are timed on: in a
  // run with webgpu over llvmpipe beside them, qgrad-wasm-2t's square matmuls fell from 55/66/70 to
  // 31/43/62 GFLOP/s at 256/512/1024 (2026-12-07), so those figures come only when asked for
  if (available && software === true && !process.env.QGRAD_GPU_MODE) {
    const why = `only ${what} opened, a software renderer whose threads would share the cores the CPU figures are timed on; set QGRAD_GPU_MODE=${info.mode} to measure it anyway`;
    // released, not just left unused: an open Dawn device keeps its worker polling (~0.8 of a core
    // while idle, measured 3,960 ms CPU in 5 s; 11 ms after dispose)
    void Promise.resolve((entry?.instance() as unknown as { dispose?(): unknown } | undefined)?.dispose?.()).catch(() => undefined);
    cached = { available: false, mode: info.mode, info: why, glRenderer, driver, software, label, note };
    return cached;
  }
  cached = { available, mode: info.mode, info: info.message, glRenderer, driver, software, label, note };
  return cached;
}

/** RENDERER / VENDOR / VERSION of a 1×1 headless-gl context (the library gpu.js drives in headlessgl mode). */
function headlessGlRenderer(): string | null {
  try {
    const createGl = createRequire(import.meta.url)('gl') as (w: number, h: number) => WebGLLike | null;
    const gl = createGl(1, 1);
    if (!gl) return null;
    const debug = gl.getExtension('WEBGL_debug_renderer_info') as { UNMASKED_RENDERER_WEBGL: number } | null;
    const renderer = String(gl.getParameter(debug ? debug.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    const line = `${renderer}, ${String(gl.getParameter(gl.VENDOR))}, ${String(gl.getParameter(gl.VERSION))}`;
    (gl.getExtension('STACKGL_destroy_context') as { destroy(): void } | null)?.destroy();
    return line;
  } catch {
    return null;
  }
}
interface WebGLLike {
  RENDERER: number;
  VENDOR: number;
  VERSION: number;
  getParameter(p: number): unknown;
  getExtension(name: string): unknown;
}

/** The GL driver library this process has loaded (Linux /proc/self/maps), or null elsewhere. */
function mappedGlDriver(): string | null {
  let maps: string;
  try {
    maps = readFileSync('/proc/self/maps', 'utf8');
  } catch {
    return null;
  }
  const libs = new Set(maps.split('\n').map((l) => l.split(/\s+/)[5] ?? '').filter((p) => p.startsWith('/')));
  const base = (p: string) => p.slice(p.lastIndexOf('/') + 1);
  // Mesa's DRI drivers (swrast_dri.so is llvmpipe when libLLVM is loaded beside it) and vendor GL libraries
  const dri = [...libs].filter((p) => /\/dri\/[^/]+_dri\.so$|libgallium|libGLX_nvidia|libnvidia-glcore|libGLX_mesa/.test(p)).map(base);
  if (dri.length === 0) return null;
  const llvm = [...libs].some((p) => /libLLVM/.test(p));
  const names = dri.filter((d) => d !== 'libGLX_mesa.so.0.0.0' || dri.length === 1);
  return `${names.join(' + ')}${llvm && names.some((n) => n.startsWith('swrast')) ? ' (Mesa llvmpipe)' : ''}`;
}

/** Prints the one line that says whether the gpu figures of a run exist, and why not. */
export function announceGpu(): GpuStatus {
  const s = gpuStatus();
  if (s.available) console.log(`${s.info}; ${s.note}`);
  else console.log(`gpu figures skipped: ${s.info}`);
  return s;
}

/**
 * The gpu backend's matmul as a bench contender: operands written once into device buffers (as
 * tensors live between kernels), each call a kernel then a read-back of the product, so the time
 * includes downloading m×n floats — without it the call only queues work.
 */
export function gpuContender(maxMacs?: number): MatmulContender {
  const backend = backendEntry('gpu')!.instance() as Backend;
  const held: unknown[] = [];
  const buffer = (values: Float32Array) => {
    const b = backend.alloc('float32', values.length);
    backend.write(b, 'float32', values);
    held.push(b);
    return b;
  };
  const view = (data: unknown, batch: number, rows: number, cols: number, transposed = false): KernelArg => {
    const strides = transposed ? [1, rows] : [cols, 1];
    return batch === 1
      ? { data, dtype: 'float32', shape: [rows, cols], strides, offset: 0 }
      : { data, dtype: 'float32', shape: [batch, rows, cols], strides: [rows * cols, ...strides], offset: 0 };
  };
  return {
    name: gpuStatus().label,
    maxMacs,
    prepare(s: MatmulShape, a: Float32Array, b: Float32Array) {
      const inputs = [view(buffer(a), s.batch, s.m, s.k, s.transposeA), view(buffer(b), s.batch, s.k, s.n, s.transposeB)];
      const size = s.batch * s.m * s.n;
      const out = backend.alloc('float32', size);
      held.push(out);
      const outView = view(out, s.batch, s.m, s.n);
      return () => {
        backend.run('matmul', inputs, outView, {});
        backend.readSync(out, 'float32', size);
      };
    },
    dispose() {
      for (const b of held.splice(0)) backend.free(b);
    },
  };
}
