/**
 * @file The `qgrad` command line (runCli, runExportCli, runConvertCli): a Llama checkpoint
 * directory to GGUF, to a quantized safetensors that loads back with the same logits, and to a
 * quantized checkpoint directory; ViT and Sequential (MNIST MLP/CNN) checkpoint directories (float
 * or converted) to ONNX that onnxruntime-node runs to qgrad's logits; usage errors exit 2 with one line; the package's bin
 * entry is one `npm ci` can link before anything is built.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { Generator, noGrad, randn, saveSafetensors, tensor } from '@qgrad/core';
import { configToHf, Conv2d, Flatten, Linear, Llama, MaxPool2d, ReLU, savePretrained, Sequential, ViT, type LlamaConfig } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const dir = mkdtempSync(join(tmpdir(), 'qgrad-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cfg: LlamaConfig = { vocabSize: 256, dim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, hiddenDim: 64, maxSeqLen: 16, normEps: 1e-5, ropeTheta: 1e4, tieWordEmbeddings: false };

describe('qgrad export', () => {
  const ckpt = join(dir, 'ckpt');
  mkdirSync(ckpt);
  const llama = new Llama(cfg, { generator: new Generator(5) });
  writeFileSync(join(ckpt, 'config.json'), JSON.stringify(configToHf(cfg)));
  saveSafetensors(join(ckpt, 'model.safetensors'), llama.stateDict());
  const lines: string[] = [];
  const io = { log: (s: string) => lines.push(s), error: (s: string) => lines.push(s) };

  it('writes GGUF from a float checkpoint, and int4 safetensors that reload to the same logits', () => {
    expect(Q.runExportCli(['--format', 'gguf', '--type', 'Q8_0', ckpt, join(dir, 'm.gguf')], io)).toBe(0);
    const f = Q.readGguf(new Uint8Array(readFileSync(join(dir, 'm.gguf'))));
    expect(f.tensors.find((t) => t.name === 'blk.0.ffn_up.weight')!.type).toBe('Q8_0');
    const q = join(dir, 'q');
    mkdirSync(q);
    writeFileSync(join(q, 'config.json'), JSON.stringify(configToHf(cfg)));
    expect(Q.runExportCli(['--format=safetensors', '--weight', 'int4', '--group', '32', ckpt, join(q, 'model.safetensors')], io)).toBe(0);
    const back = Q.loadQuantized(join(q, 'model.safetensors'), new Llama(cfg));
    expect(back.getSubmodule('model.layers.0.mlp.up_proj')).toBeInstanceOf(Q.QuantizedLinear);
    // and the quantized checkpoint goes on to GGUF with its codes
    expect(Q.runExportCli(['--format', 'gguf', '--type', 'Q4_0', q, join(dir, 'q4.gguf')], io)).toBe(0);
    expect(lines.at(-1)).toMatch(/8 from QAT codes/);
    const ids = tensor([[1, 2, 3]], { dtype: 'int32' });
    const again = Q.loadQuantized(join(q, 'model.safetensors'), new Llama(cfg));
    expect(Array.from(noGrad(() => again.forward(ids)).dataSync())).toEqual(Array.from(noGrad(() => back.forward(ids)).dataSync()));
  });

  it('exits 2 with one line naming the mistake on usage errors', () => {
    const cases: [string[], string][] = [
      [['--format', 'zip', 'a', 'b'], "--format must be safetensors, gguf or onnx, got 'zip'"],
      [['--format', 'gguf', 'a'], 'expected <checkpoint-dir> <out>, got 1 path'],
      [['--format', 'gguf', '--type', 'Q5_K', 'a', 'b'], "--type must be one of F32, F16, Q4_0, Q8_0, TQ1_0, TQ2_0, got 'Q5_K'"],
      [['--format', 'onnx', ckpt, 'x.onnx'], '--format onnx takes a ViT or Sequential checkpoint (model_type vit or qgrad-sequential)'],
      [['--format', 'onnx', '--int4', 'nf4', ckpt, 'x.onnx'], "--int4 must be matmulnbits or qdq, got 'nf4'"],
      [['--bogus', '1', 'a', 'b'], 'unknown flag --bogus'],
      [['--format', 'gguf', '--weight', 'int3', 'a', 'b'], "--weight must be int8, int4, nf4, ternary, got 'int3'"],
    ];
    for (const [argv, message] of cases) {
      const errors: string[] = [];
      expect(Q.runExportCli(argv, { log: () => {}, error: (s) => errors.push(s) }), argv.join(' ')).toBe(2);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toContain(`qgrad export: ${message}`);
      expect(errors[0]).not.toContain('\n');
    }
    expect(Q.runExportCli(['--format', 'gguf', join(dir, 'missing'), 'x.gguf'], io)).toBe(1);
  });
});

describe('qgrad export --format onnx (ViT)', () => {
  const ckpt = join(dir, 'vit');
  const cfg = { imageSize: 8, patchSize: 4, inChannels: 1, numClasses: 3, dim: 32, depth: 1, numHeads: 2, mlpDim: 64 };
  savePretrained(new ViT(cfg, { generator: new Generator(8) }), ckpt);
  const lines: string[] = [];
  const io = { log: (s: string) => lines.push(s), error: (s: string) => lines.push(s) };
  const x = randn([1, 1, 8, 8], { generator: new Generator(3) });
  async function ortLogits(path: string): Promise<Float32Array> {
    // float activations in ORT's DequantizeLinear → MatMul fusion (its default, level 4, quantizes them to int8)
    const session = await ort.InferenceSession.create(path, { extra: { session: { qdq_matmulnbits_accuracy_level: '0' } } });
    return (await session.run({ input: new ort.Tensor('float32', Float32Array.from(x.dataSync()), [1, 1, 8, 8]) })).output!.data as Float32Array;
  }

  it('a float checkpoint with --weight int4 --group 16, and the checkpoint qgrad convert writes, run in onnxruntime to qgrad logits', async () => {
    const direct = join(dir, 'vit-w4.onnx');
    expect(Q.runExportCli(['--format', 'onnx', '--weight', 'int4', '--group', '16', ckpt, direct], io)).toBe(0);
    expect(lines.at(-1)).toMatch(/8 weight layers \(7 MatMulNBits, 0 QDQ, 1 float\)/);
    const converted = join(dir, 'vit-w4');
    expect(await Q.runCli(['convert', '--weight', 'int4', '--group', '16', ckpt, converted], io)).toBe(0);
    const model = Q.loadQuantized(join(converted, 'model.safetensors'), new ViT(cfg));
    const want = noGrad(() => model.forward(x)).dataSync();
    const fromConverted = join(dir, 'vit-w4-qdq.onnx');
    expect(await Q.runCli(['export', '--format', 'onnx', '--int4', 'qdq', converted, fromConverted], io)).toBe(0);
    expect(lines.at(-1)).toMatch(/\(0 MatMulNBits, 7 QDQ, 1 float\)/);
    for (const path of [direct, fromConverted]) {
      const got = await ortLogits(path);
      expect(Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i]!))), path).toBeLessThan(1e-5);
    }
  });

  it('refuses GGUF for a ViT', () => {
    expect(Q.runExportCli(['--format', 'gguf', ckpt, join(dir, 'vit.gguf')], io)).toBe(2);
    expect(lines.at(-1)).toContain('--format gguf takes a Llama checkpoint');
  });
});

describe('qgrad export --format onnx (MLP and CNN checkpoints)', () => {
  const lines: string[] = [];
  const io = { log: (s: string) => lines.push(s), error: (s: string) => lines.push(s) };
  async function ortLogits(path: string, x: ReturnType<typeof randn>, graphOptimizationLevel: 'disabled' | 'all' = 'all'): Promise<Float32Array> {
    const session = await ort.InferenceSession.create(path, { graphOptimizationLevel, extra: { session: { qdq_matmulnbits_accuracy_level: '0' } } });
    return (await session.run({ input: new ort.Tensor('float32', Float32Array.from(x.dataSync()), x.shape) })).output!.data as Float32Array;
  }
  const gap = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)));

  it('an MLP: float with --weight int4 --group 16, and what qgrad convert writes, run in onnxruntime to qgrad logits', async () => {
    const g = new Generator(11);
    const ckpt = join(dir, 'mlp');
    Q.saveSequentialCheckpoint(new Sequential(new Linear(64, 32, { generator: g }), new ReLU(), new Linear(32, 10, { generator: g })), ckpt, [1, 64]);
    const x = randn([3, 64], { generator: new Generator(12) });
    const direct = join(dir, 'mlp-w4.onnx');
    expect(await Q.runCli(['export', '--format', 'onnx', '--weight', 'int4', '--group', '16', ckpt, direct], io)).toBe(0);
    expect(lines.at(-1)).toMatch(/\(2 MatMulNBits, 0 QDQ, 0 float\)/);
    const converted = join(dir, 'mlp-w4');
    expect(await Q.runCli(['convert', '--weight', 'int4', '--group', '16', ckpt, converted], io)).toBe(0);
    const config = JSON.parse(readFileSync(join(converted, 'config.json'), 'utf8')) as Record<string, unknown>;
    const model = Q.loadQuantized(join(converted, 'model.safetensors'), Q.sequentialFromConfig(config));
    expect(model.at(0)).toBeInstanceOf(Q.QuantizedLinear);
    const want = noGrad(() => model.forward(x)).dataSync();
    const fromConverted = join(dir, 'mlp-w4-qdq.onnx');
    expect(await Q.runCli(['export', '--format', 'onnx', '--int4', 'qdq', converted, fromConverted], io)).toBe(0);
    expect(lines.at(-1)).toMatch(/\(0 MatMulNBits, 2 QDQ, 0 float\)/);
    // a batch of 3 through the symbolic batch dim of input_shape [1, 64]
    for (const path of [direct, fromConverted]) expect(gap(await ortLogits(path, x), want), path).toBeLessThan(1e-5);
  });

  it('a CNN converted with int8 convs and inputs, and its float checkpoint, run in onnxruntime to qgrad logits', async () => {
    const g = new Generator(13);
    const cnn = new Sequential(
      new Conv2d(1, 4, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 4, 4, 4]
      new Conv2d(4, 8, 3, { padding: 1, stride: 2, generator: g }), new ReLU(), // [B, 8, 2, 2]
      new Flatten(), new Linear(8 * 2 * 2, 5, { generator: g }),
    );
    const x = randn([2, 1, 8, 8], { generator: new Generator(14) });
    const float = join(dir, 'cnn-float');
    Q.saveSequentialCheckpoint(cnn, float, [1, 1, 8, 8]);
    expect(await Q.runCli(['export', '--format', 'onnx', float, join(dir, 'cnn-float.onnx')], io)).toBe(0);
    expect(gap(await ortLogits(join(dir, 'cnn-float.onnx'), x), noGrad(() => cnn.forward(x)).dataSync())).toBeLessThan(1e-5);

    Q.prepareQAT(cnn, { default: { weight: { grid: 'int', bits: 8, granularity: 'channel' }, input: { bits: 8 } }, types: ['Linear', 'Conv2d'] });
    cnn.train();
    noGrad(() => cnn.forward(x)); // input scales from one batch
    cnn.eval();
    Q.convert(cnn);
    const want = noGrad(() => cnn.forward(x)).dataSync();
    const ckpt = join(dir, 'cnn-w8a8');
    Q.saveSequentialCheckpoint(cnn, ckpt, [1, 1, 8, 8]);
    const config = JSON.parse(readFileSync(join(ckpt, 'config.json'), 'utf8')) as Q.SequentialConfig;
    expect(config.layers.map((l) => l.type)).toEqual(['Conv2d', 'ReLU', 'MaxPool2d', 'Conv2d', 'ReLU', 'Flatten', 'Linear']);
    expect(config.layers[3]).toMatchObject({ in_channels: 4, out_channels: 8, kernel_size: [3, 3], stride: 2, padding: 1 });
    const out = join(dir, 'cnn-w8a8.onnx');
    expect(await Q.runCli(['export', '--format', 'onnx', ckpt, out], io)).toBe(0);
    expect(lines.at(-1)).toMatch(/\(0 MatMulNBits, 3 QDQ, 0 float\)/);
    // the file's own (float) semantics: every node as written
    expect(gap(await ortLogits(out, x, 'disabled'), want)).toBeLessThan(1e-5);
    // optimised, ORT fuses DequantizeLinear → Conv → Relu → QuantizeLinear into an integer QLinearConv
    // whose fixed-point requantization may round an activation one int8 step away from qgrad's
    // float32 rounding (measured 4.9e-3 against logits of at most 0.2 here; 1.5e-8 unfused)
    expect(gap(await ortLogits(out, x), want)).toBeLessThan(0.05 * Math.max(...Array.from(want, Math.abs)));
  });

  it('takes the CNN directory qgrad train writes: onnxruntime gives the converted model its logits', async () => {
    const out = join(dir, 'train-cnn');
    const quiet = { log: () => {}, error: (s: string) => lines.push(s) };
    const flags = ['--model', 'cnn', '--bits', '8', '--act-bits', '8', '--steps', '2', '--batch-size', '8', '--train-limit', '16', '--test-limit', '20', '--eval-every', '2'];
    expect(await Q.runCli(['train', ...flags, '--out', out], quiet)).toBe(0);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Q.SequentialConfig;
    expect(config).toMatchObject({ model_type: 'qgrad-sequential', input_shape: [1, 1, 28, 28] });
    const model = Q.loadQuantized(join(out, 'model.safetensors'), Q.sequentialFromConfig(config as unknown as Record<string, unknown>));
    const x = randn([2, 1, 28, 28], { generator: new Generator(15) });
    const want = noGrad(() => model.forward(x)).dataSync();
    expect(await Q.runCli(['export', '--format', 'onnx', out, join(dir, 'train-cnn.onnx')], io)).toBe(0);
    expect(gap(await ortLogits(join(dir, 'train-cnn.onnx'), x, 'disabled'), want)).toBeLessThan(1e-5 * Math.max(...Array.from(want, Math.abs)) + 1e-6);
  }, 60_000);

  it('refuses GGUF for a Sequential and names the layer of a config.json it cannot build', async () => {
    expect(await Q.runCli(['export', '--format', 'gguf', join(dir, 'mlp'), join(dir, 'mlp.gguf')], io)).toBe(2);
    expect(lines.at(-1)).toContain('--format gguf takes a Llama checkpoint (model_type llama); ');
    expect(lines.at(-1)).toContain('holds a Sequential');
    const broken = join(dir, 'mlp-broken');
    mkdirSync(broken);
    writeFileSync(join(broken, 'model.safetensors'), readFileSync(join(dir, 'mlp', 'model.safetensors')));
    writeFileSync(join(broken, 'config.json'), JSON.stringify({ model_type: 'qgrad-sequential', input_shape: [1, 64], layers: [{ type: 'Linear', in_features: 64, out_features: 32 }, { type: 'Softmax' }] }));
    expect(await Q.runCli(['export', '--format', 'onnx', broken, join(dir, 'broken.onnx')], io)).toBe(1);
    expect(lines.at(-1)).toMatch(/layer 1 \(Softmax\): unknown type/);
  });
});

describe('qgrad convert', () => {
  const ckpt = join(dir, 'float');
  mkdirSync(ckpt);
  const llama = new Llama(cfg, { generator: new Generator(6) });
  writeFileSync(join(ckpt, 'config.json'), JSON.stringify(configToHf(cfg)));
  saveSafetensors(join(ckpt, 'model.safetensors'), llama.stateDict());

  it('writes a quantized checkpoint directory that qgrad export turns into GGUF from its codes', async () => {
    const lines: string[] = [];
    const io = { log: (s: string) => lines.push(s), error: (s: string) => lines.push(s) };
    const out = join(dir, 'converted', 'w8');
    expect(await Q.runCli(['convert', '--weight', 'int8', ckpt, out], io)).toBe(0);
    const back = Q.loadQuantized(join(out, 'model.safetensors'), new Llama(cfg));
    expect(back.getSubmodule('model.layers.0.self_attn.q_proj')).toBeInstanceOf(Q.QuantizedLinear);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))).toEqual(configToHf(cfg));
    // int8 round to nearest stays close to the float model
    const ids = tensor([[4, 5, 6]], { dtype: 'int32' });
    const a = noGrad(() => llama.forward(ids)).dataSync();
    const b = noGrad(() => back.forward(ids)).dataSync();
    expect(Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)))).toBeLessThan(0.05);
    expect(await Q.runCli(['export', '--format', 'gguf', '--type', 'Q8_0', out, join(dir, 'w8.gguf')], io)).toBe(0);
    expect(lines.at(-1)).toMatch(/\(\d+ from QAT codes\)/);
    expect(lines.at(-1)).not.toMatch(/\(0 from QAT codes\)/);
  });

  it('refuses a missing --weight (exit 2) and an already quantized checkpoint (exit 1)', async () => {
    const errors: string[] = [];
    const io = { log: () => {}, error: (s: string) => errors.push(s) };
    expect(await Q.runCli(['convert', ckpt, join(dir, 'never')], io)).toBe(2);
    expect(errors.at(-1)).toContain('qgrad convert: --weight is required');
    expect(await Q.runCli(['convert', '--weight', 'int4', join(dir, 'converted', 'w8'), join(dir, 'twice')], io)).toBe(1);
    expect(errors.at(-1)).toContain('is already quantized');
  });
});

describe('qgrad', () => {
  it('lists its commands on --help and refuses unknown commands and flags with one line, exit 2', async () => {
    const out: string[] = [];
    const errors: string[] = [];
    const io = { log: (s: string) => out.push(s), error: (s: string) => errors.push(s) };
    expect(await Q.runCli(['--help'], io)).toBe(0);
    expect(out.join('\n')).toMatch(/train .*\n.*export .*\n.*convert /);
    for (const [argv, message] of [[['fit'], "unknown command 'fit'"], [['--verbose'], "unknown flag '--verbose'"]] as const) {
      expect(await Q.runCli([...argv], io)).toBe(2);
      expect(errors.at(-1)).toContain(`qgrad: ${message}`);
      expect(errors.at(-1)).not.toContain('\n');
    }
    expect(await Q.runCli([], io)).toBe(2);
  });

  it('has a bin that npm ci links in a fresh checkout and that runs the sources from any directory', () => {
    const quant = fileURLToPath(new URL('../..', import.meta.url));
    const repo = join(quant, '../..');
    const bin = (JSON.parse(readFileSync(join(quant, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin.qgrad!;
    // npm ci links bins from the lockfile's copy of the manifest, and skips one whose file is absent
    const lock = JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8')) as { packages: Record<string, { bin?: Record<string, string> }> };
    expect(lock.packages['packages/quant']!.bin).toEqual({ qgrad: bin.replace(/^\.\//, '') });
    expect(bin).not.toMatch(/dist\//);
    expect(existsSync(join(quant, bin))).toBe(true);
    const run = spawnSync(process.execPath, [join(quant, bin), 'export', '--help'], { cwd: dir, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/--format/);
  });
});
