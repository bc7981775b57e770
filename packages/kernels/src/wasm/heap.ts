/**
 * @file The wasm backend's memory: one shared WebAssembly.Memory holding every tensor of the
 * backend (and the kernels' scratch), an allocator over it (JS-side bookkeeping: a sorted free
 * list with coalescing, best fit, 16-byte blocks for SIMD), growth in large steps, and the
 * residency test kernels use to read and write operands in place. Growing a shared memory makes
 * a new SharedArrayBuffer object that aliases the same bytes, so views made before a grow stay
 * valid (heap.test.ts checks this): a tensor's storage is an ordinary typed array.
 */
import { ARRAY_TYPES, type DType, type TypedArray } from '../names.js';

export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  grow(pages: number): number;
}
interface MemoryCtor {
  new (d: { initial: number; maximum?: number; shared?: boolean }): WasmMemory;
}

export const PAGE = 65536;
/** Control and argument blocks of the thread pool and kernels live below this address. */
export const HEAP_BASE = 4096;
/** Keeps every address below 2³¹ so the generated code's signed i32 arithmetic on pointers is safe. */
export const MAX_PAGES = 32767;
export const MAX_BYTES = MAX_PAGES * PAGE;
const ALIGN = 16;
/** Grow by at least this much (or half the memory): a grow costs a syscall and a new buffer object. */
const MIN_GROW_BYTES = 16 << 20;

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** A memory and the allocator over it; shared memories only hold tensors (see `resident`). */
export class Heap {
  readonly memory: WasmMemory;
  readonly shared: boolean;
  /** Every buffer object this memory has had: a view over one of them is in this heap. */
  readonly #buffers = new WeakSet<ArrayBuffer | SharedArrayBuffer>();
  #buffer: ArrayBuffer | SharedArrayBuffer;
  /** Free ranges [start, end), sorted by start, never adjacent (coalesced). */
  #free: { start: number; end: number }[] = [];
  /** Live blocks: start → size in bytes. */
  readonly #live = new Map<number, number>();
  #inUse = 0;
  /** Called after each grow (the engine re-makes its whole-memory views then, not inside a kernel). */
  readonly onGrow = new Set<() => void>();

  /** Bytes this heap may grow to (MAX_BYTES, or less where a caller caps it). */
  readonly maxBytes: number;

  constructor(Memory: MemoryCtor, shared: boolean, initialPages = 16, maxBytes = MAX_BYTES) {
    this.maxBytes = Math.min(MAX_BYTES, maxBytes);
    this.memory = new Memory({ initial: initialPages, maximum: MAX_PAGES, shared });
    this.shared = shared;
    this.#buffer = this.memory.buffer;
    this.#buffers.add(this.#buffer);
    this.#free.push({ start: HEAP_BASE, end: this.#buffer.byteLength });
  }

  /** The memory's current buffer (a new object after each grow). */
  get buffer(): ArrayBuffer | SharedArrayBuffer {
    return this.#buffer;
  }

  /** True when `view` is a view of this memory (a tensor of this backend, or a view of one). */
  resident(view: ArrayBufferView): boolean {
    return this.#buffers.has(view.buffer as ArrayBuffer);
  }

  /** Bytes in live blocks, and how many. */
  usage(): { bytes: number; buffers: number } {
    return { bytes: this.#inUse, buffers: this.#live.size };
  }

  /**
   * Address of a new block of at least `bytes` (16-byte aligned), growing the memory when no free
   * range fits. Throws a RangeError naming the request and the limit, before changing anything,
   * when it cannot fit (`what` describes the request, e.g. '1000000 float32 elements').
   */
  allocBytes(bytes: number, what = `${bytes} bytes`): number {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    let i = this.#bestFit(size);
    if (i < 0) {
      const last = this.#free[this.#free.length - 1];
      const top = this.#buffer.byteLength;
      // the free range touching the end of memory counts towards the request
      const tail = last && last.end === top ? last.end - last.start : 0;
      const need = size - tail;
      if (!Number.isFinite(size) || top + need > this.maxBytes) {
        throw new RangeError(
          `wasm backend: cannot allocate ${what} (${mib(size)}): ${mib(this.#inUse)} in use in ${this.#live.size} buffers, and this wasm memory is limited to ${mib(this.maxBytes)}${this.maxBytes === MAX_BYTES ? ' (2 GiB: addresses stay below 2^31)' : ''}; free tensors (dispose, tidy) or use smaller ones`,
        );
      }
      const grow = Math.min(this.maxBytes - top, Math.max(need, top / 2, MIN_GROW_BYTES));
      this.#grow(Math.ceil(grow / PAGE));
      i = this.#bestFit(size);
    }
    const r = this.#free[i]!;
    const start = r.start;
    if (r.end - r.start === size) this.#free.splice(i, 1);
    else r.start += size;
    this.#live.set(start, size);
    this.#inUse += size;
    return start;
  }

  /** Returns the block at `start` to the free list; throws on a double free or a foreign address. */
  freeBytes(start: number): void {
    const size = this.#live.get(start);
    if (size === undefined) throw new Error(`wasm backend: free of address ${start}, which is not a live block (double free, or not a buffer alloc returned)`);
    this.#live.delete(start);
    this.#inUse -= size;
    const end = start + size;
    // binary search for the first free range after the block
    let lo = 0;
    let hi = this.#free.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#free[mid]!.start < start) lo = mid + 1;
      else hi = mid;
    }
    const prev = this.#free[lo - 1];
    const next = this.#free[lo];
    if (prev && prev.end === start) {
      prev.end = end;
      if (next && next.start === end) {
        prev.end = next.end;
        this.#free.splice(lo, 1);
      }
    } else if (next && next.start === end) next.start = start;
    else this.#free.splice(lo, 0, { start, end });
  }

  /** A zeroed typed array of `size` elements in a new block. */
  alloc(dtype: DType, size: number): TypedArray {
    const e = ARRAY_TYPES[dtype].BYTES_PER_ELEMENT;
    const start = this.allocBytes(size * e, `${size} ${dtype} elements`);
    const view = new ARRAY_TYPES[dtype](this.#buffer as ArrayBuffer, start, size);
    view.fill(0);
    return view;
  }

  /** Frees the block a view from `alloc` covers; a foreign array or a view into a block is an error. */
  free(view: TypedArray): void {
    if (!this.resident(view)) throw new Error(`wasm backend: free of a ${view.constructor.name} that is not in this backend's memory (a foreign array)`);
    this.freeBytes(view.byteOffset);
  }

  /** Live blocks and free ranges, for tests. */
  blocks(): { live: [number, number][]; free: [number, number][] } {
    return { live: [...this.#live].map(([s, n]) => [s, s + n]), free: this.#free.map((r) => [r.start, r.end]) };
  }

  #bestFit(size: number): number {
    let best = -1;
    let bestSize = Infinity;
    for (let i = 0; i < this.#free.length; i++) {
      const n = this.#free[i]!.end - this.#free[i]!.start;
      if (n >= size && n < bestSize) {
        best = i;
        bestSize = n;
        if (n === size) break;
      }
    }
    return best;
  }

  #grow(pages: number): void {
    const top = this.#buffer.byteLength;
    this.memory.grow(pages);
    this.#buffer = this.memory.buffer;
    this.#buffers.add(this.#buffer);
    const end = this.#buffer.byteLength;
    const last = this.#free[this.#free.length - 1];
    if (last && last.end === top) last.end = end;
    else this.#free.push({ start: top, end });
    for (const f of this.onGrow) f();
  }
}
