/**
 * @file Byte plumbing shared by the exporters and their readers: a growable little-endian writer,
 * a bounds-checked reader whose every failure names the byte offset, IEEE half conversion and
 * `node:fs` looked up at call time. No format knowledge lives here.
 */

/**
 * A malformed file: the message names the format and the byte offset where reading failed.
 * @example try { readGguf(bytes); } catch (e) { if (e instanceof FormatError) console.error(e.message); } // names the byte offset
 */
export class FormatError extends Error {
  constructor(readonly format: string, readonly offset: number, what: string) {
    super(`${format}: ${what} at byte ${offset}`);
    this.name = 'FormatError';
  }
}

/** Appends little-endian values to a buffer that doubles as it fills. */
export class ByteWriter {
  #buf = new Uint8Array(1024);
  #view = new DataView(this.#buf.buffer);
  length = 0;

  #room(n: number): void {
    if (this.length + n <= this.#buf.length) return;
    let cap = this.#buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
  /** Makes room for `n` bytes and returns where they go (read #view after this call: it may grow). */
  #claim(n: number): number {
    this.#room(n);
    this.length += n;
    return this.length - n;
  }
  u8(v: number): this {
    const at = this.#claim(1);
    this.#view.setUint8(at, v);
    return this;
  }
  u16(v: number): this {
    const at = this.#claim(2);
    this.#view.setUint16(at, v, true);
    return this;
  }
  u32(v: number): this {
    const at = this.#claim(4);
    this.#view.setUint32(at, v, true);
    return this;
  }
  i32(v: number): this {
    const at = this.#claim(4);
    this.#view.setInt32(at, v, true);
    return this;
  }
  u64(v: number | bigint): this {
    const at = this.#claim(8);
    this.#view.setBigUint64(at, BigInt(v), true);
    return this;
  }
  f32(v: number): this {
    const at = this.#claim(4);
    this.#view.setFloat32(at, v, true);
    return this;
  }
  bytes(b: Uint8Array): this {
    this.#room(b.length);
    this.#buf.set(b, this.length);
    this.length += b.length;
    return this;
  }
  /** Zero bytes up to the next multiple of `align`. */
  pad(align: number): this {
    const n = (align - (this.length % align)) % align;
    this.#room(n);
    this.#buf.fill(0, this.length, this.length + n);
    this.length += n;
    return this;
  }
  /** The bytes written so far (a copy the writer no longer touches). */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
}

/**
 * Reads little-endian values with a cursor; reading past the end (or any `fail`) throws a
 * FormatError naming the offset, so callers never index outside the file.
 */
export class ByteReader {
  readonly view: DataView;
  pos = 0;
  constructor(readonly bytes: Uint8Array, readonly format: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  fail(what: string, at = this.pos): never {
    throw new FormatError(this.format, at, what);
  }
  /** Throws unless `n` more bytes are there (`what` names the field). */
  need(n: number, what: string): void {
    if (!(n >= 0) || this.pos + n > this.bytes.length) this.fail(`${what} needs ${n} bytes but the file ends at byte ${this.bytes.length}`);
  }
  /** Checks `n` bytes are there, moves the cursor past them and returns where they start. */
  #claim(n: number, what: string): number {
    this.need(n, what);
    this.pos += n;
    return this.pos - n;
  }
  u8(what: string): number {
    return this.view.getUint8(this.#claim(1, what));
  }
  u16(what: string): number {
    return this.view.getUint16(this.#claim(2, what), true);
  }
  u32(what: string): number {
    return this.view.getUint32(this.#claim(4, what), true);
  }
  i32(what: string): number {
    return this.view.getInt32(this.#claim(4, what), true);
  }
  /** A u64 that must fit a safe integer (larger counts and offsets cannot be honest here). */
  u64(what: string): number {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} is too large`);
    this.pos += 8;
    return Number(v);
  }
  f32(what: string): number {
    return this.view.getFloat32(this.#claim(4, what), true);
  }
  take(n: number, what: string): Uint8Array {
    const at = this.#claim(n, what);
    return this.bytes.subarray(at, at + n);
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * float → IEEE binary16 bits, rounding to nearest even (overflow to ±Inf, NaN kept).
 * @example floatToHalf(1); // 0x3c00
 */
export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let man = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal
    man |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = man & ((1 << shift) - 1);
    let h = man >>> shift;
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (man >>> 13);
  const rest = man & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // a carry into the exponent is still right
  return sign | h;
}

/** IEEE binary16 bits → number (core's safetensors reader has it). */
export { f16ToFloat as halfToFloat } from '@qgrad/core';

/** A JSON value that must be an object (not null or an array). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The part of `node:fs` the exporters use. */
interface Fs {
  readFileSync(path: string): Uint8Array;
  writeFileSync(path: string, bytes: Uint8Array): void;
  mkdirSync(path: string, options: { recursive: true }): unknown;
}

/**
 * `node:fs` through `process.getBuiltinModule` at call time, so a browser bundle imports no `node:`
 * module; elsewhere an error saying `what` needs Node.js ≥ 20.16 (and `instead`, what to call there).
 */
export function nodeFs(what: string, instead = ''): Fs {
  const fs = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process?.getBuiltinModule?.('node:fs') as Fs | undefined;
  if (!fs) throw new Error(`${what}: file I/O needs Node.js ≥ 20.16${instead && `; ${instead}`}`);
  return fs;
}
