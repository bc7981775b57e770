/**
 * @file The QAT Llama loop's own guards: a diverging run (lr 10⁴) stops at the step whose loss is
 * NaN, with the metrics written up to it; --allow-nonfinite runs on and records NaN, not null;
 * flags only the text can check (--seq-len, --batch-size) are CliErrors.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CliError } from './args.js';
import { readMetrics } from './metrics.js';
import { runQatLlama, type QatLlamaOptions } from './qat-llama.js';
import { NonFiniteLossError } from './train.js';

const root = mkdtempSync(join(tmpdir(), 'qgrad-qat-llama-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const tiny: QatLlamaOptions = { config: 'fp', seed: 0, steps: 20, batchSize: 2, seqLen: 8, lr: 1e4, dim: 16, layers: 1, valBlocks: 1 };

describe('runQatLlama', () => {
  it('stops a diverging run at the NaN step and keeps the metrics up to it', () => {
    const dir = join(root, 'stop');
    let err: unknown;
    try {
      runQatLlama({ ...tiny, dir });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NonFiniteLossError);
    const e = err as NonFiniteLossError;
    expect(e.message).toContain(`stopped at step ${e.step}: the training loss is ${e.value} (fp, seed 0)`);
    const records = readMetrics(join(dir, 'metrics.jsonl'));
    expect(records.map((r) => r.step)).toEqual(Array.from({ length: e.step }, (_, i) => i + 1));
    expect(Number.isFinite(records.at(-1)!.bpb)).toBe(false);
  });

  it('with allowNonfinite, runs every step and records NaN rather than null', () => {
    const dir = join(root, 'allow');
    const r = runQatLlama({ ...tiny, dir, allowNonfinite: true });
    expect(r.steps).toBe(20);
    const text = readFileSync(join(dir, 'metrics.jsonl'), 'utf8');
    expect(text).not.toContain('null');
    expect(readMetrics(join(dir, 'metrics.jsonl')).map((x) => x.step)).toEqual([...Array.from({ length: 20 }, (_, i) => i + 1), 20]);
  });

  it('turns a window longer than the text or a batch larger than it into flag errors', () => {
    expect(() => runQatLlama({ ...tiny, seqLen: 10_000_000 })).toThrow(CliError);
    expect(() => runQatLlama({ ...tiny, seqLen: 10_000_000 })).toThrow(/^--seq-len 10000000 is too long for the text/);
    expect(() => runQatLlama({ ...tiny, batchSize: 1e9 })).toThrow(/^--batch-size must be an integer in \[1, \d+\] \(there are \d+ training windows\), got 1000000000/);
  });
});
