/**
 * @file The gpu backend: gpu.js kernels (device.ts chooses the mode: QGRAD_GPU_MODE, else webgpu →
 * webgl2 → headlessgl → webgl), tensors as device textures that stay on the device between
 * kernels (`GpuBuffer`), and the js oracle for every call the gpu declines (float64, stochastic
 * rounding, partial writes of a device buffer, sizes past a float index), through fallback.ts's
 * host transfer, with a one-time warning naming it and the QGRAD_DEBUG_KERNELS=1 counts.
 * webgpu: kernels chain on the device as in the other modes (device.ts queues gpu.js's Promises in
 * program order); values come back only through the async `read`, so in this thread readSync, a
 * js fallback on a device-only buffer and an index check of one throw. Selection runs webgpu in a
 * worker instead where it can (remote.ts: Node, or a browser's isolated dedicated worker), where
 * all of those work.
 */
import type { Backend, BackendEntry, KernelArg } from '../backend.js';
import { type NativeKernel, type NativeTable, withJsFallback } from '../fallback.js';
import type { KernelName, KernelParams, TypedArray } from '../names.js';
import { ARRAY_TYPES, DTYPES } from '../names.js';
import { type Device, type DeviceOptions, type GpuInfo, GpuBuffer, DEVICE_DTYPES, hostValues, hostValuesAsync, hostWritten, openDevice } from './device.js';
import { binaryGpu, copyGpu, fillGpu, unaryGpu, whereGpu } from './elementwise.js';
import { col2imGpu, im2colGpu } from './conv.js';
import { gatherGpu, indexAddGpu, indexSelectGpu, scatterAddGpu } from './gather.js';
import { fwhtGpu } from './hadamard.js';
import { matmulGpu } from './matmul.js';
import { normBackwardGpu, normGpu, ropeGpu, softmaxBackwardGpu, softmaxGpu } from './norm.js';
import { adamStepGpu } from './optim.js';
import { Call, type GpuArg } from './operands.js';
import { packedGatherGpu, packedMatmulGpu } from './packed.js';
import { openRemoteWebGpu } from './remote.js';
import { inNode } from './remote-link.js';
import { fakeQuantizeBackwardGpu, fakeQuantizeGpu } from './quant.js';
import { argReduceGpu, reduceGpu } from './reduce.js';

export { GpuBuffer, type DeviceOptions, type GpuInfo, type GpuMode } from './device.js';

/** A gpu kernel: returns false to hand this call to js (dtype, layout, size it does not take). */
type GpuRule<K extends KernelName> = (call: Call, inputs: readonly GpuArg[], out: GpuArg, params: KernelParams[K]) => boolean;

const RULES: { [K in KernelName]?: GpuRule<K> } = {
  unary: unaryGpu,
  binary: binaryGpu,
  where: whereGpu,
  copy: copyGpu,
  fill: fillGpu,
  matmul: matmulGpu,
  reduce: reduceGpu,
  argReduce: argReduceGpu,
  im2col: im2colGpu,
  col2im: col2imGpu,
  gather: gatherGpu,
  scatterAdd: scatterAddGpu,
  indexSelect: indexSelectGpu,
  indexAdd: indexAddGpu,
  softmax: softmaxGpu,
  softmaxBackward: softmaxBackwardGpu,
  norm: normGpu,
  normBackward: normBackwardGpu,
  rope: ropeGpu,
  adamStep: adamStepGpu,
  fakeQuantize: fakeQuantizeGpu,
  fakeQuantizeBackward: fakeQuantizeBackwardGpu,
  fwht: fwhtGpu,
  packedMatmul: packedMatmulGpu,
  packedGather: packedGatherGpu,
};

/** What a gpu backend answers beyond Backend, in this thread or forwarding to a worker (remote.ts). */
export interface GpuBackendLike<D = unknown> extends Backend<D> {
  /** The mode in use and why others were passed over (starts the device). */
  info(): GpuInfo;
  /** Textures alive on the device and their elements (results, uploads), for leak checks. */
  deviceMemory(): { textures: number; elements: number };
}

/** The gpu backend in this thread: its buffers are `GpuBuffer`s. */
export interface GpuBackend extends GpuBackendLike<GpuBuffer | TypedArray> {
  /** `dispose`, resolving once the device is released (webgpu: the queue drained, the shared GPUDevice destroyed). */
  release(): Promise<void>;
}

/** What gpu operands are: device buffers, or host arrays a caller passed (uploaded per call). */
type GpuData = GpuBuffer | TypedArray;

/**
 * The gpu backend in this thread (device.ts chooses the mode: `mode`, else QGRAD_GPU_MODE, else
 * auto). `webgpuPassed`: why auto selection did not take webgpu in a worker (openGpuBackend), so
 * this one passes webgpu over and says why.
 */
export function createGpuBackend(options: DeviceOptions = {}): GpuBackend {
  let opened: { device: Device | null; info: GpuInfo } | null = null;
  const open = () => (opened ??= openDevice(options));
  // the rules bound to the device, built once it opens (null: no mode works, everything runs on js)
  let table: NativeTable<GpuData> | null | undefined;
  const nativeTable = () => (table === undefined ? (table = bindRules(open().device)) : table);
  const warned = new Set<string>();
  const runner = withJsFallback<GpuData>('gpu', nativeTable, {
    transfer: {
      // a device buffer's whole host copy (read back when only the device has it), so a partial
      // write by js keeps the rest
      toHost: (a) => (a.data instanceof GpuBuffer ? { ...a, data: hostValues(a.data) } : (a as KernelArg<TypedArray>)),
      fromHost: (a) => {
        if (a.data instanceof GpuBuffer) hostWritten(open().device, a.data);
      },
    },
    onFallback: (kernel, dtype, declined) => {
      const key = `${kernel}/${dtype}`;
      if (warned.has(key)) return;
      warned.add(key);
      const device = open().device;
      const why = !device ? open().info.message : !declined ? 'the gpu backend has no kernel for it' : dtype === 'float64' ? 'gpu kernels compute in float32' : 'this dtype, layout, size or index is not handled on the gpu';
      console.warn(`qgrad gpu backend: '${kernel}' (${dtype}) runs on the js fallback: ${why}; its operands are read back from the device and its result written back`);
    },
    guess: (kernel, dtype) => RULES[kernel] !== undefined && dtype === 'float32' && open().device !== null,
    header: () => `qgrad gpu backend (${open().info.message}):`,
    footer: () => {
      const m = backend.deviceMemory();
      return [`  ${m.textures} textures (${m.elements} elements) on the device at exit`];
    },
  });
  let bytes = 0;
  let buffers = 0;

  const backend: GpuBackend = {
    name: 'gpu',
    dtypes: DTYPES,
    alloc(dtype, size) {
      const b = new GpuBuffer(dtype, size);
      bytes += b.host!.byteLength;
      buffers++;
      return b;
    },
    write(data, _dtype, values) {
      if (!(data instanceof GpuBuffer)) return void data.set(values as never);
      const h = hostValues(data);
      h.set(values as never);
      hostWritten(open().device, data);
    },
    /** Blocks until the device has the values (WebGL readPixels); throws in webgpu mode, which has only `read`. */
    readSync(data, _dtype, size) {
      if (!(data instanceof GpuBuffer)) return data.subarray(0, size);
      const h = hostValues(data);
      return size === h.length ? h : h.subarray(0, size);
    },
    async read(data, _dtype, size) {
      if (!(data instanceof GpuBuffer)) return data.subarray(0, size);
      const h = await hostValuesAsync(data);
      return size === h.length ? h : h.subarray(0, size);
    },
    free(data) {
      if (!(data instanceof GpuBuffer)) return;
      if (data.freed) throw new Error('gpu backend: a buffer was freed twice');
      hostWritten(open().device, data); // deletes the texture
      data.freed = true;
      data.host = null;
      bytes -= data.size * ARRAY_TYPES[data.dtype].BYTES_PER_ELEMENT;
      buffers--;
    },
    memory: () => ({ bytes, buffers }),
    deviceMemory: () => {
      const d = opened?.device;
      return { textures: d?.textures ?? 0, elements: d?.textureElements ?? 0 };
    },
    info: () => open().info,
    run: runner.run,
    ranOn: runner.ranOn,
    stats: runner.stats,
    sync: async () => opened?.device?.settle(),
    dispose() {
      void backend.release();
    },
    release() {
      const device = opened?.device;
      opened = null;
      table = undefined;
      return device ? device.dispose() : Promise.resolve();
    },
  };
  return backend;
}

/** RULES as fallback.ts's table on `device`: each call gets a Call whose temporary uploads it releases. */
function bindRules(device: Device | null): NativeTable<GpuData> | null {
  if (!device) return null;
  const bind = <K extends KernelName>(rule: GpuRule<K>): NativeKernel<K, GpuData> => (inputs, out, params) => {
    if (!DEVICE_DTYPES.includes(out.dtype)) return false;
    const call = new Call(device);
    try {
      return rule(call, inputs, out, params);
    } finally {
      call.done();
    }
  };
  return Object.fromEntries(Object.entries(RULES).map(([k, rule]) => [k, bind(rule as GpuRule<KernelName>)])) as NativeTable<GpuData>;
}

/**
 * The gpu backend selection makes. webgpu (auto's first choice, or QGRAD_GPU_MODE=webgpu) runs in
 * a worker so that synchronous reads work (remote.ts): in Node a worker thread it starts, in a
 * browser the Web Worker that connectWebGpuWorker linked (only a dedicated worker of a cross-origin
 * isolated page may block for it). Where there is none, auto takes the modes after webgpu in this
 * thread (webgl2, headlessgl, webgl) and `info()` says why webgpu was not chosen; a page that asks
 * for webgpu without a worker gets it here, with asynchronous reads only.
 */
export function openGpuBackend(): GpuBackendLike {
  const forced = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.QGRAD_GPU_MODE;
  if (forced && forced !== 'auto' && forced !== 'webgpu') return createGpuBackend() as GpuBackendLike;
  const remote = openRemoteWebGpu();
  if (typeof remote !== 'string') return remote as GpuBackendLike;
  if (forced === 'webgpu' && !inNode()) return createGpuBackend() as GpuBackendLike;
  return createGpuBackend({ webgpuPassed: inNode() ? `webgpu in a worker thread: ${remote}` : remote }) as GpuBackendLike;
}

let instance: GpuBackendLike | null = null;

/** The process-wide gpu backend (openGpuBackend's choice; its device opens on first use). */
export function gpuBackend(): GpuBackendLike {
  return (instance ??= openGpuBackend());
}

/** What the gpu backend chose, or why it cannot run (opens the device). */
export function gpuInfo(): GpuInfo {
  return gpuBackend().info();
}

/** gpu's line in the backend list (backends.ts): available where some gpu.js mode passes its probe. */
export const gpuEntry: BackendEntry<'gpu'> = {
  name: 'gpu',
  available: () => gpuInfo().mode !== null,
  instance: () => gpuBackend() as Backend,
  create: () => openGpuBackend() as Backend,
};
