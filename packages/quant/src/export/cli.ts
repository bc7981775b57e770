/**
 * @file The `qgrad export` subcommand: `qgrad export --format safetensors|gguf|onnx <checkpoint> <out>`
 * over a Llama checkpoint directory (HF `config.json` + `model.safetensors`, float or written by
 * saveQuantized), optionally quantizing its projections first. Wiring it into the `qgrad` bin is
 * one line: `if (argv[0] === 'export') process.exitCode = runExportCli(argv.slice(1));`.
 */
import { loadSafetensorsWithMetadata } from '@qgrad/core';
import { configFromHf, Llama } from '@qgrad/nn';
import type { GridName } from '../grids/table.js';
import { convert } from '../qat/convert.js';
import { prepareQAT } from '../qat/prepare.js';
import type { WeightQuantConfig } from '../qat/quantizers.js';
import type { GgmlTypeName } from './ggml.js';
import { GGML_TYPES } from './ggml.js';
import { nodeFs } from './bytes.js';
import { exportGguf } from './gguf.js';
import { loadQuantized, QUANTIZED_FORMAT, saveQuantized } from './safetensors.js';

const USAGE = `usage: qgrad export --format safetensors|gguf|onnx <checkpoint-dir> <out>
  [--type F32|F16|Q8_0|Q4_0|TQ1_0|TQ2_0]   GGUF block type (default F32)
  [--weight int8|int4|nf4|ternary]          quantize the Linear weights (round to nearest) before exporting
  [--group N]                               weight scale per group of N inputs (int grids, ternary)
<checkpoint-dir> holds config.json and model.safetensors (float, or written by saveQuantized).`;

interface Io {
  log(s: string): void;
  error(s: string): void;
}

/** Parsed flags, or a usage error message. */
function parse(argv: string[]): { format: string; src: string; out: string; type: GgmlTypeName; weight?: string; group?: number } | string {
  const pos: string[] = [];
  const flags: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--')) {
      const [k, v] = a.includes('=') ? [a.slice(2, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a.slice(2), argv[++i]];
      if (v === undefined) return `flag --${k} needs a value`;
      if (!['format', 'type', 'weight', 'group'].includes(k)) return `unknown flag --${k}`;
      flags[k] = v;
    } else pos.push(a);
  }
  if (pos.length !== 2) return `expected <checkpoint-dir> <out>, got ${pos.length} paths`;
  const format = flags.format ?? '';
  if (!['safetensors', 'gguf', 'onnx'].includes(format)) return `--format must be safetensors, gguf or onnx, got '${format}'`;
  const type = (flags.type ?? 'F32') as GgmlTypeName;
  if (!(type in GGML_TYPES)) return `--type must be one of ${Object.keys(GGML_TYPES).join(', ')}, got '${flags.type}'`;
  if (flags.weight !== undefined && !['int8', 'int4', 'nf4', 'ternary'].includes(flags.weight)) return `--weight must be int8, int4, nf4 or ternary, got '${flags.weight}'`;
  const group = flags.group === undefined ? undefined : Number(flags.group);
  if (group !== undefined && !(Number.isSafeInteger(group) && group >= 1)) return `--group must be a positive integer, got '${flags.group}'`;
  return { format, src: pos[0]!, out: pos[1]!, type, weight: flags.weight, group };
}

/** The Llama a checkpoint directory holds (converted layers where the file is a quantized export). */
function loadLlama(dir: string): Llama {
  const { metadata } = loadSafetensorsWithMetadata(`${dir}/model.safetensors`);
  if (metadata.format !== QUANTIZED_FORMAT) return Llama.fromPretrained(dir);
  const config = configFromHf(JSON.parse(new TextDecoder().decode(nodeFs('qgrad export').readFileSync(`${dir}/config.json`))) as Record<string, unknown>);
  return loadQuantized(`${dir}/model.safetensors`, new Llama(config));
}

/**
 * Runs `qgrad export …` with `argv` after the subcommand; returns the exit code (0 done, 2 usage
 * or unsupported request, 1 a failure while reading or writing).
 * @example runExportCli(['--format', 'gguf', '--type', 'Q8_0', 'ckpt/', 'model.gguf']);
 */
export function runExportCli(argv: string[], io: Io = { log: (s) => console.log(s), error: (s) => console.error(s) }): number {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.log(USAGE);
    return 0;
  }
  const a = parse(argv);
  if (typeof a === 'string') {
    io.error(`qgrad export: ${a}\n${USAGE}`);
    return 2;
  }
  if (a.format === 'onnx') {
    io.error('qgrad export: --format onnx takes Sequential MLPs/CNNs (exportOnnx in @qgrad/quant); a checkpoint directory holds a Llama, which has no ONNX mapping here');
    return 2;
  }
  try {
    const llama = loadLlama(a.src);
    if (a.weight) {
      const grid = (a.weight.startsWith('int') ? 'int' : a.weight) as GridName;
      const weight: WeightQuantConfig = { grid, ...(grid === 'int' && { bits: Number(a.weight.slice(3)), scale: 'absmax' }), ...(a.group && { granularity: { group: a.group } }) };
      prepareQAT(llama, { default: { weight }, types: ['Linear'] });
      convert(llama);
    }
    if (a.format === 'gguf') {
      const r = exportGguf(llama, a.out, { type: a.type });
      const fromCodes = r.tensors.filter((t) => t.source === 'codes').length;
      const worst = r.tensors.reduce((m, t) => Math.max(m, t.maxAbsError), 0);
      io.log(`wrote ${a.out}: ${r.bytes.length} bytes, ${r.tensors.length} tensors (${fromCodes} from QAT codes), largest weight difference ${worst.toExponential(2)}`);
    } else {
      saveQuantized(llama, a.out);
      io.log(`wrote ${a.out}`);
    }
    return 0;
  } catch (e) {
    io.error(`qgrad export: ${(e as Error).message}`);
    return 1;
  }
}
