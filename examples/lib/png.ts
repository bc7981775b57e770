/**
 * @file Image grids as PNG (pngjs): N grayscale images [N, 1, H, W] or [N, H, W] tiled into
 * rows of `cols`, with a 1-pixel gap, values mapped from [lo, hi] to 0–255.
 */
import { writeFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import type { Tensor } from '@qgrad/core';

export function saveImageGrid(path: string, images: Tensor, opts: { cols?: number; lo?: number; hi?: number; scale?: number } = {}): void {
  const [n, h, w] = images.ndim === 4 ? [images.shape[0]!, images.shape[2]!, images.shape[3]!] : (images.shape as [number, number, number]);
  if (images.ndim === 4 && images.shape[1] !== 1) throw new Error(`saveImageGrid: expects grayscale images [N, 1, H, W], got [${images.shape.join(', ')}]`);
  const cols = opts.cols ?? Math.ceil(Math.sqrt(n));
  const rows = Math.ceil(n / cols);
  const s = opts.scale ?? 2;
  const lo = opts.lo ?? 0;
  const hi = opts.hi ?? 1;
  const gap = 1;
  const W = cols * (w * s + gap) + gap;
  const H = rows * (h * s + gap) + gap;
  const png = new PNG({ width: W, height: H });
  png.data.fill(64); // dark grey gaps
  for (let i = 3; i < png.data.length; i += 4) png.data[i] = 255;
  const d = images.dataSync();
  for (let k = 0; k < n; k++) {
    const ox = gap + (k % cols) * (w * s + gap);
    const oy = gap + Math.floor(k / cols) * (h * s + gap);
    for (let y = 0; y < h * s; y++) {
      for (let x = 0; x < w * s; x++) {
        const v = d[k * h * w + Math.floor(y / s) * w + Math.floor(x / s)]!;
        const g = Math.round(Math.min(1, Math.max(0, (v - lo) / (hi - lo))) * 255);
        const o = ((oy + y) * W + ox + x) * 4;
        png.data[o] = png.data[o + 1] = png.data[o + 2] = g;
      }
    }
  }
  writeFileSync(path, PNG.sync.write(png));
}
