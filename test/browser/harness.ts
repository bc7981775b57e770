/**
 * @file How the browser suites drive Chromium: what is missing to run them, a page entry bundled
 * by esbuild for the browser platform, files served from 127.0.0.1 (a secure context) with chosen
 * response headers, and Debian's Chromium launched headless by playwright-core.
 */
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Browser } from 'playwright-core';

export const repo = fileURLToPath(new URL('../..', import.meta.url));
export const CHROMIUM = '/usr/bin/chromium';
/** Flags every suite's Chromium gets: no sandbox (containers) and nothing talking to the network. */
export const BASE_FLAGS = ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const require = createRequire(import.meta.url);

/** Why the browser suites cannot run here (Chromium, playwright-core or one of `packages` absent), or null. */
export function browserMissing(packages: readonly string[] = []): string | null {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is absent (apt-get install chromium)`;
  for (const p of ['playwright-core', ...packages]) {
    try {
      require.resolve(p);
    } catch {
      return `${p} is not installed (npm ci)`;
    }
  }
  return null;
}

/**
 * A page's script: `entry` (a path in the repository) bundled for the browser, workspace packages
 * from their sources; `iife` for a classic worker script (one that may call importScripts).
 */
export async function bundlePage(entry: string, format: 'esm' | 'iife' = 'esm'): Promise<string> {
  const bundle = await build({
    entryPoints: [`${repo}${entry}`],
    bundle: true,
    write: false,
    format,
    platform: 'browser',
    conditions: ['@qgrad/source'],
    logLevel: 'silent',
  });
  return bundle.outputFiles[0]!.text;
}

/** A file the server hands out at its path. */
export interface ServedFile {
  type: string;
  body: string | Uint8Array;
}

/** A running server: its base URL (http://127.0.0.1:port) and how to stop it. */
export interface Served {
  url: string;
  close(): Promise<void>;
}

/** The response headers that make a page cross-origin isolated (SharedArrayBuffer, Atomics.wait in its workers). */
export const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };

/** Serves `files` by exact path from 127.0.0.1 on a free port, each response with `headers` added. */
export async function serve(files: Record<string, ServedFile>, headers: Record<string, string> = {}): Promise<Served> {
  const server = createServer((req, res) => {
    const f = files[req.url ?? ''];
    // a browser asks for a favicon by itself: no content, rather than a 404 in the page's console
    if (!f && req.url === '/favicon.ico') return void res.writeHead(204, headers).end();
    res.writeHead(f ? 200 : 404, { 'content-type': f?.type ?? 'text/plain', ...headers });
    res.end(f?.body ?? '');
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((done) => server.close(() => done())),
  };
}

/** Debian's Chromium, headless, with the base flags and `flags`. */
export async function launchChromium(flags: readonly string[] = []): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...flags, ...BASE_FLAGS] });
}
