/**
 * @file Metrics as JSON lines (one object per record, each with a `step`), appended as training
 * goes; on resume the lines past the checkpoint's step are dropped so the file stays one run.
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';

export type Record_ = { step: number; [key: string]: number | string };

export class MetricsWriter {
  /**
   * @param path the .jsonl file
   * @param keepUpTo on resume, the checkpoint's step: earlier records are kept, later ones dropped;
   *   omitted, the file is started afresh
   */
  constructor(readonly path: string, keepUpTo?: number) {
    if (keepUpTo === undefined || !existsSync(path)) writeFileSync(path, '');
    else writeFileSync(path, readMetrics(path).filter((r) => r.step <= keepUpTo).map((r) => `${JSON.stringify(r)}\n`).join(''));
  }
  write(record: Record_): void {
    appendFileSync(this.path, `${JSON.stringify(record)}\n`);
  }
  all(): Record_[] {
    return readMetrics(this.path);
  }
}

export function readMetrics(path: string): Record_[] {
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Record_);
}
