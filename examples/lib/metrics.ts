/**
 * @file Metrics as JSON lines (one object per record, each with a `step`), appended as training
 * goes; on resume the lines past the checkpoint's step are dropped (the file rewritten
 * atomically) so the file stays one run. A torn last line, left by a process killed mid-append,
 * is dropped with a warning; any other malformed line is an error naming the file and line.
 */
import { appendFileSync, closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export type Record_ = { step: number; [key: string]: number | string };

// JSON has no NaN or ±∞ (JSON.stringify writes null): they are stored as these strings and read back as numbers
const NONFINITE = new Set(['NaN', 'Infinity', '-Infinity']);

/** One record as a JSON line (with its newline); NaN and ±∞ become "NaN", "Infinity", "-Infinity". */
export function encodeRecord(record: object): string {
  return `${JSON.stringify(record, (_, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))}\n`;
}

export class MetricsWriter {
  /**
   * @param path the .jsonl file
   * @param keepUpTo on resume, the checkpoint's step: earlier records are kept, later ones dropped;
   *   omitted, the file is started afresh
   */
  constructor(readonly path: string, keepUpTo?: number) {
    if (keepUpTo === undefined || !existsSync(path)) writeFileSync(path, '');
    else writeFileAtomic(path, readMetrics(path).filter((r) => r.step <= keepUpTo).map(encodeRecord).join(''));
  }
  write(record: Record_): void {
    appendFileSync(this.path, encodeRecord(record));
  }
  all(): Record_[] {
    return readMetrics(this.path);
  }
}

/**
 * The records of a .jsonl file. A last line that does not parse is taken for a write cut off by
 * a crash and dropped with a warning (appends only ever tear at the end); a bad line before it
 * throws, naming the file and line number.
 */
export function readMetrics(path: string, warn: (message: string) => void = console.warn): Record_[] {
  const lines = readFileSync(path, 'utf8').split('\n');
  let last = lines.length - 1;
  while (last >= 0 && !lines[last]!.trim()) last--;
  const records: Record_[] = [];
  for (let i = 0; i <= last; i++) {
    const line = lines[i]!;
    if (!line.trim()) continue;
    let record: unknown;
    let problem = '';
    try {
      record = JSON.parse(line, (_, v: unknown) => (typeof v === 'string' && NONFINITE.has(v) ? Number(v) : v));
      if (typeof record !== 'object' || record === null || Array.isArray(record) || typeof (record as Record_).step !== 'number') problem = 'not a record with a numeric "step"';
    } catch (e) {
      problem = (e as Error).message;
    }
    if (!problem) records.push(record as Record_);
    else if (i === last) warn(`${path}: dropped its last line (line ${i + 1}, ${line.length} characters), cut off by an interrupted write: ${problem}`);
    else throw new Error(`${path}:${i + 1}: malformed metrics line (${problem}): ${line.length > 80 ? `${line.slice(0, 80)}…` : line}`);
  }
  return records;
}

/**
 * Replaces `path` by `text` atomically: a temporary file in the same directory is written and
 * fsynced, then renamed over `path`, so a crash leaves the old file or the new one, never half;
 * if any step fails the temporary file is removed and the error rethrown.
 */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
  try {
    const bytes = Buffer.from(text, 'utf8');
    const fd = openSync(tmp, 'w');
    try {
      for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
