/**
 * @file `qgrad train` (runTrainCli, and through runCli): a few QAT steps on a slice of MNIST write
 * the run directory and a quantized model that loadQuantized reads back to the printed accuracy;
 * the tiny Llama's directory goes on through qgrad export to GGUF;
 * stopping and resuming gives the uninterrupted run's metrics and model bytes; usage errors are one
 * line and exit 2.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { noGrad } from '@qgrad/core';
import { Linear, loadMnist, readMetrics, ReLU, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const dir = mkdtempSync(join(tmpdir(), 'qgrad-train-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// a small slice keeps each run to a second or two; 6 steps with eval every 2 exercise the schedule
const tiny = ['--hidden', '16', '--steps', '6', '--batch-size', '8', '--train-limit', '64', '--test-limit', '50', '--eval-every', '2', '--seed', '3'];

function collect() {
  const out: string[] = [];
  const errors: string[] = [];
  return { out, errors, io: { log: (s: string) => out.push(s), error: (s: string) => errors.push(s) } };
}

describe('qgrad train', () => {
  it('trains an MLP W4A4 LSQ, writes the run directory and a model.safetensors that loads back to the printed accuracy', async () => {
    const out = join(dir, 'mlp');
    const { out: lines, errors, io } = collect();
    expect(await Q.runCli(['train', ...tiny, '--out', out], io)).toBe(0);
    expect(errors).toEqual([]);
    expect(lines.at(-1)).toMatch(/^qgrad train w4a4-lsq-mlp: test accuracy \d+\.\d\d % \(QAT model, fake-quantized\) → \d+\.\d\d % converted \| 6 steps × batch 8/);
    expect(readFileSync(join(out, 'curves.svg'), 'utf8')).toMatch(/^<svg/);
    const records = readMetrics(join(out, 'metrics.jsonl'));
    expect(records.filter((r) => r.loss !== undefined).map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(records.filter((r) => r.test_acc !== undefined).map((r) => r.step)).toEqual([0, 2, 4, 6]);
    const info = JSON.parse(readFileSync(join(out, 'train.json'), 'utf8')) as { hidden: number; converted: { test_acc: number } };
    expect(info.hidden).toBe(16);
    // train.json says enough to rebuild the float skeleton loadQuantized fills with codes and scales
    const model = Q.loadQuantized(join(out, 'model.safetensors'), new Sequential(new Linear(784, 16), new ReLU(), new Linear(16, 10)));
    expect(model.at(0)).toBeInstanceOf(Q.QuantizedLinear);
    const test = loadMnist({ flatten: true }).test;
    const x = test.images.narrow(0, 0, 50).sub(0.1307).div(0.3081);
    const predicted = noGrad(() => model.forward(x).argmax(-1).eq(test.labels.narrow(0, 0, 50)).sum().item());
    expect(predicted / 50).toBe(info.converted.test_acc);
  }, 60_000);

  it('stopped at step 3 and resumed, its metrics and model equal an uninterrupted run', async () => {
    const full = join(dir, 'full');
    const split = join(dir, 'split');
    const quiet = { log: () => {}, error: (s: string) => expect.fail(s) };
    expect(await Q.runTrainCli([...tiny, '--out', full], quiet)).toBe(0);
    const { out: lines, io } = collect();
    expect(await Q.runTrainCli([...tiny, '--out', split, '--stop-at', '3'], io)).toBe(0);
    expect(lines.at(-1)).toContain('stopped at step 3 of 6');
    expect(await Q.runTrainCli([...tiny, '--out', split, '--resume'], io)).toBe(0);
    expect(lines).toContain('resumed at step 3');
    expect(readMetrics(join(split, 'metrics.jsonl'))).toEqual(readMetrics(join(full, 'metrics.jsonl')));
    expect(readFileSync(join(split, 'model.safetensors')).equals(readFileSync(join(full, 'model.safetensors')))).toBe(true);
  }, 60_000);

  it('trains the CNN with NF4 weights per channel and float inputs', async () => {
    const { out: lines, errors, io } = collect();
    // NF4's default blocks of 64 do not divide the first conv's 8 × 9 weights: hence --granularity
    expect(await Q.runTrainCli(['--model', 'cnn', '--grid', 'nf4', '--granularity', 'channel', '--act-bits', 'none', '--steps', '2', '--batch-size', '4', '--train-limit', '16', '--test-limit', '20', '--out', join(dir, 'cnn')], io), errors.join('\n')).toBe(0);
    expect(lines.at(-1)).toMatch(/^qgrad train nf4-ste-cnn: test accuracy/);
  }, 60_000);

  it('trains the tiny Llama on Moby-Dick into a directory qgrad export turns into GGUF from its QAT codes', async () => {
    const out = join(dir, 'llama');
    const { out: lines, errors, io } = collect();
    expect(await Q.runCli(['train', '--model', 'llama', '--steps', '2', '--batch-size', '2', '--seq-len', '16', '--test-limit', '2', '--out', out], io), errors.join('\n')).toBe(0);
    expect(lines.at(-1)).toMatch(/^qgrad train w4a4-lsq-llama: validation bits\/byte \d+\.\d{4} \(QAT model, fake-quantized\) → \d+\.\d{4} converted/);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))).toMatchObject({ model_type: 'llama', max_position_embeddings: 16 });
    expect(await Q.runCli(['export', '--format', 'gguf', '--type', 'Q4_0', out, join(dir, 'llama.gguf')], io), errors.join('\n')).toBe(0);
    // 4 decoder layers × 7 Linears carry codes; the embedding and lm_head stay float
    expect(lines.at(-1)).toMatch(/\(28 from QAT codes\)/);
  }, 60_000);

  it('lists its flags on --help, and refuses bad flags with one line, exit 2', async () => {
    const { out, io } = collect();
    expect(await Q.runCli(['train', '--help'], io)).toBe(0);
    for (const flag of ['--model', '--grid', '--bits', '--granularity', '--act-bits', '--estimator', '--steps', '--batch-size', '--lr', '--seed', '--out', '--resume', '--train-limit', '--test-limit']) expect(out.join('\n')).toContain(`${flag} `);
    const cases: [string[], string][] = [
      [['--model', 'vit'], "--model must be mlp, cnn or llama, got 'vit'"],
      [['--grid', 'int3'], "--grid must be one of"],
      [['--grid', 'nf4', '--bits', '3'], "--bits applies to the int and codebook grids; 'nf4' has fixed levels"],
      [['--granularity', 'row'], "--granularity must be tensor, channel, group<N> or block<N>, got 'row'"],
      [['--act-bits', '1'], "--act-bits must be 2 to 16 or none, got '1'"],
      [['--steps', 'ten'], "--steps must be a non-negative integer, got 'ten'"],
      [['--lr', '-1'], "--lr must be a positive number, got '-1'"],
      [['--batch-size', '65', '--train-limit', '64'], '--batch-size 65 is more than the 64 training digits'],
      [['--test-limit', '2001'], '--test-limit must be 1 to 2000, got 2001'],
      [['--seq-len', '0'], '--seq-len must be at least 1, got 0'],
      [['--epochs', '2'], 'unknown flag --epochs'],
      [['--resume=yes'], 'flag --resume takes no value'],
      [['--out'], 'flag --out needs a value'],
      [['runs/x'], "unexpected argument 'runs/x'"],
    ];
    for (const [argv, message] of cases) {
      const { errors, io } = collect();
      expect(await Q.runCli(['train', ...argv], io), argv.join(' ')).toBe(2);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toContain(`qgrad train: ${message}`);
      expect(errors[0]).not.toContain('\n');
    }
  });
});
