/**
 * @file Granularity: which elements share one scale. Every granularity reshapes x to a view whose
 * last axis holds the elements of one scale ([groups, groupSize], [..., n/g, g]) and back.
 */
import type { Tensor } from '@qgrad/core';

/** 'tensor': one scale; 'token': one per row of the last axis; channel: one per index of `axis`; group: blocks of `size` along `axis` (default last). */
export type Granularity = 'tensor' | 'token' | { channel: number } | { group: number; axis?: number };

export interface Grouped {
  /** x rearranged so the last axis runs over the elements that share a scale. */
  view: Tensor;
  /** Elements per scale. */
  groupSize: number;
  /** Maps a tensor shaped like `view` back to x's shape and layout. */
  restore(t: Tensor): Tensor;
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

function normAxis(op: string, a: number, ndim: number): number {
  if (!Number.isInteger(a) || a < -ndim || a >= ndim) throw new Error(`${op}: axis ${a} is out of range for a tensor of ${ndim} dims`);
  return a < 0 ? a + ndim : a;
}

/**
 * Reshapes x for `g`: the scale of each group then has shape `view.shape` with the last dim 1.
 * @example toGroups(randn([4, 8]), { group: 4 }).view.shape; // [4, 2, 4]
 */
export function toGroups(x: Tensor, g: Granularity = 'tensor'): Grouped {
  if (g === 'tensor') return { view: x.reshape([1, x.numel()]), groupSize: x.numel(), restore: (t) => t.reshape(x.shape) };
  if (x.ndim === 0) throw new Error(`toGroups: granularity ${JSON.stringify(g)} needs a tensor with at least one dim`);
  if (g === 'token') {
    const d = x.shape[x.ndim - 1]!;
    return { view: x.reshape([-1, d]), groupSize: d, restore: (t) => t.reshape(x.shape) };
  }
  const isChannel = 'channel' in g;
  const a = normAxis('toGroups', isChannel ? g.channel : (g.axis ?? -1), x.ndim);
  const rest = x.shape.map((_, i) => i).filter((i) => i !== a);
  const perm = isChannel ? [a, ...rest] : [...rest, a];
  const inv = perm.map((_, i) => perm.indexOf(i));
  const moved = x.permute(perm);
  const movedShape = [...moved.shape];
  const restore = (t: Tensor) => t.reshape(movedShape).permute(inv);
  if (isChannel) {
    const c = x.shape[a]!;
    return { view: moved.reshape([c, x.numel() / c]), groupSize: x.numel() / c, restore };
  }
  const n = x.shape[a]!;
  const size = g.group;
  if (!Number.isInteger(size) || size < 1 || n % size !== 0) throw new Error(`toGroups: axis ${a} of size ${n} (shape ${fmt(x.shape)}) does not split into groups of ${size}`);
  return { view: moved.reshape([...movedShape.slice(0, -1), n / size, size]), groupSize: size, restore };
}
