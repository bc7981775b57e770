/**
 * @file A training progress bar (cli-progress): step/total, the latest metrics, steps per second
 * and ETA. On a non-TTY stream (CI logs) it prints a line every few seconds instead.
 */
import cliProgress from 'cli-progress';

export interface Progress {
  /** Moves the bar to `step` with the latest metrics (numbers are shown with 4 digits). */
  update(step: number, metrics?: Record<string, number | string>): void;
  /** Prints a line above the bar. */
  log(line: string): void;
  stop(): void;
}

/**
 * @example const bar = progress('train', 300, 0); bar.update(1, { loss: 2.3 }); bar.stop();
 */
export function progress(label: string, total: number, start = 0): Progress {
  let text = '';
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} |{bar}| {value}/{total} | {metrics} | {rate} step/s | ETA {eta_formatted}`,
      barsize: 24,
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: 5000,
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  const t0 = performance.now();
  bar.start(total, start, { metrics: '', rate: '-' });
  return {
    update(step, metrics = {}) {
      text = Object.entries(metrics).map(([k, v]) => `${k} ${typeof v === 'number' ? v.toPrecision(4) : v}`).join(' ');
      const rate = (step - start) / ((performance.now() - t0) / 1000);
      bar.update(step, { metrics: text, rate: rate.toFixed(2) });
    },
    log(line) {
      if (process.stdout.isTTY) {
        process.stdout.write('\r\x1b[K');
        console.log(line);
        bar.render();
      } else console.log(line);
    },
    stop() {
      bar.stop();
    },
  };
}
