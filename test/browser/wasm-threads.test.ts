/**
 * @file The wasm backend's threads in a real browser (issue 17): Debian's Chromium driven by
 * playwright-core, a page bundled by esbuild from wasm-page.ts served twice from 127.0.0.1 — with
 * COOP/COEP (cross-origin isolated: Web Workers over a shared memory) and without (one thread, and
 * the page is told why). Pooled matmuls and softmaxes on two threads equal one thread bit for bit
 * and the js oracle within its bounds; a 1024² matmul is timed on 1 and 2 threads (printed only:
 * the machines are shared). Where Chromium or playwright-core is missing, one line says why.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ISOLATION, browserMissing, bundlePage, launchChromium, serve, type Served } from './harness.js';
import type { EqualityReport, PageInfo } from './wasm-page.js';

const TIMING_REPS = 7;

const skip = browserMissing();
if (skip) console.log(`browser wasm-threads suite skipped: ${skip}`);

interface PageApi {
  info(): Promise<PageInfo>;
  meet(jobs: number): Promise<number[]>;
  equality(): Promise<EqualityReport>;
  timing(reps: number): Promise<{ one: number; two: number; threads: number; message: string }>;
}

/** Calls the page's `qgradWasm[method](arg)` (the function runs in the page, so it names nothing of this file). */
function call<M extends keyof PageApi>(page: Page, method: M, arg?: number): ReturnType<PageApi[M]> {
  return page.evaluate(([m, a]) => (globalThis as unknown as { qgradWasm: Record<string, (a?: number) => unknown> }).qgradWasm[m]!(a), [method, arg] as const) as ReturnType<PageApi[M]>;
}

describe.skipIf(skip !== null)('the wasm backend on Web Workers in Chromium (playwright-core)', () => {
  let isolated!: Served;
  let plain!: Served;
  let browser!: Browser;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    const files = {
      '/': { type: 'text/html', body: '<!doctype html><meta charset="utf-8"><script type="module" src="/page.js"></script>' },
      '/page.js': { type: 'text/javascript', body: await bundlePage('test/browser/wasm-page.ts') },
    };
    [isolated, plain] = await Promise.all([serve(files, ISOLATION), serve(files)]);
    browser = await launchChromium();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await Promise.all([isolated?.close(), plain?.close()]);
  });

  async function open(server: Served): Promise<Page> {
    const page = await browser.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && pageErrors.push(m.text()));
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => 'qgradWasm' in globalThis, null, { timeout: 20_000 });
    return page;
  }

  it('runs on Web Workers when the page is cross-origin isolated, pooled kernels equal to one thread bit for bit and to js within bounds', async () => {
    const page = await open(isolated);
    const info = await call(page, 'info');
    const met = await call(page, 'meet', 5);
    const r = await call(page, 'equality');
    const t = await call(page, 'timing', TIMING_REPS);
    await page.close();
    console.log(`isolated page: ${info.info}; two tasks that must run at once met in ${met.filter((m) => m === 1).length}/${met.length} jobs (hardwareConcurrency ${info.hardwareConcurrency}; before the page yields: ${info.beforeYield}); two-thread backend: ${r.message}`);
    for (const c of r.cases) console.log(`  ${c.name}: 1 vs 2 threads ${c.bitEqual ? 'bit-identical' : 'DIFFER'}, max |wasm − js| / bound ${c.errorOverBound.toFixed(3)}`);
    console.log(`  pooled calls: ${JSON.stringify(r.pooled)}; 1024² matmul, median of ${TIMING_REPS}: 1 thread ${t.one.toFixed(1)} ms, ${t.threads} threads ${t.two.toFixed(1)} ms (×${(t.one / t.two).toFixed(2)}; ${t.message})`);
    expect(info.isolated).toBe(true);
    expect(info.info).toMatch(/^wasm, \d+ threads \(Web Workers\)$/);
    // a worker starts once the page yields (so, as printed, it is still starting), unless Chromium
    // ever starts one alongside a busy page: either is right
    expect(info.beforeYield).toMatch(/^wasm, 2 threads \(Web Workers(, 1 starting)?\)$/);
    // the worker ran a task alongside the main thread in every job
    expect(met).toEqual([1, 1, 1, 1, 1]);
    expect(r.message).toBe('wasm, 2 threads (Web Workers)');
    expect(r.threads).toBe(2);
    expect(r.cases.filter((c) => !c.bitEqual)).toEqual([]);
    expect(r.cases.filter((c) => !(c.errorOverBound <= 1))).toEqual([]);
    // every case ran over the pool: 4 matmuls and 2 softmaxes
    expect(r.pooled).toEqual({ matmul: 4, softmax: 2 });
    expect(t.message).toBe('wasm, 2 threads (Web Workers)');
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it('runs on one thread and says why when the page lacks COOP/COEP', async () => {
    const page = await open(plain);
    const info = await call(page, 'info');
    const r = await call(page, 'equality');
    await page.close();
    console.log(`page without COOP/COEP: ${info.info}`);
    const why = 'wasm, 1 thread: page not cross-origin isolated (COOP/COEP headers missing)';
    expect(info.isolated).toBe(false);
    expect(info.info).toBe(why);
    expect(r.message).toBe(why);
    expect(r.threads).toBe(1);
    expect(r.pooled).toEqual({});
    expect(r.cases.filter((c) => !c.bitEqual || !(c.errorOverBound <= 1))).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 60_000);
});
