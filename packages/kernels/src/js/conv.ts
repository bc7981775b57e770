/**
 * @file js reference im2col / col2im, the two kernels behind conv2d, its backward passes and
 * pooling (conv = im2col + matmul; its adjoint is col2im).
 */
import type { Kernel } from '../backend.js';
import type { Im2colParams, TypedArray } from '../names.js';

export function convOutSize(size: number, k: number, s: number, p: number, d: number): number {
  return Math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1;
}

function geometry(shape: readonly number[], p: Im2colParams) {
  const [N, C, H, W] = shape as [number, number, number, number];
  const [kh, kw] = p.kernel;
  const oh = convOutSize(H, kh, p.stride[0], p.padding[0], p.dilation[0]);
  const ow = convOutSize(W, kw, p.stride[1], p.padding[1], p.dilation[1]);
  return { N, C, H, W, kh, kw, oh, ow };
}

export const im2col: Kernel<'im2col', TypedArray> = ([x], out, p) => {
  const { N, C, H, W, kh, kw, oh, ow } = geometry(x!.shape, p);
  const [sn, sc, sh, sw] = x!.strides as [number, number, number, number];
  const xd = x!.data;
  const od = out.data;
  const L = oh * ow;
  let o = out.offset;
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++)
          for (let y = 0; y < oh; y++) {
            const h = y * p.stride[0] - p.padding[0] + i * p.dilation[0];
            for (let z = 0; z < ow; z++, o++) {
              const w = z * p.stride[1] - p.padding[1] + j * p.dilation[1];
              od[o] = h >= 0 && h < H && w >= 0 && w < W ? xd[x!.offset + n * sn + c * sc + h * sh + w * sw]! : p.padValue;
            }
          }
  void L;
};

export const col2im: Kernel<'col2im', TypedArray> = ([cols], out, p) => {
  const { N, C, H, W, kh, kw, oh, ow } = geometry(out.shape, p);
  const [sn, sr, sl] = cols!.strides as [number, number, number];
  const cd = cols!.data;
  const od = out.data;
  od.fill(0, out.offset, out.offset + N * C * H * W);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++) {
          const r = (c * kh + i) * kw + j;
          for (let y = 0; y < oh; y++) {
            const h = y * p.stride[0] - p.padding[0] + i * p.dilation[0];
            if (h < 0 || h >= H) continue;
            for (let z = 0; z < ow; z++) {
              const w = z * p.stride[1] - p.padding[1] + j * p.dilation[1];
              if (w < 0 || w >= W) continue;
              od[out.offset + ((n * C + c) * H + h) * W + w] += cd[cols!.offset + n * sn + r * sr + (y * ow + z) * sl]!;
            }
          }
        }
};
