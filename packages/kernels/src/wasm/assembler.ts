/**
 * @file A small standalone WebAssembly bytecode emitter: LEB128, a module builder (types, one
 * imported memory, functions, exports) and a code builder with the scalar, SIMD (0xfd) and
 * relaxed-SIMD opcodes the wasm kernels use. It knows nothing about kernels.
 */

export const enum ValType {
  i32 = 0x7f,
  i64 = 0x7e,
  f32 = 0x7d,
  f64 = 0x7c,
  v128 = 0x7b,
}

export function uleb(out: number[], value: number): void {
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`uleb: ${value} is not a non-negative integer`);
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
}

export function sleb(out: number[], value: number | bigint): void {
  let v = BigInt(value);
  for (;;) {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    const done = (v === 0n && (byte & 0x40) === 0) || (v === -1n && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return;
  }
}

/** push(...src) without the argument-count limit of spreading large arrays. */
function append(dst: number[], src: readonly number[]): void {
  for (let i = 0; i < src.length; i++) dst.push(src[i]!);
}

function utf8(out: number[], s: string): void {
  const bytes = new TextEncoder().encode(s);
  uleb(out, bytes.length);
  for (const b of bytes) out.push(b);
}

/** Plain opcodes (one byte). */
export const Op = {
  unreachable: 0x00, nop: 0x01, block: 0x02, loop: 0x03, if: 0x04, else: 0x05, end: 0x0b,
  br: 0x0c, br_if: 0x0d, return: 0x0f, call: 0x10, drop: 0x1a, select: 0x1b,
  local_get: 0x20, local_set: 0x21, local_tee: 0x22,
  i32_load: 0x28, i64_load: 0x29, f32_load: 0x2a, f64_load: 0x2b, i32_load8_s: 0x2c, i32_load8_u: 0x2d,
  i32_store: 0x36, i64_store: 0x37, f32_store: 0x38, f64_store: 0x39, i32_store8: 0x3a, i32_store16: 0x3b,
  i32_const: 0x41, i64_const: 0x42, f32_const: 0x43, f64_const: 0x44,
  i32_eqz: 0x45, i32_eq: 0x46, i32_ne: 0x47, i32_lt_s: 0x48, i32_lt_u: 0x49, i32_gt_s: 0x4a,
  i32_gt_u: 0x4b, i32_le_s: 0x4c, i32_le_u: 0x4d, i32_ge_s: 0x4e, i32_ge_u: 0x4f,
  f32_eq: 0x5b, f32_ne: 0x5c, f32_lt: 0x5d, f32_gt: 0x5e, f32_le: 0x5f, f32_ge: 0x60,
  f64_eq: 0x61, f64_ne: 0x62, f64_lt: 0x63, f64_gt: 0x64, f64_le: 0x65, f64_ge: 0x66,
  i32_add: 0x6a, i32_sub: 0x6b, i32_mul: 0x6c, i32_div_s: 0x6d, i32_div_u: 0x6e, i32_rem_s: 0x6f,
  i32_rem_u: 0x70, i32_and: 0x71, i32_or: 0x72, i32_xor: 0x73, i32_shl: 0x74, i32_shr_s: 0x75,
  i32_shr_u: 0x76,
  f32_abs: 0x8b, f32_neg: 0x8c, f32_ceil: 0x8d, f32_floor: 0x8e, f32_trunc: 0x8f, f32_nearest: 0x90,
  f32_sqrt: 0x91, f32_add: 0x92, f32_sub: 0x93, f32_mul: 0x94, f32_div: 0x95, f32_min: 0x96,
  f32_max: 0x97,
  f64_abs: 0x99, f64_neg: 0x9a, f64_ceil: 0x9b, f64_floor: 0x9c, f64_trunc: 0x9d, f64_nearest: 0x9e,
  f64_sqrt: 0x9f, f64_add: 0xa0, f64_sub: 0xa1, f64_mul: 0xa2, f64_div: 0xa3, f64_min: 0xa4,
  f64_max: 0xa5,
  f32_convert_i32_s: 0xb2, f32_demote_f64: 0xb6, f64_promote_f32: 0xbb,
} as const;

/** Atomic memory opcodes (after the 0xfe prefix; sequentially consistent, natural alignment). */
export const Atomic = { i32_load: 0x10, i32_store: 0x17 } as const;

/** SIMD opcodes (after the 0xfd prefix), including relaxed SIMD (0x100+). */
export const Simd = {
  v128_load: 0x00, v128_load8x8_s: 0x01, v128_load8x8_u: 0x02, v128_load16_splat: 0x08, v128_load32_splat: 0x09, v128_load64_splat: 0x0a, v128_store: 0x0b,
  v128_const: 0x0c, i8x16_shuffle: 0x0d, i8x16_swizzle: 0x0e, i8x16_splat: 0x0f, i32x4_splat: 0x11, f32x4_splat: 0x13, f64x2_splat: 0x14,
  i32x4_extract_lane: 0x1b, i64x2_extract_lane: 0x1d, f32x4_extract_lane: 0x1f, f64x2_extract_lane: 0x21,
  f32x4_eq: 0x41, f32x4_ne: 0x42, f32x4_lt: 0x43, f32x4_gt: 0x44, f32x4_le: 0x45, f32x4_ge: 0x46,
  f64x2_eq: 0x47, f64x2_ne: 0x48, f64x2_lt: 0x49, f64x2_gt: 0x4a, f64x2_le: 0x4b, f64x2_ge: 0x4c,
  v128_not: 0x4d, v128_and: 0x4e, v128_andnot: 0x4f, v128_or: 0x50, v128_xor: 0x51,
  v128_bitselect: 0x52, v128_any_true: 0x53,
  v128_load32_zero: 0x5c, v128_load64_zero: 0x5d, f32x4_demote_f64x2_zero: 0x5e, f64x2_promote_low_f32x4: 0x5f,
  f32x4_ceil: 0x67, f32x4_floor: 0x68, f32x4_trunc: 0x69, f32x4_nearest: 0x6a,
  i8x16_shr_u: 0x6d, i8x16_min_u: 0x77, i16x8_narrow_i32x4_s: 0x85, i16x8_extend_low_i8x16_s: 0x87, i16x8_extend_high_i8x16_s: 0x88,
  f64x2_ceil: 0x74, f64x2_floor: 0x75, f64x2_trunc: 0x7a, f64x2_nearest: 0x94,
  i32x4_extend_low_i16x8_s: 0xa7, i32x4_extend_high_i16x8_s: 0xa8, i32x4_extend_low_i16x8_u: 0xa9,
  i32x4_extend_high_i16x8_u: 0xaa, i32x4_shl: 0xab, i32x4_shr_s: 0xac, i32x4_add: 0xae, i32x4_sub: 0xb1, i32x4_max_s: 0xb8, i32x4_dot_i16x8_s: 0xba,
  f32x4_abs: 0xe0, f32x4_neg: 0xe1, f32x4_sqrt: 0xe3, f32x4_add: 0xe4, f32x4_sub: 0xe5,
  f32x4_mul: 0xe6, f32x4_div: 0xe7, f32x4_min: 0xe8, f32x4_max: 0xe9, f32x4_pmin: 0xea,
  f32x4_pmax: 0xeb,
  f64x2_abs: 0xec, f64x2_neg: 0xed, f64x2_sqrt: 0xef, f64x2_add: 0xf0, f64x2_sub: 0xf1,
  f64x2_mul: 0xf2, f64x2_div: 0xf3, f64x2_min: 0xf4, f64x2_max: 0xf5,
  i32x4_trunc_sat_f32x4_s: 0xf8, f32x4_convert_i32x4_s: 0xfa,
  i8x16_relaxed_swizzle: 0x100, f32x4_relaxed_madd: 0x105, f32x4_relaxed_nmadd: 0x106, f64x2_relaxed_madd: 0x107,
  f64x2_relaxed_nmadd: 0x108,
} as const;

/** Emits one function body. Locals are numbered after the parameters, as in the binary format. */
export class Code {
  readonly bytes: number[] = [];
  readonly #localTypes: ValType[] = [];
  readonly #paramCount: number;
  #depth = 0;

  constructor(params: readonly ValType[]) {
    this.#paramCount = params.length;
  }

  /** Declares a local and returns its index. */
  local(type: ValType): number {
    this.#localTypes.push(type);
    return this.#paramCount + this.#localTypes.length - 1;
  }

  op(code: number): this {
    this.bytes.push(code);
    return this;
  }

  simd(code: number): this {
    this.bytes.push(0xfd);
    uleb(this.bytes, code);
    return this;
  }

  /** A plain memory op with its memarg; `align` is log2 of the natural alignment hint. */
  mem(code: number, align: number, offset = 0): this {
    this.bytes.push(code);
    uleb(this.bytes, align);
    uleb(this.bytes, offset);
    return this;
  }

  /** An atomic load or store (`Atomic`), for memory other threads write while a task runs. */
  atomicMem(code: number, align: number, offset = 0): this {
    this.bytes.push(0xfe);
    uleb(this.bytes, code);
    uleb(this.bytes, align);
    uleb(this.bytes, offset);
    return this;
  }

  simdMem(code: number, align: number, offset = 0): this {
    this.simd(code);
    uleb(this.bytes, align);
    uleb(this.bytes, offset);
    return this;
  }

  /** `i8x16.shuffle` picking 32-bit lanes: 0–3 from the first operand, 4–7 from the second. */
  shuffle32(lanes: readonly [number, number, number, number]): this {
    this.simd(Simd.i8x16_shuffle);
    for (const l of lanes) this.bytes.push(4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3);
    return this;
  }

  lane(code: number, lane: number): this {
    this.simd(code);
    this.bytes.push(lane);
    return this;
  }

  get(i: number): this {
    this.bytes.push(Op.local_get);
    uleb(this.bytes, i);
    return this;
  }

  set(i: number): this {
    this.bytes.push(Op.local_set);
    uleb(this.bytes, i);
    return this;
  }

  tee(i: number): this {
    this.bytes.push(Op.local_tee);
    uleb(this.bytes, i);
    return this;
  }

  i32(v: number): this {
    this.bytes.push(Op.i32_const);
    sleb(this.bytes, v | 0);
    return this;
  }

  f32(v: number): this {
    this.bytes.push(Op.f32_const);
    const b = new Uint8Array(new Float32Array([v]).buffer);
    for (const x of b) this.bytes.push(x);
    return this;
  }

  f64(v: number): this {
    this.bytes.push(Op.f64_const);
    const b = new Uint8Array(new Float64Array([v]).buffer);
    for (const x of b) this.bytes.push(x);
    return this;
  }

  call(fn: number): this {
    this.bytes.push(Op.call);
    uleb(this.bytes, fn);
    return this;
  }

  br(depth: number): this {
    this.bytes.push(Op.br);
    uleb(this.bytes, depth);
    return this;
  }

  brIf(depth: number): this {
    this.bytes.push(Op.br_if);
    uleb(this.bytes, depth);
    return this;
  }

  /** block/loop/if with an empty block type; balanced by `end()`. */
  block(): this {
    this.#depth++;
    return this.op(Op.block).op(0x40);
  }

  loop(): this {
    this.#depth++;
    return this.op(Op.loop).op(0x40);
  }

  if(): this {
    this.#depth++;
    return this.op(Op.if).op(0x40);
  }

  end(): this {
    this.#depth--;
    return this.op(Op.end);
  }

  /**
   * `while (cond) { body }` as block/loop: `cond` pushes an i32, `body` runs with depth 0 at the
   * loop (so `br(0)` continues) and 1 at the block (so `br(1)` breaks).
   */
  while(cond: () => void, body: () => void): this {
    this.block().loop();
    cond();
    this.op(Op.i32_eqz).brIf(1);
    body();
    this.br(0).end().end();
    return this;
  }

  /** for (i = from; i < to; i += step): `from`/`to` push i32s; `to` is re-evaluated each pass. */
  for(i: number, from: () => void, to: () => void, step: number, body: () => void): this {
    from();
    this.set(i);
    return this.while(
      () => {
        this.get(i);
        to();
        this.op(Op.i32_lt_s);
      },
      () => {
        body();
        this.get(i).i32(step).op(Op.i32_add).set(i);
      },
    );
  }

  /** The function body in binary form (locals + code + end). */
  encode(): number[] {
    if (this.#depth !== 0) throw new Error(`wasm assembler: ${this.#depth} unclosed block(s)`);
    const body: number[] = [];
    // run-length encode the local declarations
    const groups: [number, ValType][] = [];
    for (const t of this.#localTypes) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    uleb(body, groups.length);
    for (const [n, t] of groups) {
      uleb(body, n);
      body.push(t);
    }
    append(body, this.bytes);
    body.push(Op.end);
    return body;
  }
}

interface FuncDef {
  type: number;
  code: Code;
}

/** Builds a module that imports one memory `env.memory` and defines/exports functions. */
export class ModuleBuilder {
  readonly #types: string[] = [];
  readonly #funcs: FuncDef[] = [];
  readonly #exports: [string, number][] = [];
  #memory: { min: number; max?: number; shared: boolean } | null = null;

  importMemory(min: number, max?: number, shared = false): this {
    if (shared && max === undefined) throw new Error('wasm assembler: a shared memory needs a maximum');
    this.#memory = { min, max, shared };
    return this;
  }

  #typeIndex(params: readonly ValType[], results: readonly ValType[]): number {
    const key = `${params.join(',')}>${results.join(',')}`;
    let i = this.#types.indexOf(key);
    if (i < 0) i = this.#types.push(key) - 1;
    return i;
  }

  /** Adds a function; `build` fills its body. Returns the function index (for `call`). */
  func(params: readonly ValType[], results: readonly ValType[], build: (c: Code) => void, exportName?: string): number {
    const code = new Code(params);
    const index = this.#funcs.push({ type: this.#typeIndex(params, results), code }) - 1;
    if (exportName !== undefined) this.#exports.push([exportName, index]);
    build(code);
    return index;
  }

  /** Exports an already-defined function under another name. */
  export(name: string, index: number): this {
    this.#exports.push([name, index]);
    return this;
  }

  exportNames(): string[] {
    return this.#exports.map(([name]) => name);
  }

  encode(): Uint8Array {
    const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    const section = (id: number, body: number[]) => {
      out.push(id);
      uleb(out, body.length);
      append(out, body);
    };
    const types: number[] = [];
    uleb(types, this.#types.length);
    for (const key of this.#types) {
      const [p, r] = key.split('>').map((s) => (s === '' ? [] : s.split(',').map(Number)));
      types.push(0x60);
      uleb(types, p!.length);
      types.push(...p!);
      uleb(types, r!.length);
      types.push(...r!);
    }
    section(1, types);
    if (this.#memory) {
      const m = this.#memory;
      const imp: number[] = [1];
      utf8(imp, 'env');
      utf8(imp, 'memory');
      imp.push(0x02, m.shared ? 0x03 : m.max === undefined ? 0x00 : 0x01);
      uleb(imp, m.min);
      if (m.max !== undefined) uleb(imp, m.max);
      section(2, imp);
    }
    const fns: number[] = [];
    uleb(fns, this.#funcs.length);
    for (const f of this.#funcs) uleb(fns, f.type);
    section(3, fns);
    const exps: number[] = [];
    uleb(exps, this.#exports.length);
    for (const [name, index] of this.#exports) {
      utf8(exps, name);
      exps.push(0x00);
      uleb(exps, index);
    }
    section(7, exps);
    const code: number[] = [];
    uleb(code, this.#funcs.length);
    for (const f of this.#funcs) {
      const body = f.code.encode();
      uleb(code, body.length);
      append(code, body);
    }
    section(10, code);
    return new Uint8Array(out);
  }
}
