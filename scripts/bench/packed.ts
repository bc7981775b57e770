/**
 * @file Bench section `packed`: packed low-bit matvec (`packedLinear`, one row of x: the decode
 * step) for int4 g32, NF4 (blocks of 64), ternary (2-bit fields and base 3, five per byte, per
 * channel), int8 per channel and MXFP4 against the float32 matvec (`linear`, the wasm matmul at
 * one row) at the tiny-Llama shapes and 4096 × 4096, in wall time and, with QGRAD_THREADS=1, in
 * process CPU time; and tokens/s of the tiny Llama's generate() in float32
 * and converted W8, W4, ternary (2-bit and base 3); and the forward of qat-mnist's CNN converted,
 * its conv layers run dequantized (the float weight rebuilt each call) against packed (im2col +
 * packedLinear on the codes), at batch 1 and 64; and the bytes of each export of the tiny Llama
 * (saveQuantized, GGUF) beside its float32 checkpoint, and of the MNIST ViT as ONNX (the Llama has
 * no ONNX mapping).
 * Run alone: npm run bench -- --sections packed [--quick]
 */
import * as q from '@qgrad/core';
import { Conv2d, Flatten, Linear, Llama, MaxPool2d, mnistViTConfig, ReLU, Sequential, tinyLlamaConfig, ViT } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { type BenchContext, cpuMs } from './context.js';

/** [out, in] of the tiny Llama's Linears (gate/up, down, q/o, head) and the large square. */
const SHAPES: [number, number][] = [[384, 128], [128, 384], [128, 128], [256, 128], [4096, 4096]];

interface Format {
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

const FORMATS: Format[] = [
  { name: 'int4 g32', bits: 4, grid: Q.makeGrid({ grid: 'int', bits: 4 }), stored: 'uint8', group: 32 },
  { name: 'nf4 b64', bits: 4, grid: Q.makeGrid({ grid: 'nf4' }), stored: 'uint8', group: 64 },
  { name: 'ternary', bits: 2, grid: Q.makeGrid({ grid: 'ternary' }), stored: 'uint8', group: 0 },
  { name: 'ternary b3', bits: 2, grid: Q.makeGrid({ grid: 'ternary' }), stored: 'uint8', group: 0, base3: true },
  { name: 'int8 ch', bits: 8, grid: Q.makeGrid({ grid: 'int', bits: 8 }), stored: 'int8', group: 0 },
  { name: 'mxfp4', bits: 4, grid: Q.makeGrid({ grid: 'mxfp4' }), stored: 'uint8', group: 32 },
];

/** A packed weight of random valid codes (what convert stores for such a layer). */
function packedWeight(f: Format, O: number, K: number, g: q.Generator): q.PackedWeight {
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
  for (const fn of fns) for (let t0 = performance.now(); performance.now() - t0 < 300;) fn();
  const ts: number[][] = fns.map(() => []);
  for (let r = 0; r < rounds; r++) {
    fns.forEach((fn, i) => {
      ts[i]!.push((cpuMs(() => {
        for (let k = 0; k < iters; k++) fn();
      }) * 1000) / iters);
    });
  }
  return ts.map((t) => median(t));
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
    const shape = `${O}×${K}`;
    matvec[shape] = { 'fp32 ms': fp };
    const row: (string | number)[] = [shape, fp * 1000];
    for (const f of FORMATS) {
      const pw = packedWeight(f, O, K, g);
      calls.push(() => q.tidy(() => q.noGrad(() => void q.packedLinear(x, pw))));
      const ms = msPerCall(calls[calls.length - 1]!, reps, ctx.median);
      matvec[shape]![`${f.name} ms`] = ms;
      row.push(ms * 1000, fp / ms);
    }
    rows.push(row);
    if (!cpu) continue;
    // ~0.1 s of float32 work a contender a round
    const iters = Math.max(3, Math.round((ctx.quick ? 3e7 : 1.5e8) / (O * K)));
    const [fpCpu, ...packed] = cpuUsPerCall(calls, iters, ctx.quick ? 3 : 5, ctx.median) as [number, ...number[]];
    matvec[shape]!['fp32 CPU µs'] = fpCpu;
    FORMATS.forEach((f, i) => (matvec[shape]![`${f.name} CPU µs`] = packed[i]!));
    cpuRows.push([shape, fpCpu, ...packed.flatMap((us) => [us, fpCpu / us])]);
  }
  ctx.table(
    'packed matvec vs float32 matvec, one row of x (median wall µs; × = float32 time / packed time, > 1 is packed faster)',
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
