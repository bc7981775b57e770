/**
 * @file Lines of code per package and per file (non-blank, non-comment-only), with a ceiling
 * like tinygrad's sz.py: exits 1 when the library passes MAX_LINE_COUNT or a file passes 600.
 * Usage: npm run sz
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const MAX_LINE_COUNT = Number(process.env.MAX_LINE_COUNT ?? 30000);
const FILE_SOFT_LIMIT = 600;
const root = new URL('..', import.meta.url).pathname;

function* walk(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* walk(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

function codeLines(text: string): number {
  let n = 0;
  let inBlock = false;
  for (const raw of text.split('\n')) {
    const l = raw.trim();
    if (inBlock) {
      if (l.includes('*/')) inBlock = false;
      continue;
    }
    if (l === '' || l.startsWith('//')) continue;
    if (l.startsWith('/*')) {
      if (!l.includes('*/')) inBlock = true;
      continue;
    }
    n++;
  }
  return n;
}

let total = 0;
let over = 0;
for (const pkg of ['kernels', 'core', 'nn', 'quant']) {
  const files = [...walk(join(root, 'packages', pkg, 'src'))].filter((f) => !f.endsWith('.test.ts'));
  const counts = files.map((f) => [relative(root, f), codeLines(readFileSync(f, 'utf8')), readFileSync(f, 'utf8').split('\n').length] as const);
  const sum = counts.reduce((a, [, c]) => a + c, 0);
  total += sum;
  console.log(`\n@qgrad/${pkg}: ${sum} code lines in ${files.length} files`);
  for (const [f, c, raw] of counts.sort((a, b) => b[1] - a[1])) {
    const flag = raw > FILE_SOFT_LIMIT ? `  <- ${raw} lines, over the ${FILE_SOFT_LIMIT}-line soft limit` : '';
    if (flag) over++;
    console.log(`  ${String(c).padStart(5)}  ${f}${flag}`);
  }
}
console.log(`\ntotal ${total} code lines (ceiling ${MAX_LINE_COUNT}); ${over} files over ${FILE_SOFT_LIMIT} lines`);
if (total > MAX_LINE_COUNT) process.exit(1);
