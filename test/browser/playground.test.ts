/**
 * @file examples/playground in Chromium (issue 17): Vite's `build()` writes the page into a temp
 * directory, the harness serves it from 127.0.0.1 with COOP/COEP (so the wasm backend runs on Web
 * Workers), playwright-core sets int / 4 bits / LSQ / 200 steps, presses Train, checks the loss
 * fell, presses Download and compares the file with the same training run here in Node on the
 * wasm backend (same code, options and data bytes); the screenshot goes to runs/playground/.
 * Where Chromium, playwright-core or vite is missing, one line says why.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, relative } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendInfo, deserializeSafetensors, getBackend, setBackend } from '@qgrad/core';
import { decodeSlice } from '../../examples/playground/data.js';
import { Training, type PlaygroundOptions, type PlaygroundState as PageState } from '../../examples/playground/train.js';
import { browserMissing, launchChromium, repo, serve, type Served, type ServedFile } from './harness.js';

const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };
const CHOICE = { grid: 'int', bits: '4', 'input-bits': '8', estimator: 'lsq', steps: '200', seed: '7', lr: '0.002' };
const SCREENSHOT = join(repo, 'runs/playground/screenshot.png');
const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.bin': 'application/octet-stream' };

const skip = browserMissing(['vite']);
if (skip) console.log(`browser playground suite skipped: ${skip}`);

const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;

/** Every file under `dir` by its URL path, '/' for index.html. */
function filesOf(dir: string): Record<string, ServedFile> {
  const files: Record<string, ServedFile> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else files[`/${relative(dir, p)}`] = { type: TYPES[extname(p)] ?? 'application/octet-stream', body: readFileSync(p) };
    }
  };
  walk(dir);
  files['/'] = files['/index.html']!;
  return files;
}

/** Where two safetensors files differ: per tensor, elements apart and the largest |Δ|. */
function differences(a: Uint8Array, b: Uint8Array): string[] {
  const [x, y] = [deserializeSafetensors(a), deserializeSafetensors(b)];
  const out: string[] = [];
  if (JSON.stringify(x.metadata) !== JSON.stringify(y.metadata)) out.push('metadata differs');
  for (const [name, t] of Object.entries(x.tensors)) {
    const [u, v] = [t.dataSync(), y.tensors[name]?.dataSync()];
    if (!v || u.length !== v.length) {
      out.push(`${name}: missing or another size`);
      continue;
    }
    let apart = 0;
    let max = 0;
    for (let i = 0; i < u.length; i++) {
      const d = Math.abs(Number(u[i]) - Number(v[i]));
      if (d !== 0 || Object.is(u[i], v[i]) === false) apart++;
      max = Math.max(max, d);
    }
    if (apart) out.push(`${name} (${t.dtype} [${t.shape.join(', ')}]): ${apart} of ${u.length} apart, max |Δ| ${max.toExponential(2)}`);
  }
  return out;
}

describe.skipIf(skip !== null)('examples/playground in Chromium (vite build, playwright-core)', () => {
  let out!: string;
  let files!: Record<string, ServedFile>;
  let server!: Served;
  let browser!: Browser;

  beforeAll(async () => {
    const { build } = await import('vite');
    out = mkdtempSync(join(tmpdir(), 'qgrad-playground-'));
    await build({ configFile: join(repo, 'examples/playground/vite.config.ts'), logLevel: 'warn', build: { outDir: out, emptyOutDir: true } });
    files = filesOf(out);
    server = await serve(files, ISOLATION);
    browser = await launchChromium();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (out) rmSync(out, { recursive: true, force: true });
  });

  it('trains W4A8 LSQ for 200 steps in the page, the loss falls, and the downloaded model equals a Node run of the same seed byte for byte', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 }, acceptDownloads: true });
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && pageErrors.push(m.text()));
    await page.goto(`${server.url}/`);
    const state = () => page.evaluate(() => (globalThis as unknown as { qgradPlayground: PageState }).qgradPlayground);
    await page.waitForFunction(() => ['ready', 'error'].includes((globalThis as unknown as { qgradPlayground: PageState }).qgradPlayground.phase), null, { timeout: 20_000 });
    expect((await state()).error).toBeNull();
    for (const [id, value] of Object.entries(CHOICE)) {
      if (id === 'grid' || id === 'estimator') await page.selectOption(`#${id}`, value);
      else await page.fill(`#${id}`, value);
    }
    await page.click('#train');
    await page.waitForFunction(() => ['done', 'error'].includes((globalThis as unknown as { qgradPlayground: PageState }).qgradPlayground.phase), null, { timeout: 60_000 });
    const s = await state();
    expect(s.error).toBeNull();
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const fromPage = new Uint8Array(readFileSync(await download.path()));
    mkdirSync(join(repo, 'runs/playground'), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    const status = await page.textContent('#status');
    await page.close();

    const o = s.options!;
    const before = getBackend();
    let node!: Training;
    let fromNode!: Uint8Array;
    try {
      setBackend('wasm');
      // the very bytes the page fetched
      node = new Training(decodeSlice(files['/mnist-slice.bin']!.body as Uint8Array), o);
      while (node.losses.length < o.steps) node.step();
      fromNode = node.exportBytes();
    } finally {
      setBackend(before);
    }
    const [first, last] = [mean(s.losses.slice(0, 20)), mean(s.losses.slice(-20))];
    const lossesEqual = s.losses.every((l, i) => Object.is(l, node.losses[i]));
    const bytesEqual = fromPage.length === fromNode.length && fromPage.every((v, i) => v === fromNode[i]);
    console.log(
      `playground page: ${s.backend}; ${o.grid} ${o.bits} bits, A${o.inputBits}, ${o.estimator}, seed ${o.seed}, ${o.steps} steps × ${o.batchSize}, ${s.msPerStep!.toFixed(1)} ms/step; ` +
        `loss first-20 mean ${first.toFixed(4)} → last-20 ${last.toFixed(4)}, held-out accuracy ${(100 * s.accuracy!).toFixed(1)} %; ` +
        `download ${s.download!.name} ${fromPage.length} bytes, Node (${backendInfo('wasm')}) ${fromNode.length} bytes: ${bytesEqual ? 'equal byte for byte' : differences(fromPage, fromNode).join('; ')}; ` +
        `losses ${lossesEqual ? 'equal at every step' : `first apart at step ${s.losses.findIndex((l, i) => !Object.is(l, node.losses[i]))}`}; screenshot ${relative(repo, SCREENSHOT)}`,
    );
    console.log(`  status line: ${status}`);
    expect(s.backend).toMatch(/^wasm, 2 threads \(Web Workers\)$/);
    expect(o).toMatchObject({ grid: 'int', bits: 4, inputBits: 8, estimator: 'lsq', steps: 200, seed: 7, lr: 0.002 });
    expect(s.losses).toHaveLength(200);
    expect(last).toBeLessThan(first / 3);
    expect(s.accuracy!).toBeGreaterThan(0.8);
    expect(s.download!.bytes).toBe(fromPage.length);
    // Bit for bit, not within a tolerance: the same code on the same bytes in the same order, and
    // the wasm kernels' results do not depend on the thread count (wasm-threads.test.ts); both
    // sides compile the relaxed-SIMD FMA flavour (Node's V8 flag is set by the backend, Chromium
    // has it on) on one CPU. Math.exp and friends are V8's fdlibm ports in both.
    expect(lossesEqual).toBe(true);
    expect(bytesEqual).toBe(true);
    expect(pageErrors).toEqual([]);
  }, 120_000);
});
