/**
 * @file The shared gpu equality cases (packages/kernels/test/gpu-cases.ts) against the js oracle
 * on one gpu backend, as the browser pages run them: on a page's own thread (gpu-page.ts) and
 * through the worker-forwarded backend of a Web Worker (gpu-worker.ts).
 */
import type { Backend } from '@qgrad/kernels';
import { GPU_CASES, type GpuCaseContext } from '../../packages/kernels/test/gpu-cases.js';

/** Which cases passed, which failed and why, and the largest |gpu − js| per kernel. */
export interface CasesReport {
  passed: string[];
  failed: { name: string; error: string }[];
  maxError: Record<string, number>;
}

/** Runs every case on `backend`, operands in device buffers, `runs` times the Node suite's fast-check runs, seeded. */
export async function runGpuCases(backend: Backend, runs: number, seed: number): Promise<CasesReport> {
  const report: CasesReport = { passed: [], failed: [], maxError: {} };
  const ctx: GpuCaseContext = { backend, placement: 'device buffers', runs, seed, maxError: new Map() };
  for (const c of GPU_CASES) {
    try {
      await c.run(ctx);
      report.passed.push(c.name);
    } catch (e) {
      // fast-check keeps the failing check's own error as the cause
      const cause = (e as { cause?: { message?: string } }).cause?.message;
      report.failed.push({ name: c.name, error: `${(e as Error).message ?? e}${cause ? `\ncaused by: ${cause}` : ''}`.slice(0, 3000) });
    }
  }
  report.maxError = Object.fromEntries(ctx.maxError);
  return report;
}
