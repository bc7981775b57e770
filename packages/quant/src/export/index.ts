/**
 * @file Quantized models leave qgrad: packed safetensors (compressed-tensors names), GGUF for
 * llama.cpp (and the reference-logits file its KL-divergence check reads) and ONNX QDQ, each with
 * a validating reader.
 */
export { FormatError, floatToHalf, halfToFloat } from './bytes.js';
export * from './safetensors.js';
export * from './ggml.js';
export * from './gguf.js';
export * from './llama-logits.js';
export * from './onnx.js';
export * from './sequential-config.js';
export { runCli, runExportCli, runConvertCli, type CliIo } from './cli.js';
