/**
 * @file `qgrad export` (runExportCli): a Llama checkpoint directory to GGUF and to a quantized
 * safetensors that loads back with the same logits; usage errors exit 2 with a message.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Generator, noGrad, saveSafetensors, tensor } from '@qgrad/core';
import { configToHf, Llama, type LlamaConfig } from '@qgrad/nn';
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

  it('exits 2 with a message on usage errors', () => {
    for (const argv of [['--format', 'zip', 'a', 'b'], ['--format', 'gguf', 'a'], ['--format', 'gguf', '--type', 'Q5_K', 'a', 'b'], ['--format', 'onnx', ckpt, 'x.onnx'], ['--bogus', '1', 'a', 'b']]) {
      expect(Q.runExportCli(argv, io)).toBe(2);
    }
    expect(Q.runExportCli(['--format', 'gguf', join(dir, 'missing'), 'x.gguf'], io)).toBe(1);
  });
});
