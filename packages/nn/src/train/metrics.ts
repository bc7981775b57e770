/**
 * @file Metrics as JSON lines (one object per record, each with a `step`), appended as training
 * goes; on resume the lines past the checkpoint's step are dropped (the file rewritten
 * atomically) so the file stays one run. A torn last line, left by a process killed mid-append,
 * is dropped with a warning; any other malformed line is an error naming the file and line.
 * The atomic rewrite is core's `writeFileAtomic`, re-exported here for the training API.
 */
import { writeFileAtomic } from '@qgrad/core';
import { nodeFs } from './node.js';

export { writeFileAtomic };

/** One line of metrics.jsonl: the step it belongs to and named values. */
export type MetricsRecord = { step: number; [key: string]: number | string };

// JSON has no NaN or ±∞ (JSON.stringify writes null): they are stored as these strings and read back as numbers
const NONFINITE = new Set(['NaN', 'Infinity', '-Infinity']);

/**
 * One record as a JSON line (with its newline); NaN and ±∞ become "NaN", "Infinity", "-Infinity".
 * @example encodeRecord({ step: 3, loss: NaN }); // '{"step":3,"loss":"NaN"}\n'
 */
export function encodeRecord(record: object): string {
  return `${JSON.stringify(record, (_, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))}\n`;
}

/**
 * Appends records to a .jsonl file.
 * @example const w = new MetricsWriter('runs/x/metrics.jsonl'); w.write({ step: 1, loss: 2.3 });
 */
export class MetricsWriter {
  /**
   * @param path the .jsonl file
   * @param keepUpTo on resume, the checkpoint's step: earlier records are kept, later ones dropped;
   *   omitted, the file is started afresh
   */
  constructor(readonly path: string, keepUpTo?: number) {
    const fs = nodeFs('MetricsWriter');
    if (keepUpTo === undefined || !fs.existsSync(path)) fs.writeFileSync(path, '');
    else writeFileAtomic(path, readMetrics(path).filter((r) => r.step <= keepUpTo).map(encodeRecord).join(''));
  }
  /** Appends one line. */
  write(record: MetricsRecord): void {
    nodeFs('MetricsWriter').appendFileSync(this.path, encodeRecord(record));
  }
  /** Every record in the file. */
  all(): MetricsRecord[] {
    return readMetrics(this.path);
  }
}

/**
 * The records of a .jsonl file. A last line that does not parse is taken for a write cut off by
 * a crash and dropped with a warning (appends only ever tear at the end); a bad line before it
 * throws, naming the file and line number.
 * @example const losses = readMetrics('runs/x/metrics.jsonl').map((r) => r.loss);
 */
export function readMetrics(path: string, warn: (message: string) => void = console.warn): MetricsRecord[] {
  const lines = nodeFs('readMetrics').readFileSync(path, 'utf8').split('\n');
  let last = lines.length - 1;
  while (last >= 0 && !lines[last]!.trim()) last--;
  const records: MetricsRecord[] = [];
  for (let i = 0; i <= last; i++) {
    const line = lines[i]!;
    if (!line.trim()) continue;
    let record: unknown;
    let problem = '';
    try {
      record = JSON.parse(line, (_, v: unknown) => (typeof v === 'string' && NONFINITE.has(v) ? Number(v) : v));
      if (typeof record !== 'object' || record === null || Array.isArray(record) || typeof (record as MetricsRecord).step !== 'number') problem = 'not a record with a numeric "step"';
    } catch (e) {
      problem = (e as Error).message;
    }
    if (!problem) records.push(record as MetricsRecord);
    else if (i === last) warn(`${path}: dropped its last line (line ${i + 1}, ${line.length} characters), cut off by an interrupted write: ${problem}`);
    else throw new Error(`${path}:${i + 1}: malformed metrics line (${problem}): ${line.length > 80 ? `${line.slice(0, 80)}…` : line}`);
  }
  return records;
}
