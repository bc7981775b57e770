/**
 * @file Bench section `packed`: packed low-bit matvec (`packedLinear`, one row of x: the decode
 * step) for int4 g32, NF4 (blocks of 64), ternary (2-bit fields and base 3, five per byte, per
 * channel), int8 per channel and MXFP4 against the float32 matvec (`linear`, the wasm matmul at
 * one row) at the tiny-Llama shapes and 4096 × 4096, in wall time and, with QGRAD_THREADS=1, in
 * process CPU time. 4096 × 4096 twice: resident, the same weight call after call, and streamed,
 * each contender rotating through distinct weights whose float32 total is over twice the
 * last-level cache (`streamCount`). A decode step reads every layer's weights once, so at a large
 * model's size they come from memory, and there packed weights, a quarter to a sixteenth of the
 * bytes, race float32 on bandwidth; a single 64 MB float32 matrix instead can stay in a large L3
 * (480 MiB on the machine this was written on), and the resident row then pits the decode work
 * against a float32 matvec that need not wait on memory. And tokens/s of the tiny Llama's
 * generate() in float32 and converted W8, W4, ternary (2-bit and base 3); and the forward of qat-mnist's CNN converted,
 * its conv layers run dequantized (the float weight rebuilt each call) against packed (im2col +
 * packedLinear on the codes), at batch 1 and 64; and the bytes of each export of the tiny Llama
 * (saveQuantized, GGUF) beside its float32 checkpoint, and of the MNIST ViT as ONNX (the Llama has
 * no ONNX mapping).
 * Run alone: npm run bench -- --sections packed [--quick]
 */
import * as q from '@qgrad/core';
import { Conv2d, Flatten, Linear, Llama, MaxPool2d, mnistViTConfig, ReLU, Sequential, tinyLlamaConfig, ViT } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { readdirSync, readFileSync } from 'node:fs';
import { type BenchContext, cpuMs } from './context.js';

/** [out, in] of the tiny Llama's Linears (gate/up, down, q/o, head) and the large square. */
const SHAPES: [number, number][] = [[384, 128], [128, 384], [128, 128], [256, 128], [4096, 4096]];

export interface Format {
  name: string;
  bits: number;
  grid: Q.Grid;
  /** Stored code dtype for 8-bit fields. */
  stored: q.DType;
  /** Inputs per scale (0: per channel). */
  group: number;
  /** Ternary codes five per byte (TQ1_0's order) instead of `bits`-bit fields. */
  base3?: boolean;
}

export const FORMATS: Format[] = [
  { name: 'int4 g32', bits: 4, grid: Q.makeGrid({ grid: 'int', bits: 4 }), stored: 'uint8', group: 32 },
  { name: 'nf4 b64', bits: 4, grid: Q.makeGrid({ grid: 'nf4' }), stored: 'uint8', group: 64 },
  { name: 'ternary', bits: 2, grid: Q.makeGrid({ grid: 'ternary' }), stored: 'uint8', group: 0 },
  { name: 'ternary b3', bits: 2, grid: Q.makeGrid({ grid: 'ternary' }), stored: 'uint8', group: 0, base3: true },
  { name: 'int8 ch', bits: 8, grid: Q.makeGrid({ grid: 'int', bits: 8 }), stored: 'int8', group: 0 },
  { name: 'mxfp4', bits: 4, grid: Q.makeGrid({ grid: 'mxfp4' }), stored: 'uint8', group: 32 },
];

/** A packed weight of random valid codes (what convert stores for such a layer). */
export function packedWeight(f: Format, O: number, K: number, g: q.Generator): q.PackedWeight {
  const groupSize = f.group || K;
  const n = O * K;
  const span = f.grid.codeMax - f.grid.codeMin + 1;
  const codes = q.randint(0, span, [n], { generator: g }).add(f.grid.codeMin);
  return {
    codes: f.base3 ? Q.packTernaryBase3(codes.reshape([O, K]), f.grid.codeMin) : Q.packCodes(codes, f.grid.codeMin, f.bits, f.grid.codeMax),
    bits: f.bits,
    ...(f.base3 && { packing: 'base3' as const }),
    levels: q.fromTypedArray(Q.levelTable(f.grid, f.bits, f.stored), [2 ** f.bits], 'float32'),
    scale: q.rand([(O * K) / groupSize], { generator: g }).mul(0.01),
    zeroPoint: null,
    outFeatures: O,
    inFeatures: K,
    groupSize,
  };
}

/**
 * Median process CPU µs per call of each contender over `rounds` rounds, the contenders taking
 * turns within a round, `iters` calls each. CPU time, unlike wall time, is not inflated by other
 * processes taking the core (the bench machines are shared): with QGRAD_THREADS=1 it is the
 * kernel's own time. A warm-up of 0.3 s each first: wasm tiers up on background threads, which
 * process.cpuUsage counts.
 */
function cpuUsPerCall(fns: (() => void)[], iters: number, rounds: number, median: (xs: number[]) => number): number[] {
  return cpuUsSamples(fns, iters, rounds, 300).map((t) => median(t));
}

/** `cpuUsPerCall`'s samples, per contender one a round, after `warmMs` of calls each. */
function cpuUsSamples(fns: (() => void)[], iters: number, rounds: number, warmMs: number): number[][] {
  for (const fn of fns) for (let t0 = performance.now(); performance.now() - t0 < warmMs;) fn();
  const ts: number[][] = fns.map(() => []);
  for (let r = 0; r < rounds; r++) {
    fns.forEach((fn, i) => {
      ts[i]!.push((cpuMs(() => {
        for (let k = 0; k < iters; k++) fn();
      }) * 1000) / iters);
    });
  }
  return ts;
}

/** Median ms per call of fn over `reps` timed calls (after one warm-up). */
function msPerCall(fn: () => void, reps: number, median: (xs: number[]) => number): number {
  fn();
  const ts: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    fn();
    ts.push(performance.now() - t);
  }
  return median(ts);
}

/**
 * `packedWeight` made in tidy, its tensors kept and added to `made` (to dispose): at 4096² its
 * intermediates (int32 codes, 64 MiB) would otherwise wait for the garbage collector in wasm
 * memory, and a few formats' worth fills it.
 */
export function keptWeight(f: Format, O: number, K: number, g: q.Generator, made: q.Tensor[]): q.PackedWeight {
  return q.tidy(() => {
    const p = packedWeight(f, O, K, g);
    for (const t of [p.codes, p.scale, p.levels]) made.push(q.keep(t));
    return p;
  });
}

/** Bytes of the last-level cache (cpu0's highest cache level in sysfs; 32 MiB where it cannot be read). */
function lastLevelCache(): number {
  const dir = '/sys/devices/system/cpu/cpu0/cache';
  let best = { level: 0, bytes: 32 << 20 };
  try {
    for (const e of readdirSync(dir)) {
      if (!e.startsWith('index')) continue;
      const level = Number(readFileSync(`${dir}/${e}/level`, 'utf8'));
      const m = /^(\d+)([KMG]?)/.exec(readFileSync(`${dir}/${e}/size`, 'utf8').trim());
      if (!m || level <= best.level) continue;
      best = { level, bytes: Number(m[1]) * ({ '': 1, K: 1 << 10, M: 1 << 20, G: 1 << 30 } as Record<string, number>)[m[2]!]! };
    }
  } catch {
    // no sysfs (not Linux): the fallback
  }
  return best.bytes;
}

/**
 * The most float32 bytes the streamed rotation holds: it lives in wasm memory (2 GiB) beside one
 * packed format's rotation (int8's is a quarter of it) and that format's making.
 */
const STREAM_MAX_BYTES = 2 ** 30;

/** Distinct weights each contender rotates through: float32 total over twice the LLC (at least 2), capped at STREAM_MAX_BYTES. */
function streamCount(fp32Bytes: number, llc: number): number {
  return Math.max(2, Math.min(Math.floor(STREAM_MAX_BYTES / fp32Bytes), Math.floor((2 * llc) / fp32Bytes) + 1));
}

/**
 * The streamed 4096² measurement: `count` copies of one float32 weight and of each packed one
 * (distinct buffers: equal values do not matter to the memory), each call of a contender a pass
 * over its copies. Formats one at a time (wasm memory holds the float32 rotation and one
 * format's), each taking turns with float32 for its rounds; float32's time is its median over
 * all of them. Weights are made in tidy and kept (their intermediates would otherwise fill wasm
 * memory) and disposed after.
 */
function streamedMatvec(ctx: BenchContext, g: q.Generator, O: number, K: number, cpu: boolean): { json: Record<string, number>; row: (string | number)[]; cpuRow: (string | number)[] | null } {
  const llc = lastLevelCache();
  const count = streamCount(O * K * 4, llc);
  const x = q.keep(q.randn([1, K], { generator: g }));
  const w0 = q.keep(q.randn([O, K], { generator: g }));
  const fps = [w0, ...Array.from({ length: count - 1 }, () => q.keep(q.tidy(() => w0.clone())))];
  const fpPass = () => {
    for (const w of fps) q.tidy(() => q.noGrad(() => void q.linear(x, w)));
  };
  const rounds = ctx.quick ? 3 : 7;
  const wall: number[][] = [[]];
  const cpuUs: number[][] = [[]];
  for (const f of FORMATS) {
    const made: q.Tensor[] = [];
    const keep = <T extends q.Tensor>(t: T): T => {
      made.push(q.keep(t));
      return t;
    };
    const p = keptWeight(f, O, K, g, made);
    const set = Array.from({ length: count }, (_, i) => (i === 0 ? p : { ...p, codes: keep(q.tidy(() => p.codes.clone())), scale: keep(q.tidy(() => p.scale.clone())) }));
    const passes = [
      fpPass,
      () => {
        for (const pw of set) q.tidy(() => q.noGrad(() => void q.packedLinear(x, pw)));
      },
    ];
    // wall: rounds taking turns, after a warm-up pass each
    for (const pass of passes) pass();
    const ts: number[][] = [[], []];
    for (let r = 0; r < rounds; r++) {
      passes.forEach((pass, i) => {
        const t = performance.now();
        pass();
        ts[i]!.push((performance.now() - t) / count);
      });
    }
    wall[0]!.push(...ts[0]!);
    wall.push(ts[1]!);
    if (cpu) {
      // warmed up by the wall rounds
      const [a, b] = cpuUsSamples(passes, 1, ctx.quick ? 3 : 5, 0) as [number[], number[]];
      cpuUs[0]!.push(...a.map((us) => us / count));
      cpuUs.push(b.map((us) => us / count));
    }
    q.dispose(made);
  }
  q.dispose([x, ...fps]);
  const [fp, ...packed] = wall.map((t) => ctx.median(t)) as [number, ...number[]];
  const json: Record<string, number> = { weights: count, 'fp32 MiB': (count * O * K * 4) / 2 ** 20, 'LLC MiB': llc / 2 ** 20, 'fp32 ms': fp };
  FORMATS.forEach((f, i) => (json[`${f.name} ms`] = packed[i]!));
  const label = `${O}×${K} streamed (${count} weights)`;
  const row = [label, fp * 1000, ...packed.flatMap((ms) => [ms * 1000, fp / ms])];
  let cpuRow: (string | number)[] | null = null;
  if (cpu) {
    const [fpCpu, ...pc] = cpuUs.map((t) => ctx.median(t)) as [number, ...number[]];
    json['fp32 CPU µs'] = fpCpu;
    FORMATS.forEach((f, i) => (json[`${f.name} CPU µs`] = pc[i]!));
    cpuRow = [label, fpCpu, ...pc.flatMap((us) => [us, fpCpu / us])];
  }
  return { json, row, cpuRow };
}

function tinyLlama(weight: Q.WeightQuantConfig | null, kernel: Q.QuantizedKernel = 'packed'): Llama {
  const llama = new Llama(tinyLlamaConfig, { generator: new q.Generator(5) });
  if (weight) {
    Q.prepareQAT(llama, { default: { weight }, types: ['Linear'] });
    llama.eval();
    q.noGrad(() => llama.forward(q.tensor([[1, 2, 3]], { dtype: 'int32' }))); // data-driven scales
    Q.convert(llama, { kernel });
  }
  return llama;
}

/** examples/qat-mnist.ts's CNN (conv 1→8, 8→16, 3×3; linear 784→10), QAT-prepared and converted (the Linear packed, the convs as told); float32 when `weight` is null. */
function mnistCnn(weight: Q.WeightQuantConfig | null, convKernel: Q.QuantizedReadKernel): Sequential {
  const g = new q.Generator(3);
  const m = new Sequential(
    new Conv2d(1, 8, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 8, 14, 14]
    new Conv2d(8, 16, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 16, 7, 7]
    new Flatten(), new Linear(16 * 7 * 7, 10, { generator: g }),
  );
  if (weight) {
    Q.prepareQAT(m, { default: { weight }, types: ['Linear', 'Conv2d'] });
    m.eval();
    q.noGrad(() => m.forward(q.randn([2, 1, 28, 28], { generator: g }))); // data-driven scales
    Q.convert(m);
    for (const l of m.modules()) if (l instanceof Q.QuantizedConv2d) l.kernel = convKernel;
  }
  m.eval();
  return m;
}

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  const prev = q.getBackend();
  q.setBackend('wasm');
  const g = new q.Generator(1);
  const matvec: Record<string, Record<string, number>> = {};
  const rows: (string | number)[][] = [];
  const cpuRows: (string | number)[][] = [];
  // CPU time only on one thread: with workers it would add up their time (and their idle spin)
  const cpu = process.env.QGRAD_THREADS === '1';
  for (const [O, K] of SHAPES) {
    const big = O * K > 1 << 20;
    const reps = ctx.quick ? (big ? 3 : 20) : big ? 15 : 200;
    const x = q.randn([1, K], { generator: g });
    const w = q.randn([O, K], { generator: g });
    const calls = [() => q.tidy(() => q.noGrad(() => void q.linear(x, w)))];
    const fp = msPerCall(calls[0]!, reps, ctx.median);
    const shape = big ? `${O}×${K} resident` : `${O}×${K}`;
    matvec[shape] = { 'fp32 ms': fp };
    const row: (string | number)[] = [shape, fp * 1000];
    const made: q.Tensor[] = [x, w];
    for (const f of FORMATS) {
      const pw = keptWeight(f, O, K, g, made);
      calls.push(() => q.tidy(() => q.noGrad(() => void q.packedLinear(x, pw))));
      const ms = msPerCall(calls[calls.length - 1]!, reps, ctx.median);
      matvec[shape]![`${f.name} ms`] = ms;
      row.push(ms * 1000, fp / ms);
    }
    rows.push(row);
    if (cpu) {
      // ~0.1 s of float32 work a contender a round
      const iters = Math.max(3, Math.round((ctx.quick ? 3e7 : 1.5e8) / (O * K)));
      const [fpCpu, ...packed] = cpuUsPerCall(calls, iters, ctx.quick ? 3 : 5, ctx.median) as [number, ...number[]];
      matvec[shape]!['fp32 CPU µs'] = fpCpu;
      FORMATS.forEach((f, i) => (matvec[shape]![`${f.name} CPU µs`] = packed[i]!));
      cpuRows.push([shape, fpCpu, ...packed.flatMap((us) => [us, fpCpu / us])]);
    }
    q.dispose(made);
    if (!big) continue;
    const stream = streamedMatvec(ctx, g, O, K, cpu);
    matvec[`${O}×${K} streamed`] = stream.json;
    rows.push(stream.row);
    if (stream.cpuRow) cpuRows.push(stream.cpuRow);
  }
  ctx.table(
    'packed matvec vs float32 matvec, one row of x (median wall µs; × = float32 time / packed time, > 1 is packed faster; 4096×4096 resident: one weight, call after call, in cache; streamed: each call the next of distinct weights totalling > 2 × the last-level cache in float32, as a decode step streams its layers)',
    ['out×in', 'fp32 µs', ...FORMATS.flatMap((f) => [`${f.name} µs`, '×'])],
    rows,
  );
  if (cpu) {
    ctx.table(
      'the same in process CPU time, QGRAD_THREADS=1 (median CPU µs per call over 5 rounds taking turns; robust to other processes on the cores; × as above)',
      ['out×in', 'fp32 CPU µs', ...FORMATS.flatMap((f) => [`${f.name} CPU µs`, '×'])],
      cpuRows,
    );
  }

  const tokens = ctx.quick ? 8 : 32;
  const prompt = q.tensor([[72, 101, 108, 108]], { dtype: 'int32' });
  const ternary: Q.WeightQuantConfig = { grid: 'ternary', granularity: 'channel' };
  const models: [string, Q.WeightQuantConfig | null, Q.QuantizedKernel?][] = [
    ['fp32', null], ['W8 per channel', { grid: 'int', bits: 8, granularity: 'channel' }],
    ['W4 g32', { grid: 'int', bits: 4, granularity: { group: 32 } }], ['ternary per channel', ternary], ['ternary per channel, base 3', ternary, 'packedBase3'],
  ];
  const generate: Record<string, number> = {};
  for (const [name, weight, kernel] of models) {
    const llama = tinyLlama(weight, kernel);
    const ms = msPerCall(() => llama.generate(prompt, tokens, { temperature: 0 }), ctx.quick ? 1 : 3, ctx.median);
    generate[name] = (tokens * 1000) / ms;
  }
  ctx.table(
    `tiny Llama generate(), ${tokens} tokens greedy with the KV cache (tokens/s, higher is better; × = / fp32)`,
    ['weights', 'tokens/s', '× fp32'],
    Object.entries(generate).map(([n, t]) => [n, t, t / generate.fp32!]),
  );

  const cnnRows: (string | number)[][] = [];
  const cnn: Record<string, Record<string, number>> = {};
  const cnnFormats: [string, Q.WeightQuantConfig][] = [
    ['W4 per channel', { grid: 'int', bits: 4, granularity: 'channel' }], ['W8 per channel', { grid: 'int', bits: 8, granularity: 'channel' }],
    ['ternary per channel', ternary], ['NF4 blocks of 8', { grid: 'nf4', granularity: { block: 8 } }],
  ];
  const float = mnistCnn(null, 'packed');
  for (const batch of [1, 64]) {
    const x = q.randn([batch, 1, 28, 28], { generator: g });
    const reps = ctx.quick ? 3 : batch === 1 ? 60 : 10;
    const time = (m: Sequential) => msPerCall(() => q.tidy(() => q.noGrad(() => m.forward(x))), reps, ctx.median);
    for (let w = 0; w < 3; w++) time(float); // JIT and buffer pools settle before the first timed model
    for (const [name, weight] of cnnFormats) {
      const models = [float, mnistCnn(weight, 'dequantize'), mnistCnn(weight, 'packed')];
      // three rounds alternating float, dequantize and packed; each one's median of its round medians
      const ms: number[][] = [[], [], []];
      for (let r = 0; r < 3; r++) models.forEach((m, i) => ms[i]!.push(time(m)));
      const [fp, d, p] = ms.map((t) => ctx.median(t)) as [number, number, number];
      cnn[`${name}, batch ${batch}`] = { 'fp32 ms': fp, 'dequantize ms': d, 'packed ms': p };
      cnnRows.push([name, batch, fp, d, p, d / p]);
    }
  }
  ctx.table(
    "converted MNIST CNN forward (qat-mnist's: 2 convs + linear; median ms; × = dequantize / packed, > 1 is packed faster; the Linear runs packed in both)",
    ['weights', 'batch', 'fp32 ms', 'dequantize ms', 'packed ms', '×'],
    cnnRows,
  );
  const sizes = exportSizes(ctx);
  q.setBackend(prev);
  return { matvec, generateTokensPerSecond: generate, cnnForward: cnn, exportBytes: sizes };
}

/**
 * Bytes of each export beside the float32 checkpoint: the tiny Llama as saveQuantized and GGUF
 * (the weights its file type names, from the converted codes where the grid agrees), the MNIST ViT
 * as ONNX. GGUF rows that do not split into the type's blocks stay F32 (llama.cpp refuses the
 * file otherwise), and the tiny Llama's 128- and 384-wide rows split into no 256-block, so its
 * TQ1_0/TQ2_0 files are all F32: the column of tensors at the type says so.
 */
function exportSizes(ctx: BenchContext): Record<string, number> {
  const rows: (string | number)[][] = [];
  const bytes: Record<string, number> = {};
  const add = (what: string, n: number, base: number, note: string) => {
    bytes[what] = n;
    rows.push([what, n, n / base, note]);
  };
  const float = tinyLlama(null);
  const fp32 = q.serializeSafetensors(float.stateDict()).length;
  add('tiny Llama float32 safetensors', fp32, fp32, '');
  const w8: Q.WeightQuantConfig = { grid: 'int', bits: 8, granularity: 'channel' };
  const w4: Q.WeightQuantConfig = { grid: 'int', bits: 4, granularity: { group: 32 } };
  const ternary: Q.WeightQuantConfig = { grid: 'ternary', granularity: 'channel' };
  const quantized: [string, Q.WeightQuantConfig, Q.QuantizedKernel?][] = [
    ['W8 per channel', w8], ['W4 g32', w4], ['NF4 b64, double-quantized scales', { grid: 'nf4', scale: { double: true } }],
    ['MXFP4', { grid: 'mxfp4' }], ['ternary per channel', ternary], ['ternary per channel, base 3', ternary, 'packedBase3'],
  ];
  const linears = (m: Llama) => [...m.modules()].filter((l) => l instanceof Q.QuantizedLinear).length;
  for (const [name, weight, kernel] of quantized) {
    const m = tinyLlama(weight, kernel);
    add(`saveQuantized ${name}`, Q.serializeQuantized(m).length, fp32, `${linears(m)} Linears packed; embedding float32`);
  }
  const gguf: [Q.GgmlTypeName, Llama][] = [['F32', float], ['F16', float], ['Q8_0', tinyLlama(w8)], ['Q4_0', tinyLlama(w4)], ['TQ1_0', tinyLlama(ternary)], ['TQ2_0', tinyLlama(ternary)]];
  for (const [type, m] of gguf) {
    const r = Q.llamaToGguf(m, { type });
    const atType = r.tensors.filter((t) => t.type === type).length;
    const fromCodes = r.tensors.filter((t) => t.source === 'codes').length;
    add(`GGUF ${type}`, r.bytes.length, fp32, `${atType}/${r.tensors.length} tensors ${type}, ${fromCodes} from QAT codes`);
  }
  ctx.table('tiny Llama exports (bytes; × = / the float32 checkpoint; its rows of 128 and 384 split into no 256-block, so TQ1_0/TQ2_0 stay F32)', ['file', 'bytes', '×', 'tensors'], rows);

  const vitRows: (string | number)[][] = [];
  const input = [1, mnistViTConfig.inChannels, mnistViTConfig.imageSize, mnistViTConfig.imageSize];
  const vit = (weight: Q.WeightQuantConfig | null, act: boolean): ViT => {
    const m = new ViT(mnistViTConfig, { generator: new q.Generator(6) });
    if (weight) {
      Q.prepareQAT(m, { default: { weight, ...(act && { input: { bits: 8 } }) }, types: ['Linear'] });
      m.train();
      q.noGrad(() => m.forward(q.randn([4, ...input.slice(1)], { generator: new q.Generator(7) }))); // input scales
      m.eval();
      Q.convert(m);
    }
    return m.eval();
  };
  const vitFloat = q.serializeSafetensors(vit(null, false).stateDict()).length;
  vitRows.push(['ViT float32 safetensors', vitFloat, 1]);
  for (const [name, weight, act, int4] of [
    ['float32', null, false, undefined], ['W8A8 QDQ', w8, true, undefined], ['W4 g32 MatMulNBits', w4, false, 'matmulnbits'], ['W4 g32 INT4 QDQ', w4, false, 'qdq'],
  ] as const) {
    const n = Q.modelToOnnx(vit(weight, act), { inputShape: input, int4 }).bytes.length;
    bytes[`ViT ONNX ${name}`] = n;
    vitRows.push([`ONNX ${name}`, n, n / vitFloat]);
  }
  ctx.table("MNIST ViT exports as ONNX (Linear weights quantized; the patch conv float) (bytes; × = / the float32 checkpoint)", ['file', 'bytes', '×'], vitRows);
  return bytes;
}
