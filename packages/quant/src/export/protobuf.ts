/**
 * @file The protobuf wire format, as much as ONNX needs: a writer of varint, fixed and
 * length-delimited fields, and a bounds-checked reader of fields whose errors name the byte offset.
 * Message schemas live with their users (onnx.ts).
 */
import { ByteReader, ByteWriter } from './bytes.js';

/** Builds one message; nested messages are written by a callback into their own builder. */
export class ProtoWriter {
  readonly w = new ByteWriter();
  #varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v)); // negatives as two's complement, as protobuf encodes int64
    do {
      const byte = Number(x & 0x7fn);
      x >>= 7n;
      this.w.u8(x ? byte | 0x80 : byte);
    } while (x);
  }
  #tag(field: number, wire: number): void {
    this.#varint((field << 3) | wire);
  }
  int(field: number, v: number): this {
    this.#tag(field, 0);
    this.#varint(v);
    return this;
  }
  float(field: number, v: number): this {
    this.#tag(field, 5);
    this.w.f32(v);
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.#tag(field, 2);
    this.#varint(b.length);
    this.w.bytes(b);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  message(field: number, build: (m: ProtoWriter) => void): this {
    const m = new ProtoWriter();
    build(m);
    return this.bytes(field, m.finish());
  }
  finish(): Uint8Array {
    return this.w.finish();
  }
}

/** One field as read: varints and fixed values as numbers, length-delimited ones as a byte range. */
export interface ProtoField {
  field: number;
  wire: 0 | 1 | 2 | 5;
  /** Varint / fixed32 / fixed64 value (wire 0, 1, 5). */
  value: number;
  /** Absolute start of the payload (wire 2) and its length. */
  start: number;
  length: number;
  /** Where the field's tag sits. */
  at: number;
}

/**
 * The fields of the message occupying bytes [start, end) of `r`'s buffer. Lengths are checked
 * against the message's end before anything is sliced; groups (wire 3/4) are refused.
 */
export function readFields(r: ByteReader, start: number, end: number): ProtoField[] {
  const out: ProtoField[] = [];
  r.pos = start;
  const varint = (what: string): number => {
    const at = r.pos;
    let v = 0n;
    for (let i = 0; ; i++) {
      if (i >= 10) r.fail(`${what} is a varint longer than 10 bytes`, at);
      if (r.pos >= end) r.fail(`${what} runs past the end of its message (byte ${end})`, at);
      const b = r.bytes[r.pos++]!;
      v |= BigInt(b & 0x7f) << BigInt(7 * i);
      if (!(b & 0x80)) break;
    }
    const s = BigInt.asIntN(64, v);
    if (s > BigInt(Number.MAX_SAFE_INTEGER) || s < BigInt(Number.MIN_SAFE_INTEGER)) r.fail(`${what} ${s} is beyond a safe integer`, at);
    return Number(s);
  };
  while (r.pos < end) {
    const at = r.pos;
    const key = varint('field tag');
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (field < 1) r.fail(`field number ${field} is invalid`, at);
    if (wire === 0) out.push({ field, wire, value: varint(`field ${field}`), start: 0, length: 0, at });
    else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      if (r.pos + n > end) r.fail(`field ${field} (${n} bytes) runs past the end of its message (byte ${end})`, at);
      const value = wire === 5 ? r.view.getFloat32(r.pos, true) : r.view.getFloat64(r.pos, true);
      r.pos += n;
      out.push({ field, wire, value, start: 0, length: 0, at });
    } else if (wire === 2) {
      const length = varint(`length of field ${field}`);
      if (length < 0 || r.pos + length > end) r.fail(`field ${field} declares ${length} bytes, past the end of its message (byte ${end})`, at);
      out.push({ field, wire, value: 0, start: r.pos, length, at });
      r.pos += length;
    } else r.fail(`field ${field} has wire type ${wire}, which ONNX does not use`, at);
  }
  return out;
}
