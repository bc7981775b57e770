/**
 * @file gpu im2col and col2im, the two kernels behind conv2d and pooling (conv = im2col + the gpu
 * matmul). col2im is written as a gather: each image element sums the columns that read it, in
 * the js order (kernel row, then column), so there are no overlapping writes to combine.
 */
import { numel } from '../layout.js';
import type { Im2colParams } from '../names.js';
import { convOutSize } from '../js/conv.js';
import { type Call, type GpuArg, MAX_INDEX, coordinates, lit, store, writable } from './operands.js';

function geometry(shape: readonly number[], p: Im2colParams) {
  const [N, C, H, W] = shape as [number, number, number, number];
  const [kh, kw] = p.kernel;
  return { N, C, H, W, kh, kw, oh: convOutSize(H, kh, p.stride[0], p.padding[0], p.dilation[0]), ow: convOutSize(W, kw, p.stride[1], p.padding[1], p.dilation[1]) };
}

/** float32 in and out, `image` of rank 4 (x for im2col, out for col2im), a whole output of float-indexable size. */
function ok(input: GpuArg, image: GpuArg, out: GpuArg): boolean {
  const n = numel(out.shape);
  return input.dtype === 'float32' && out.dtype === 'float32' && image.shape.length === 4 && writable(out) && n > 0 && n <= MAX_INDEX;
}

export function im2colGpu(call: Call, [x]: readonly GpuArg[], out: GpuArg, p: Im2colParams): boolean {
  if (!ok(x!, x!, out)) return false;
  const { N, C, H, W, kh, kw, oh, ow } = geometry(x!.shape, p);
  const [sn, sc, sh, sw] = x!.strides as [number, number, number, number];
  // out [N, C·kh·kw, oh·ow] is row-major over (n, c, i, j, y, z)
  const source = `function (x) {
const t = this.thread.x;
${coordinates('t', [N, C, kh, kw, oh, ow], 'c')}
const h = c4 * ${lit(p.stride[0])} - ${lit(p.padding[0])} + c2 * ${lit(p.dilation[0])};
const w = c5 * ${lit(p.stride[1])} - ${lit(p.padding[1])} + c3 * ${lit(p.dilation[1])};
let v = ${lit(p.padValue)};
if (h >= 0.0 && h < ${lit(H)} && w >= 0.0 && w < ${lit(W)}) {
  v = x[${lit(x!.offset)} + c0 * ${lit(sn)} + c1 * ${lit(sc)} + h * ${lit(sh)} + w * ${lit(sw)}];
}
return v;
}`;
  store(call, out, call.run(source, numel(out.shape), [x!]));
  return true;
}

export function col2imGpu(call: Call, [cols]: readonly GpuArg[], out: GpuArg, p: Im2colParams): boolean {
  if (cols!.shape.length !== 3 || !ok(cols!, out, out)) return false;
  const { kh, kw, oh, ow } = geometry(out.shape, p);
  const [sn, sr, sl] = cols!.strides as [number, number, number];
  // image element (n, c, h, w) is read by kernel tap (i, j) at output position y = (h + pad − i·dil)/stride
  // when that is a whole number in [0, oh) (and likewise z)
  const source = `function (cols) {
const t = this.thread.x;
${coordinates('t', out.shape, 'c')}
let acc = 0.0;
for (let i = 0; i < ${kh}; i++) {
  const yy = c2 + ${lit(p.padding[0])} - i * ${lit(p.dilation[0])};
  const y = Math.floor((yy + 0.5) / ${lit(p.stride[0])});
  if (yy >= 0.0 && yy - y * ${lit(p.stride[0])} == 0.0 && y < ${lit(oh)}) {
    for (let j = 0; j < ${kw}; j++) {
      const zz = c3 + ${lit(p.padding[1])} - j * ${lit(p.dilation[1])};
      const z = Math.floor((zz + 0.5) / ${lit(p.stride[1])});
      if (zz >= 0.0 && zz - z * ${lit(p.stride[1])} == 0.0 && z < ${lit(ow)}) {
        const r = (c1 * ${lit(kh)} + i) * ${lit(kw)} + j;
        acc += cols[${lit(cols!.offset)} + c0 * ${lit(sn)} + r * ${lit(sr)} + (y * ${lit(ow)} + z) * ${lit(sl)}];
      }
    }
  }
}
return acc;
}`;
  store(call, out, call.run(source, numel(out.shape), [cols!]));
  return true;
}
