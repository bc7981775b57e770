/**
 * @file The `qgrad` command line (bin/qgrad.ts only hands it `process.argv`): `qgrad export`
 * writes a Llama, ViT or Sequential (MNIST MLP/CNN) checkpoint directory (`config.json` +
 * `model.safetensors`, float or written by saveQuantized; `model_type` tells which) as packed
 * safetensors, GGUF (Llama) or ONNX (ViT, Sequential), and `qgrad convert` rounds a float checkpoint's Linear weights to a quantized checkpoint
 * directory that `qgrad export` reads back; `qgrad train` (qat/train-cli.ts) trains an MNIST model or a tiny Llama with QAT.
 */
import { loadSafetensorsWithMetadata } from '@qgrad/core';
import { configFromHf, fromPretrained, Llama, Sequential, ViT, vitConfigFromHf } from '@qgrad/nn';
import type { GridName } from '../grids/table.js';
import { convert } from '../qat/convert.js';
import { prepareQAT } from '../qat/prepare.js';
import { runTrainCli } from '../qat/train-cli.js';
import type { WeightQuantConfig } from '../qat/quantizers.js';
import type { GgmlTypeName } from './ggml.js';
import { GGML_TYPES } from './ggml.js';
import { nodeFs } from './bytes.js';
import { exportGguf } from './gguf.js';
import { exportOnnx } from './onnx.js';
import { parseFlags } from './flags.js';
import { loadQuantized, QUANTIZED_FORMAT, saveQuantized } from './safetensors.js';
import { SEQUENTIAL_MODEL_TYPE, sequentialFromConfig } from './sequential-config.js';

const WEIGHT_FLAGS = `  [--weight int8|int4|nf4|ternary]          quantize the Linear weights (round to nearest)
  [--group N]                               weight scale per group of N inputs (int grids, ternary)`;
const CHECKPOINT = `<checkpoint-dir> holds config.json (model_type llama, vit or ${SEQUENTIAL_MODEL_TYPE}) and model.safetensors (float, or written by saveQuantized).`;

const EXPORT_USAGE = `usage: qgrad export --format safetensors|gguf|onnx <checkpoint-dir> <out>
  [--type F32|F16|Q8_0|Q4_0|TQ1_0|TQ2_0]   GGUF block type (default F32; Llama)
  [--int4 matmulnbits|qdq]                  ONNX form of 4-bit Linear weights (default matmulnbits)
${WEIGHT_FLAGS} before exporting
${CHECKPOINT} GGUF takes a Llama, ONNX a ViT (input [1, C, H, W]) or a Sequential (config.json's input_shape); the batch is symbolic.`;

const CONVERT_USAGE = `usage: qgrad convert --weight int8|int4|nf4|ternary <checkpoint-dir> <out-dir>
  [--group N]                               weight scale per group of N inputs (int grids, ternary)
Writes <out-dir>/config.json and a quantized <out-dir>/model.safetensors (integer codes + scales),
which qgrad export and loadQuantized read. <checkpoint-dir> holds a float config.json (llama, vit or ${SEQUENTIAL_MODEL_TYPE}) + model.safetensors.`;

const USAGE = `usage: qgrad <command> [flags]
commands:
  train     QAT of an MNIST MLP/CNN or a tiny Llama on Moby-Dick (progress bar, metrics, checkpoints), converted and saved
  export    a Llama, ViT or MNIST MLP/CNN checkpoint directory to packed safetensors, GGUF (Llama) or ONNX (ViT, MLP/CNN)
  convert   a float Llama, ViT or MLP/CNN checkpoint directory to a quantized one (round to nearest)
qgrad <command> --help shows the command's flags.`;

/** Where the command line prints: the console by default, a collecting array in tests. */
export interface CliIo {
  log(s: string): void;
  error(s: string): void;
}

const CONSOLE: CliIo = { log: (s) => console.log(s), error: (s) => console.error(s) };
const WEIGHTS = ['int8', 'int4', 'nf4', 'ternary'];

/** A command's flags and its two paths, or a one-line usage error. */
function parse(argv: string[], known: string[]): { flags: Record<string, string>; src: string; out: string } | string {
  const f = parseFlags(argv, Object.fromEntries(known.map((k) => [k, 'string' as const])), true);
  if (typeof f === 'string') return f;
  const flags = f.values as Record<string, string>;
  const pos = f.positionals;
  if (pos.length !== 2) return `expected <checkpoint-dir> <out>, got ${pos.length} path${pos.length === 1 ? '' : 's'}`;
  // a weight grid is checked here because both commands take it the same way
  if (flags.weight !== undefined && !WEIGHTS.includes(flags.weight)) return `--weight must be ${WEIGHTS.join(', ')}, got '${flags.weight}'`;
  const group = flags.group === undefined ? undefined : Number(flags.group);
  if (group !== undefined && !(Number.isSafeInteger(group) && group >= 1)) return `--group must be a positive integer, got '${flags.group}'`;
  return { flags, src: pos[0]!, out: pos[1]! };
}

type Model = Llama | ViT | Sequential;

/**
 * The model a checkpoint directory holds, by config.json's `model_type` (llama, vit: HF's
 * directory layout, as fromPretrained; qgrad-sequential: sequential-config.ts), with converted
 * layers where the file is a quantized export.
 */
function loadModel(dir: string): { model: Model; quantized: boolean; config: Record<string, unknown> } {
  const { tensors, metadata } = loadSafetensorsWithMetadata(`${dir}/model.safetensors`);
  const config = JSON.parse(new TextDecoder().decode(nodeFs('qgrad export').readFileSync(`${dir}/config.json`))) as Record<string, unknown>;
  if (config.model_type === SEQUENTIAL_MODEL_TYPE) {
    const model = sequentialFromConfig(config);
    if (metadata.format === QUANTIZED_FORMAT) return { model: loadQuantized(`${dir}/model.safetensors`, model), quantized: true, config };
    model.loadStateDict(tensors);
    return { model, quantized: false, config };
  }
  const vit = config.model_type === 'vit';
  if (metadata.format !== QUANTIZED_FORMAT) return { model: vit ? (fromPretrained(dir) as ViT) : Llama.fromPretrained(dir), quantized: false, config };
  return { model: loadQuantized(`${dir}/model.safetensors`, vit ? new ViT(vitConfigFromHf(config)) : new Llama(configFromHf(config))), quantized: true, config };
}

/** Rounds the Linear weights of `model` to `weight` (int8, int4, nf4, ternary), per group of `group` inputs if given. */
function quantizeWeights(model: Model, weight: string, group: string | undefined): void {
  const grid = (weight.startsWith('int') ? 'int' : weight) as GridName;
  const config: WeightQuantConfig = { grid, ...(grid === 'int' && { bits: Number(weight.slice(3)), scale: 'absmax' }), ...(group && { granularity: { group: Number(group) } }) };
  prepareQAT(model, { default: { weight: config }, types: ['Linear'] });
  convert(model);
}

/** Runs one command: its usage on --help, a one-line error and exit 2 on bad flags, exit 1 when the work fails. */
function command(name: string, usage: string, known: string[], argv: string[], io: CliIo, work: (a: { flags: Record<string, string>; src: string; out: string }) => string | void): number {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.log(usage);
    return 0;
  }
  try {
    const a = parse(argv, known);
    const message = typeof a === 'string' ? a : work(a);
    if (message === undefined) return 0;
    io.error(`qgrad ${name}: ${message} (qgrad ${name} --help lists the flags)`);
    return 2;
  } catch (e) {
    io.error(`qgrad ${name}: ${(e as Error).message}`);
    return 1;
  }
}

/**
 * Runs `qgrad export …` with `argv` after the subcommand; returns the exit code (0 done, 2 usage
 * or unsupported request, 1 a failure while reading or writing).
 * @example runExportCli(['--format', 'gguf', '--type', 'Q8_0', 'ckpt/', 'model.gguf']);
 */
export function runExportCli(argv: string[], io: CliIo = CONSOLE): number {
  return command('export', EXPORT_USAGE, ['format', 'type', 'weight', 'group', 'int4'], argv, io, ({ flags, src, out }) => {
    const format = flags.format ?? '';
    if (!['safetensors', 'gguf', 'onnx'].includes(format)) return `--format must be safetensors, gguf or onnx, got '${format}'`;
    const type = (flags.type ?? 'F32') as GgmlTypeName;
    if (!(type in GGML_TYPES)) return `--type must be one of ${Object.keys(GGML_TYPES).join(', ')}, got '${flags.type}'`;
    const int4 = flags.int4 ?? 'matmulnbits';
    if (int4 !== 'matmulnbits' && int4 !== 'qdq') return `--int4 must be matmulnbits or qdq, got '${int4}'`;
    const { model, config } = loadModel(src);
    const holds = model instanceof Sequential ? 'a Sequential' : model instanceof ViT ? 'a ViT' : 'a Llama';
    if (format === 'onnx' && model instanceof Llama) return `--format onnx takes a ViT or Sequential checkpoint (model_type vit or ${SEQUENTIAL_MODEL_TYPE}); ${src} holds a Llama, which has no ONNX mapping here`;
    if (format === 'gguf' && !(model instanceof Llama)) return `--format gguf takes a Llama checkpoint (model_type llama); ${src} holds ${holds}`;
    if (flags.weight) quantizeWeights(model, flags.weight, flags.group);
    if (model instanceof Llama && format === 'gguf') {
      const r = exportGguf(model, out, { type });
      const fromCodes = r.tensors.filter((t) => t.source === 'codes').length;
      const worst = r.tensors.reduce((m, t) => Math.max(m, t.maxAbsError), 0);
      io.log(`wrote ${out}: ${r.bytes.length} bytes, ${r.tensors.length} tensors (${fromCodes} from QAT codes), largest weight difference ${worst.toExponential(2)}`);
    } else if (format === 'onnx' && !(model instanceof Llama)) {
      const inputShape = model instanceof ViT ? [1, model.config.inChannels, model.config.imageSize, model.config.imageSize] : (config.input_shape as number[]);
      const r = exportOnnx(model, out, { inputShape, int4 });
      const count = (w: string) => r.layers.filter((l) => l.weight === w).length;
      io.log(`wrote ${out}: ${r.bytes.length} bytes, ${r.layers.length} weight layers (${count('matmulnbits')} MatMulNBits, ${count('qdq')} QDQ, ${count('float')} float)`);
    } else {
      saveQuantized(model, out);
      io.log(`wrote ${out}`);
    }
  });
}

/**
 * Runs `qgrad convert …` with `argv` after the subcommand: a float Llama, ViT or Sequential checkpoint directory to a
 * quantized one (config.json + packed model.safetensors). Exit codes as {@link runExportCli}.
 * @example runConvertCli(['--weight', 'int4', '--group', '32', 'ckpt/', 'ckpt-w4/']);
 */
export function runConvertCli(argv: string[], io: CliIo = CONSOLE): number {
  return command('convert', CONVERT_USAGE, ['weight', 'group'], argv, io, ({ flags, src, out }) => {
    if (flags.weight === undefined) return `--weight is required (${WEIGHTS.join(', ')})`;
    const { model, quantized } = loadModel(src);
    if (quantized) throw new Error(`${src}/model.safetensors is already quantized (written by saveQuantized); convert takes a float checkpoint`);
    quantizeWeights(model, flags.weight, flags.group);
    const fs = nodeFs('qgrad convert');
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(`${out}/config.json`, fs.readFileSync(`${src}/config.json`));
    saveQuantized(model, `${out}/model.safetensors`);
    io.log(`wrote ${out}/config.json and ${out}/model.safetensors (${flags.weight}${flags.group ? `, groups of ${flags.group}` : ''})`);
  });
}

/**
 * The `qgrad` command: `argv` is what follows `qgrad` on the command line (`process.argv.slice(2)`);
 * resolves to the exit code (async because `train` is). `qgrad --help` lists the commands; an
 * unknown command exits 2 with one line.
 * @example process.exitCode = await runCli(['export', '--format', 'gguf', 'ckpt/', 'model.gguf']);
 */
export async function runCli(argv: string[], io: CliIo = CONSOLE): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    io.error(USAGE);
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    io.log(USAGE);
    return 0;
  }
  if (name === 'export') return runExportCli(rest, io);
  if (name === 'convert') return runConvertCli(rest, io);
  if (name === 'train') return runTrainCli(rest, io);
  io.error(`qgrad: unknown ${name.startsWith('-') ? 'flag' : 'command'} '${name}' (commands: train, export, convert; qgrad --help shows them)`);
  return 2;
}
