/**
 * @file Granularity, the one type for which elements share one scale: every granularity views x
 * as a tensor whose last axis holds the elements of one scale, and back. Weight quantizers apply
 * it to the weight as a matrix [out, in·…] (so groups run along a conv filter's flattened inputs).
 */
import type { Tensor } from '@qgrad/core';

/**
 * 'tensor': one scale; 'channel' ≡ { channel: 0 } (a weight's output rows); { channel: a }: one
 * per index of axis a; 'token': one per row of the last axis; { group: g, axis? }: runs of g
 * along an axis (default last); { block: b }: runs of b of the flattened tensor (NF4's blocks).
 */
export type Granularity = 'tensor' | 'channel' | 'token' | { channel: number } | { group: number; axis?: number } | { block: number };

/** A tensor viewed so that each scale covers its last axis, and how to undo the view (see `grouped`). */
export interface Grouped {
  /** x rearranged so the last axis runs over the elements that share a scale. */
  view: Tensor;
  /** Elements per scale. */
  groupSize: number;
  /** Maps a tensor shaped like `view` back to x's shape and layout. */
  restore(t: Tensor): Tensor;
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

function normAxis(who: string, a: number, ndim: number): number {
  if (!Number.isInteger(a) || a < -ndim || a >= ndim) throw new Error(`${who}: axis ${a} is out of range for a tensor of ${ndim} dims`);
  return a < 0 ? a + ndim : a;
}

/**
 * Short text for summaries: 'tensor', 'channel', 'token', 'channel1', 'group32', 'block64'.
 * @example granularityName({ group: 32 }); // 'group32'
 */
export function granularityName(g: Granularity): string {
  if (typeof g === 'string') return g;
  if ('block' in g) return `block${g.block}`;
  if ('group' in g) return `group${g.group}${g.axis !== undefined && g.axis !== -1 ? `@${g.axis}` : ''}`;
  return g.channel === 0 ? 'channel' : `channel${g.channel}`;
}

/**
 * The shape of the grouped view of a tensor of `shape` (without building it); errors name `who`.
 * @example groupedShape([64, 128], { group: 32 }).groupSize; // 32
 */
export function groupedShape(shape: readonly number[], g: Granularity, who = 'toGroups'): { view: number[]; groupSize: number } {
  const n = shape.reduce((a, b) => a * b, 1);
  if (g === 'tensor') return { view: [1, n], groupSize: n };
  if (shape.length === 0) throw new Error(`${who}: granularity ${granularityName(g)} needs a tensor with at least one dim`);
  if (g === 'token') {
    const d = shape[shape.length - 1]!;
    return { view: [n / Math.max(d, 1), d], groupSize: d };
  }
  if (g === 'channel') return groupedShape(shape, { channel: 0 }, who);
  if ('block' in g) {
    if (!Number.isInteger(g.block) || g.block < 1 || n % g.block) throw new Error(`${who}: ${n} elements (shape ${fmt(shape)}) do not split into blocks of ${g.block}`);
    return { view: [n / g.block, g.block], groupSize: g.block };
  }
  if ('channel' in g) {
    const a = normAxis(who, g.channel, shape.length);
    const c = shape[a]!;
    return { view: [c, n / Math.max(c, 1)], groupSize: n / Math.max(c, 1) };
  }
  const a = normAxis(who, g.axis ?? -1, shape.length);
  const size = shape[a]!;
  if (!Number.isInteger(g.group) || g.group < 1 || size % g.group !== 0) throw new Error(`${who}: axis ${a} of size ${size} (shape ${fmt(shape)}) does not split into groups of ${g.group}`);
  const rest = shape.filter((_, i) => i !== a);
  return { view: [...rest, size / g.group, g.group], groupSize: g.group };
}

/**
 * Reshapes x for `g`: the scale of each group then has shape `view.shape` with the last dim 1.
 * @example toGroups(randn([4, 8]), { group: 4 }).view.shape; // [4, 2, 4]
 */
export function toGroups(x: Tensor, g: Granularity = 'tensor', who = 'toGroups'): Grouped {
  const { view, groupSize } = groupedShape(x.shape, g, who);
  if (g === 'tensor' || g === 'token' || (typeof g === 'object' && 'block' in g)) return { view: x.reshape(view), groupSize, restore: (t) => t.reshape(x.shape) };
  const isChannel = g === 'channel' || 'channel' in g;
  const a = normAxis(who, g === 'channel' ? 0 : 'channel' in g ? g.channel : (g.axis ?? -1), x.ndim);
  const rest = x.shape.map((_, i) => i).filter((i) => i !== a);
  const perm = isChannel ? [a, ...rest] : [...rest, a];
  const identity = perm.every((p, i) => p === i);
  const inv = perm.map((_, i) => perm.indexOf(i));
  const moved = identity ? x : x.permute(perm);
  const movedShape = [...moved.shape];
  const restore = (t: Tensor) => (identity ? t.reshape(x.shape) : t.reshape(movedShape).permute(inv));
  return { view: moved.reshape(view), groupSize, restore };
}
