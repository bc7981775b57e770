/**
 * @file safetensors I/O: the file format of Hugging Face's `safetensors` (8-byte little-endian
 * header length, JSON header, one flat byte buffer), in memory and on disk with atomic writes.
 * Reads F32/F64/I32/I8/U8 bit-exactly and F16/BF16 into float32; writes the dtypes qgrad has.
 * Records keyed by file names are built on null-prototype objects, so `__proto__` is a name.
 */
import type { DType, TypedArray } from '@qgrad/kernels';
import { fromTypedArray } from './ops/creation.js';
import type { Tensor } from './tensor.js';

/** The safetensors dtype names qgrad reads. */
export type SafetensorsDType = 'F32' | 'F64' | 'I32' | 'I8' | 'U8' | 'F16' | 'BF16';

const WRITE_NAME: Record<DType, SafetensorsDType> = { float32: 'F32', float64: 'F64', int32: 'I32', int8: 'I8', uint8: 'U8' };
// bytes per element and the qgrad dtype each file dtype becomes on load
const READ: Record<SafetensorsDType, { bytes: number; dtype: DType }> = {
  F32: { bytes: 4, dtype: 'float32' },
  F64: { bytes: 8, dtype: 'float64' },
  I32: { bytes: 4, dtype: 'int32' },
  I8: { bytes: 1, dtype: 'int8' },
  U8: { bytes: 1, dtype: 'uint8' },
  F16: { bytes: 2, dtype: 'float32' },
  BF16: { bytes: 2, dtype: 'float32' },
};
/** The reference implementation refuses headers above 100 MB; so do we. */
const MAX_HEADER = 100_000_000;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A header entry as it appears in the file. */
interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * An empty record with no prototype: assigning the key `__proto__` (a legal tensor name) to a
 * plain `{}` would replace its prototype and drop the entry instead of storing it.
 */
const record = <T>(): Record<string, T> => Object.create(null) as Record<string, T>;

/**
 * Encodes tensors (and optional string metadata) as safetensors bytes. Tensors are laid out
 * by element size, largest first, then by name, so each one is naturally aligned; the header is
 * padded with spaces so the data buffer starts at a multiple of 8 bytes, as the spec asks.
 * @example const bytes = serializeSafetensors({ w: ones([2, 2]) }, { step: '10' });
 */
export function serializeSafetensors(tensors: Record<string, Tensor>, metadata?: Record<string, string>): Uint8Array {
  const names = Object.keys(tensors);
  for (const n of names) if (n === '__metadata__') throw new Error("safetensors: '__metadata__' is reserved and cannot name a tensor");
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') throw new Error(`safetensors: metadata values must be strings; '${k}' is ${typeof v}`);
  }
  const size = (n: string) => READ[WRITE_NAME[tensors[n]!.dtype]].bytes;
  names.sort((a, b) => size(b) - size(a) || (a < b ? -1 : a > b ? 1 : 0));
  const header = record<unknown>();
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  const payloads: Uint8Array[] = [];
  let offset = 0;
  for (const n of names) {
    const t = tensors[n]!;
    const data = t.dataSync();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    payloads.push(LITTLE_ENDIAN ? bytes : swapBytes(bytes, data.BYTES_PER_ELEMENT));
    header[n] = { dtype: WRITE_NAME[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let pos = 8 + json.length;
  for (const p of payloads) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/**
 * Decodes safetensors bytes. Every structural problem raises an error naming the byte offset
 * where it sits. F16 and BF16 tensors come back as float32.
 * @example const { tensors, metadata } = deserializeSafetensors(bytes);
 */
export function deserializeSafetensors(bytes: Uint8Array): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  if (bytes.length < 8) throw new Error(`safetensors: file of ${bytes.length} bytes is too short for the 8-byte header length at byte 0`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  if (n > MAX_HEADER) throw new Error(`safetensors: header length ${n} at byte 0 exceeds the 100000000-byte limit`);
  if (8 + n > bytes.length) throw new Error(`safetensors: header length ${n} at byte 0 exceeds file size ${bytes.length}`);
  if (n < 2 || bytes[8] !== 0x7b) throw new Error(`safetensors: header at byte 8 must be a JSON object starting with '{'`);
  let header: Record<string, unknown>;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
    header = JSON.parse(text);
  } catch (e) {
    throw new Error(`safetensors: header at bytes 8..${8 + n} is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new Error('safetensors: header at byte 8 is not a JSON object');
  const where = `the header at bytes 8..${8 + n}`;
  const twice = repeatedKey(text);
  if (twice !== null) {
    const [top, ...rest] = twice;
    const named = (k: string) => (k === '__metadata__' ? k : `tensor '${k}'`);
    throw new Error(`safetensors: ${rest.length ? `key '${rest.at(-1)}' in ${named(top!)}` : named(top!)} appears more than once in ${where}`);
  }
  const base = 8 + n;
  const bufferLength = bytes.length - base;
  const metadata = record<string>();
  const entries: [string, Entry][] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        throw new Error(`safetensors: __metadata__ in ${where} must be an object of strings, got ${Array.isArray(raw) ? 'an array' : raw === null ? 'null' : typeof raw}`);
      }
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== 'string') throw new Error(`safetensors: __metadata__ value '${k}' in the header at byte 8 must be a string`);
        metadata[k] = v;
      }
      continue;
    }
    entries.push([name, checkEntry(name, raw)]);
  }
  // the spec forbids holes and overlaps: sorted by start, the ranges must tile the buffer
  entries.sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0]);
  let expectedStart = 0;
  const tensors = record<Tensor>();
  for (const [name, e] of entries) {
    const [begin, end] = e.data_offsets;
    const at = base + begin;
    const info = READ[e.dtype as SafetensorsDType];
    if (!info) throw new Error(`safetensors: tensor '${name}' at byte ${at} has unsupported dtype ${e.dtype} (qgrad reads ${Object.keys(READ).join(', ')})`);
    const count = e.shape.reduce((a, b) => a * b, 1);
    const need = count * info.bytes;
    if (end - begin !== need) {
      throw new Error(`safetensors: tensor '${name}' data_offsets [${begin}, ${end}] at byte ${at} do not match shape ${fmt(e.shape)} ${e.dtype} (${need} bytes)`);
    }
    if (begin !== expectedStart) {
      throw new Error(`safetensors: tensor '${name}' data_offsets [${begin}, ${end}] at byte ${at} ${begin > expectedStart ? `leave a hole after byte ${base + expectedStart}` : `overlap the previous tensor, which ends at byte ${base + expectedStart}`}`);
    }
    if (end > bufferLength) {
      throw new Error(`safetensors: tensor '${name}' data_offsets [${begin}, ${end}] at byte ${at} run past the end of the file (byte ${bytes.length}; truncated?)`);
    }
    expectedStart = end;
    tensors[name] = fromTypedArray(decode(bytes.subarray(at, base + end), e.dtype as SafetensorsDType, count), e.shape, info.dtype);
  }
  if (expectedStart !== bufferLength) {
    throw new Error(`safetensors: ${bufferLength - expectedStart} trailing bytes at byte ${base + expectedStart} are not covered by any tensor`);
  }
  return { tensors, metadata };
}

/**
 * The first key that occurs twice within one object of a JSON text, as the path of keys from
 * the top level down to it (decoded), or null. JSON.parse keeps the last of equal keys without
 * a word, so a tensor, a metadata value or a dtype would load differently from a reader that
 * keeps the first. The text has already parsed, so a scan of strings and brackets suffices.
 */
function repeatedKey(json: string): string[] | null {
  // per open bracket: the keys seen so far (null for an array) and the latest key (none in an array)
  const seen: (Set<string> | null)[] = [];
  const path: (string | undefined)[] = [];
  let keyNext = false; // the next string is a key (after '{' or an object's ',') rather than a value
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22) { // '"': skip the string, checking it when it is a key
      const start = i;
      while (json.charCodeAt(++i) !== 0x22) if (json.charCodeAt(i) === 0x5c) i++;
      if (!keyNext) continue;
      const raw = json.slice(start + 1, i);
      const key = raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw; // escapes: "\u0077" is "w"
      const keys = seen.at(-1)!;
      path[seen.length - 1] = key;
      if (keys.has(key)) return path.filter((k) => k !== undefined) as string[];
      keys.add(key);
      keyNext = false;
    } else if (c === 0x7b || c === 0x5b) {
      seen.push(c === 0x7b ? new Set() : null);
      path[seen.length - 1] = undefined;
      keyNext = c === 0x7b;
    } else if (c === 0x7d || c === 0x5d) {
      seen.pop();
      path.length = seen.length;
    } else if (c === 0x2c) keyNext = seen.at(-1) != null;
  }
  return null;
}

function checkEntry(name: string, raw: unknown): Entry {
  const e = raw as Partial<Entry> | null;
  const bad = (what: string) => new Error(`safetensors: tensor '${name}' in the header at byte 8 ${what}`);
  if (e === null || typeof e !== 'object') throw bad('is not an object');
  if (typeof e.dtype !== 'string') throw bad('has no dtype string');
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`has an invalid shape ${JSON.stringify(e.shape)}`);
  const o = e.data_offsets;
  if (!Array.isArray(o) || o.length !== 2 || !o.every((d) => Number.isSafeInteger(d) && d >= 0) || o[1]! < o[0]!) throw bad(`has invalid data_offsets ${JSON.stringify(o)}`);
  return e as Entry;
}

/** Copies little-endian bytes into a fresh typed array of the loaded dtype. */
function decode(src: Uint8Array, dtype: SafetensorsDType, count: number): TypedArray {
  if (dtype === 'F16' || dtype === 'BF16') {
    const out = new Float32Array(count);
    const v = new DataView(src.buffer, src.byteOffset, src.byteLength);
    for (let i = 0; i < count; i++) {
      const h = v.getUint16(2 * i, true);
      out[i] = dtype === 'BF16' ? bf16ToFloat(h) : f16ToFloat(h);
    }
    return out;
  }
  const info = READ[dtype];
  const copy = new Uint8Array(src.length); // copying also fixes the alignment for the typed view
  copy.set(LITTLE_ENDIAN ? src : swapBytes(src, info.bytes));
  const Ctor = { F32: Float32Array, F64: Float64Array, I32: Int32Array, I8: Int8Array, U8: Uint8Array }[dtype];
  return new Ctor(copy.buffer, 0, count);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * bfloat16 is the top half of a float32.
 * @example bf16ToFloat(0x3f80); // 1
 */
export function bf16ToFloat(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

/**
 * IEEE binary16 → number (subnormals, ±Inf and NaN included).
 * @example f16ToFloat(0x3c00); // 1
 */
export function f16ToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function swapBytes(src: Uint8Array, width: number): Uint8Array {
  const out = new Uint8Array(src.length);
  for (let i = 0; i < src.length; i += width) for (let j = 0; j < width; j++) out[i + j] = src[i + width - 1 - j]!;
  return out;
}

// ---------------------------------------------------------------- files (Node only)
interface Fs {
  readFileSync(path: string): Uint8Array;
  openSync(path: string, flags: string): number;
  writeSync(fd: number, data: Uint8Array): number;
  fsyncSync(fd: number): void;
  closeSync(fd: number): void;
  renameSync(from: string, to: string): void;
  rmSync(path: string, opts?: { force?: boolean }): void;
  readdirSync(path: string): string[];
}

interface Proc {
  pid?: number;
  kill?(pid: number, signal: number): void;
  getBuiltinModule?: (m: string) => unknown;
}
const proc = (): Proc | undefined => (globalThis as { process?: Proc }).process;

// resolved lazily so that importing @qgrad/core stays free of Node built-ins in browsers
function nodeFs(op: string): Fs {
  const fs = proc()?.getBuiltinModule?.('node:fs') as Fs | undefined;
  if (!fs) throw new Error(`${op}: file access needs Node.js ≥ 20.16; in a browser use serializeSafetensors/deserializeSafetensors on bytes`);
  return fs;
}

/** Whether `pid` names a running process (signal 0 only asks; EPERM means it exists but is not ours). */
function alive(pid: number): boolean {
  const p = proc();
  if (!p?.kill || pid <= 0) return true; // cannot tell: keep the file
  try {
    p.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code !== 'ESRCH';
  }
}

/**
 * Deletes `<path>.tmp-<pid>-<tag>` files that a save killed mid-write left beside `path`: those
 * of a dead pid, and this process's own, since a save is synchronous and so none of ours is
 * being written now (such a file had a dead writer whose pid we reuse; a worker thread's save of
 * the same target, racing, would fail loudly at its rename). Another live process's temporary
 * may be a save in progress, so it stays. Best effort: a file that cannot be listed or removed
 * (read-only directory, a racing cleaner) is left for next time rather than failing the call.
 */
function removeStaleTemporaries(fs: Fs, path: string): void {
  const cut = Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\'));
  const dir = cut < 0 ? '.' : path.slice(0, cut + 1);
  const prefix = `${path.slice(cut + 1)}.tmp-`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  const self = proc()?.pid;
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(\d+)-[0-9a-z]+$/.exec(name.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    const tmp = cut < 0 ? name : dir + name;
    if (pid !== self && alive(pid)) continue;
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      // left for the next save or load
    }
  }
}

/**
 * Replaces `path` by `data` (bytes, or text written as UTF-8) atomically: a temporary file
 * `<path>.tmp-<pid>-<tag>` in the same directory is written and fsynced, then renamed over
 * `path`, so a crash leaves the old file or the new one, never half. If any step fails the
 * temporary is removed and the error rethrown; temporaries that earlier, killed writes of `path`
 * left behind are removed first. Node only.
 * @example writeFileAtomic('runs/x/summary.json', JSON.stringify(summary));
 */
export function writeFileAtomic(path: string, data: Uint8Array | string, op = 'writeFileAtomic'): void {
  const fs = nodeFs(op);
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  removeStaleTemporaries(fs, path);
  const tmp = `${path}.tmp-${proc()?.pid ?? 0}-${Math.random().toString(36).slice(2, 10)}`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      for (let written = 0; written < bytes.length; ) written += fs.writeSync(fd, bytes.subarray(written));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Writes tensors to a .safetensors file atomically (`writeFileAtomic`), so a crash never leaves
 * half a file.
 * @example saveSafetensors('model.safetensors', model.stateDict(), { epoch: '3' });
 */
export function saveSafetensors(path: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata), 'saveSafetensors');
}

/**
 * Reads a .safetensors file into tensors keyed by name (F16/BF16 become float32). Like a save,
 * it removes temporaries that killed saves of `path` left behind.
 * @example model.loadStateDict(loadSafetensors('model.safetensors'));
 */
export function loadSafetensors(path: string): Record<string, Tensor> {
  return loadSafetensorsWithMetadata(path).tensors;
}

/**
 * Like `loadSafetensors`, also returning the header's `__metadata__` strings.
 * @example const { tensors, metadata } = loadSafetensorsWithMetadata('model.safetensors');
 */
export function loadSafetensorsWithMetadata(path: string): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const fs = nodeFs('loadSafetensors');
  removeStaleTemporaries(fs, path);
  const bytes = fs.readFileSync(path);
  try {
    return deserializeSafetensors(bytes);
  } catch (e) {
    (e as Error).message = `${(e as Error).message} (in ${path})`;
    throw e;
  }
}
