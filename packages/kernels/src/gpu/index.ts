/**
 * @file The gpu backend: gpu.js kernels (device.ts chooses the mode: QGRAD_GPU_MODE, else webgpu →
 * webgl2 → headlessgl → webgl), tensors as device textures that stay on the device between
 * kernels (`GpuBuffer`), and the js oracle for every kernel or call the gpu does not take, with a
 * one-time warning naming it and the QGRAD_DEBUG_KERNELS=1 counts of fallback.ts.
 *
 * Family files still to write (their kernels run on js, with the warning): gather.ts
 * (gather/scatterAdd/indexSelect/indexAdd), conv.ts (im2col/col2im), norm's layer/RMS norm and
 * rope, hadamard.ts (fwht), optim.ts (adamStep). webgpu: gpu.js's webgpu kernels return Promises
 * and Backend.run is synchronous, so that mode is reported as not driven yet.
 */
import type { Backend, BackendEntry, KernelArg } from '../backend.js';
import { withJsFallback } from '../fallback.js';
import type { DType, KernelName, KernelParams, TypedArray } from '../names.js';
import { ARRAY_TYPES, DTYPES } from '../names.js';
import { type Device, type GpuInfo, GpuBuffer, DEVICE_DTYPES, hostValues, hostWritten, openDevice } from './device.js';
import { binaryGpu, copyGpu, fillGpu, unaryGpu, whereGpu } from './elementwise.js';
import { matmulGpu } from './matmul.js';
import { softmaxBackwardGpu, softmaxGpu } from './norm.js';
import { Call, type GpuArg } from './operands.js';
import { fakeQuantizeBackwardGpu, fakeQuantizeGpu } from './quant.js';
import { argReduceGpu, reduceGpu } from './reduce.js';

export { GpuBuffer, type GpuInfo, type GpuMode } from './device.js';

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
  softmax: softmaxGpu,
  softmaxBackward: softmaxBackwardGpu,
  fakeQuantize: fakeQuantizeGpu,
  fakeQuantizeBackward: fakeQuantizeBackwardGpu,
};

export interface GpuBackend extends Backend<GpuBuffer | TypedArray> {
  /** The mode in use and why others were passed over (starts the device). */
  info(): GpuInfo;
  /** Textures alive on the device and their elements (results, uploads), for leak checks. */
  deviceMemory(): { textures: number; elements: number };
}

/** One table for fallback.ts's counts: every entry says "ran natively" (run() decided already). */
const RAN_HERE = new Proxy({}, { get: () => () => true });

export function createGpuBackend(): GpuBackend {
  let opened: { device: Device | null; info: GpuInfo } | null = null;
  const open = () => (opened ??= openDevice());
  let ranNatively = false;
  const runner = withJsFallback('gpu', () => (ranNatively ? RAN_HERE : {}), {
    guess: (kernel, dtype) => RULES[kernel] !== undefined && dtype === 'float32' && open().device !== null,
    header: () => `qgrad gpu backend (${open().info.message}):`,
    footer: () => {
      const m = backend.deviceMemory();
      return [`  ${m.textures} textures (${m.elements} elements) on the device at exit`];
    },
  });
  const warned = new Set<string>();
  const warnOnce = (kernel: KernelName, dtype: DType, why: string) => {
    const key = `${kernel}/${dtype}`;
    if (warned.has(key)) return;
    warned.add(key);
    console.warn(`qgrad gpu backend: '${kernel}' (${dtype}) runs on the js fallback: ${why}; its operands are read back from the device and its result written back`);
  };
  let bytes = 0;
  let buffers = 0;

  /** A host view of an operand (device buffers read back). */
  const host = (a: GpuArg): KernelArg<TypedArray> => (a.data instanceof GpuBuffer ? { ...a, data: hostValues(a.data) } : (a as KernelArg<TypedArray>));

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
    /** Blocks until the device has the values (WebGL readPixels); webgpu would need `read`. */
    readSync(data, _dtype, size) {
      if (!(data instanceof GpuBuffer)) return data.subarray(0, size);
      const h = hostValues(data);
      return size === h.length ? h : h.subarray(0, size);
    },
    read: async (data, dtype, size) => backend.readSync(data, dtype, size),
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
    run(kernel, inputs, out, params) {
      const device = open().device;
      const rule = RULES[kernel] as GpuRule<typeof kernel> | undefined;
      const dtype = inputs[0]?.dtype ?? out.dtype;
      if (device && rule && DEVICE_DTYPES.includes(out.dtype)) {
        const call = new Call(device);
        let done = false;
        try {
          done = rule(call, inputs as GpuArg[], out as GpuArg, params);
        } finally {
          call.done();
        }
        if (done) {
          ranNatively = true;
          runner.run(kernel, inputs as never, out as never, params);
          ranNatively = false;
          return;
        }
      }
      warnOnce(kernel, dtype, !device ? open().info.message : !rule ? 'the gpu backend has no kernel for it yet' : dtype !== 'float32' ? 'gpu kernels compute in float32' : 'this layout or size is not handled on the gpu');
      const o = out as GpuArg;
      // a partial write of a device buffer must keep the rest: read it back first
      const hostOut = host(o);
      runner.run(kernel, inputs.map((a) => host(a as GpuArg)) as never, hostOut as never, params);
      if (o.data instanceof GpuBuffer) hostWritten(device, o.data);
      // adamStep updates its state inputs in place too
      if (kernel === 'adamStep') for (const a of inputs) if ((a as GpuArg).data instanceof GpuBuffer) hostWritten(device, (a as GpuArg).data as GpuBuffer);
    },
    ranOn: runner.ranOn,
    stats: runner.stats,
    sync: async () => {},
    dispose() {
      opened?.device?.dispose();
      opened = null;
    },
  };
  return backend;
}

let instance: GpuBackend | null = null;

/** The process-wide gpu backend (its device opens on first use). */
export function gpuBackend(): GpuBackend {
  return (instance ??= createGpuBackend());
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
  create: () => createGpuBackend() as Backend,
};

