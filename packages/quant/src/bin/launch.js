#!/usr/bin/env node
/**
 * @file The `qgrad` entry of @qgrad/quant's package.json `bin` (the commands are in qgrad.ts and
 * export/cli.ts). Installed from npm it runs the built dist/bin/qgrad.js under plain Node. In the
 * repository's npm workspace it runs src/bin/qgrad.ts through tsx, so `npx qgrad` works right
 * after `npm ci` and never runs a dist/ older than the sources.
 */
import { existsSync } from 'node:fs';
import { register as registerHooks } from 'node:module';
import { sep } from 'node:path';
import { fileURLToPath } from 'node:url';

// plain JavaScript, not TypeScript: npm links a bin only if its file exists at install time, and
// in a fresh checkout nothing has been built yet
const built = new URL('../../dist/bin/qgrad.js', import.meta.url);
const source = new URL('./qgrad.ts', import.meta.url);
// Node runs a bin at its real path, so a workspace package (a symlink into packages/) has no
// node_modules segment, while an installed one always has
const inWorkspace = !fileURLToPath(import.meta.url).split(sep).includes('node_modules');

if (inWorkspace && existsSync(source)) {
  let tsxApi;
  try {
    tsxApi = import.meta.resolve('tsx/esm/api');
  } catch {
    // without tsx (a workspace installed with --omit=dev) the built JavaScript is the only way left
  }
  if (tsxApi) {
    const { register } = await import(tsxApi);
    register();
    // @qgrad/* resolve to their TypeScript sources through the "@qgrad/source" export condition,
    // whatever directory npx is run from (tsconfig.json's paths only apply from the repository root)
    registerHooks(
      'data:text/javascript,export function resolve(s, c, next) { return next(s, { ...c, conditions: [...c.conditions, "@qgrad/source"] }); }',
    );
    await import(source.href);
  } else {
    await runBuilt();
  }
} else {
  await runBuilt();
}

async function runBuilt() {
  if (!existsSync(built)) {
    console.error(`qgrad: ${fileURLToPath(built)} is missing; run \`npm run build\` in the repository (or install tsx)`);
    process.exitCode = 1;
    return;
  }
  await import(built.href);
}
