/**
 * @file metrics.jsonl reading (the training API's MetricsWriter/readMetrics) and rewriting: a torn last line (a process killed mid-append) is
 * dropped with a warning naming the file, a bad line before it is an error naming file and line,
 * NaN and ±∞ survive a round trip, and the resume rewrite is atomic and leaves no debris.
 */
import { appendFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { Linear, SGD, encodeRecord, MetricsWriter, readMetrics, writeFileAtomic, fit } from '@qgrad/nn';
import { scratchDirs } from '../helpers.js';

const freshDir = scratchDirs('metrics');
const lines = (...records: object[]) => records.map((r) => `${JSON.stringify(r)}\n`).join('');

describe('readMetrics', () => {
  it('drops a torn last line with a warning that names the file and line', () => {
    const path = join(freshDir(), 'metrics.jsonl');
    writeFileSync(path, `${lines({ step: 1, loss: 2 }, { step: 2, loss: 1.5 })}{"step":3,"lo`);
    const warn = vi.fn();
    expect(readMetrics(path, warn)).toEqual([{ step: 1, loss: 2 }, { step: 2, loss: 1.5 }]);
    expect(warn).toHaveBeenCalledOnce();
    expect(warn.mock.calls[0]![0]).toContain(path);
    expect(warn.mock.calls[0]![0]).toContain('line 3');
  });

  it('reads a whole file without warning', () => {
    const path = join(freshDir(), 'metrics.jsonl');
    writeFileSync(path, `${lines({ step: 1, loss: 2 })}\n\n`);
    const warn = vi.fn();
    expect(readMetrics(path, warn)).toEqual([{ step: 1, loss: 2 }]);
    expect(warn).not.toHaveBeenCalled();
  });

  it('throws on a malformed line before the last, naming the file and line number', () => {
    const path = join(freshDir(), 'metrics.jsonl');
    writeFileSync(path, `${lines({ step: 1 })}{"step":2,"lo\n${lines({ step: 3 })}`);
    expect(() => readMetrics(path, () => {})).toThrow(`${path}:2: malformed metrics line`);
    writeFileSync(path, `${lines({ step: 1 })}[1, 2]\n${lines({ step: 3 })}`);
    expect(() => readMetrics(path, () => {})).toThrow(`${path}:2: malformed metrics line (not a record with a numeric "step")`);
  });

  it('keeps NaN and ±∞ (written as strings, since JSON has none), instead of null', () => {
    const path = join(freshDir(), 'metrics.jsonl');
    const text = encodeRecord({ step: 1, loss: Number.NaN, hi: Infinity, lo: -Infinity, ok: 0.5, name: 'fp' });
    expect(text).toBe('{"step":1,"loss":"NaN","hi":"Infinity","lo":"-Infinity","ok":0.5,"name":"fp"}\n');
    writeFileSync(path, text);
    expect(readMetrics(path)).toEqual([{ step: 1, loss: Number.NaN, hi: Infinity, lo: -Infinity, ok: 0.5, name: 'fp' }]);
  });
});

describe('MetricsWriter on resume', () => {
  it('rewrites the file atomically: records up to the checkpoint, the torn line gone, nothing else in the directory', () => {
    const dir = freshDir();
    const path = join(dir, 'metrics.jsonl');
    writeFileSync(path, `${lines({ step: 0, acc: 0.1 }, { step: 1, loss: 2 }, { step: 2, loss: 1 }, { step: 3, loss: 0.5 })}{"step":4,"loss":0.`);
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const w = new MetricsWriter(path, 2);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining(path));
    warn.mockRestore();
    expect(readFileSync(path, 'utf8')).toBe(lines({ step: 0, acc: 0.1 }, { step: 1, loss: 2 }, { step: 2, loss: 1 }));
    w.write({ step: 3, loss: 0.25 });
    expect(w.all().map((r) => r.step)).toEqual([0, 1, 2, 3]);
    expect(readdirSync(dir)).toEqual(['metrics.jsonl']);
  });

  it('lets fit() resume continue past a torn last line', async () => {
    const dir = freshDir();
    const model = new Linear(2, 1);
    const state = { model, optimizer: new SGD(model.parameters(), { lr: 0.1 }) };
    const run = (resume: boolean, stopAt: number) =>
      fit({ ...state, name: 'torn', dir, steps: 6, resume, evalEvery: 100, ckptEvery: 2, stopAt, progress: false, panels: false, log: () => {}, step: ({ index }) => ({ loss: 1 / (index + 1) }) });
    await run(false, 4);
    appendFileSync(join(dir, 'metrics.jsonl'), '{"step":5,"loss":0.1'); // killed mid-append
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const r = await run(true, 0);
    warn.mockRestore();
    expect(r.records.map((x) => x.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(r.records.at(-1)!.loss).toBe(1 / 6);
  });
});

describe('writeFileAtomic', () => {
  it('replaces the file and leaves no temporary file', () => {
    const dir = freshDir();
    const path = join(dir, 'out.jsonl');
    writeFileSync(path, 'old\n');
    writeFileAtomic(path, 'new ✓\n');
    expect(readFileSync(path, 'utf8')).toBe('new ✓\n');
    expect(readdirSync(dir)).toEqual(['out.jsonl']);
  });

  it('when the rename fails, removes its temporary file and leaves the target as it was', () => {
    const dir = freshDir();
    const target = join(dir, 'busy');
    mkdirSync(target);
    writeFileSync(join(target, 'inside'), 'keep');
    expect(() => writeFileAtomic(target, 'x')).toThrow(); // renaming a file over a non-empty directory fails
    expect(readdirSync(dir)).toEqual(['busy']);
    expect(readdirSync(target)).toEqual(['inside']);
  });

  it('when the directory does not exist, throws and creates nothing', () => {
    const dir = freshDir();
    expect(() => writeFileAtomic(join(dir, 'missing', 'out.jsonl'), 'x')).toThrow(/ENOENT/);
    expect(readdirSync(dir)).toEqual([]);
  });
});
