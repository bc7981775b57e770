/**
 * @file The progress bar callback: step/total, the latest metrics, steps per second and ETA,
 * drawn by cli-progress (an optional dependency, imported when a run starts). On a stream that is
 * not a terminal (CI logs), or without cli-progress, it prints a plain line every few seconds.
 */
import { proc } from './node.js';
import type { Callback, RunContext } from './trainer.js';
import type { MetricsRecord } from './metrics.js';

/** The part of cli-progress's SingleBar this file uses. */
interface Bar {
  start(total: number, value: number, payload: Record<string, string>): void;
  update(value: number, payload: Record<string, string>): void;
  render(): void;
  stop(): void;
}

/** cli-progress, or null when it is not installed (a non-literal specifier keeps bundlers from pulling it into browser builds). */
async function loadCliProgress(): Promise<{ SingleBar: new (opts: object, preset: object) => Bar; Presets: { shades_classic: object } } | null> {
  const name = 'cli-progress';
  try {
    const m = (await import(/* @vite-ignore */ name)) as { default?: unknown };
    return (m.default ?? m) as never;
  } catch {
    return null;
  }
}

/** Options of ProgressBar. */
export interface ProgressBarOptions {
  /** Seconds between plain lines when there is no terminal (default 5). */
  every?: number;
  /** Draw the bar even when stdout is not a terminal (cli-progress then prints on a schedule). */
  force?: boolean;
}

const fmt = (v: number | string) => (typeof v === 'number' ? v.toPrecision(4) : v);
const clock = (s: number) => (Number.isFinite(s) ? (s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(0)}s`) : '-');

/**
 * A terminal progress bar (`name |████░░| 120/300 | loss 1.234 | 12.3 step/s | ETA 15s`) that
 * also takes the run's log lines, printing them above itself.
 * @example await fit({ ...opts, callbacks: [new ProgressBar()] });
 */
export class ProgressBar implements Callback {
  #bar: Bar | null = null;
  #t0 = 0;
  #start = 0;
  #total = 0;
  #lastLine = 0;
  #label = '';
  #previous: ((line: string) => void) | null = null;
  constructor(readonly options: ProgressBarOptions = {}) {}

  async onBegin(ctx: RunContext): Promise<void> {
    this.#t0 = performance.now();
    this.#start = ctx.startStep;
    this.#total = ctx.steps;
    this.#label = ctx.name;
    const out = proc()?.stdout;
    const tty = !!out?.isTTY;
    const lib = tty || this.options.force ? await loadCliProgress() : null;
    if (!lib || !out) return;
    this.#bar = new lib.SingleBar(
      { format: `${ctx.name} |{bar}| {value}/{total} | {metrics} | {rate} step/s | ETA {eta_formatted}`, barsize: 24, hideCursor: true, noTTYOutput: true, notTTYSchedule: (this.options.every ?? 5) * 1000, etaBuffer: 20 },
      lib.Presets.shades_classic,
    );
    this.#bar.start(ctx.steps, ctx.startStep, { metrics: '', rate: '-' });
    this.#previous = ctx.setLogger((line) => {
      if (tty) {
        out.write('\r\x1b[K');
        console.log(line);
        this.#bar?.render();
      } else console.log(line);
    });
  }

  onRecord(_ctx: RunContext, record: MetricsRecord, kind: 'train' | 'eval'): void {
    if (kind !== 'train') return;
    const text = Object.entries(record).filter(([k]) => k !== 'step').map(([k, v]) => `${k} ${fmt(v)}`).join(' ');
    const now = performance.now();
    const rate = (record.step - this.#start) / ((now - this.#t0) / 1000);
    if (this.#bar) return this.#bar.update(record.step, { metrics: text, rate: rate.toFixed(2) });
    // no terminal: a line every few seconds, and the last step
    if (now - this.#lastLine < (this.options.every ?? 5) * 1000 && record.step !== this.#total) return;
    this.#lastLine = now;
    console.log(`${this.#label} ${record.step}/${this.#total} | ${text} | ${rate.toFixed(2)} step/s | ETA ${clock((this.#total - record.step) / rate)}`);
  }

  onEnd(ctx: RunContext): void {
    this.#bar?.stop();
    this.#bar = null;
    if (this.#previous) ctx.setLogger(this.#previous);
    this.#previous = null;
  }
}
