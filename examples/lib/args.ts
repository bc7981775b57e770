/**
 * @file Command-line flags for the examples: `node:util` parseArgs with typed defaults, number
 * parsing and a generated `--help` page.
 */
import { parseArgs } from 'node:util';

type Spec = { type: 'number'; default: number; help: string } | { type: 'string'; default: string; help: string } | { type: 'boolean'; default?: boolean; help: string };
type Value<S extends Spec> = S extends { type: 'number' } ? number : S extends { type: 'string' } ? string : boolean;
export type Parsed<O extends Record<string, Spec>> = { [K in keyof O]: Value<O[K]> };

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * Parses `process.argv` against `options` (camelCase keys become `--kebab-case` flags); prints
 * the help and exits on `--help`, and exits with a message on unknown or malformed flags.
 * @example const args = cli('mnist-mlp', 'Trains an MLP on MNIST.', { steps: { type: 'number', default: 300, help: 'training steps' } });
 */
export function cli<O extends Record<string, Spec>>(name: string, description: string, options: O, argv = process.argv.slice(2)): Parsed<O> {
  const all: Record<string, Spec> = { ...options, help: { type: 'boolean', help: 'show this help and exit' } };
  const config: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const [k, s] of Object.entries(all)) config[kebab(k)] = { type: s.type === 'boolean' ? 'boolean' : 'string' };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options: config, strict: true, allowPositionals: false }) as { values: Record<string, string | boolean | undefined> });
  } catch (e) {
    console.error(`${name}: ${(e as Error).message}\nRun with --help for the options.`);
    process.exit(2);
  }
  if (values.help) {
    const rows = Object.entries(all).map(([k, s]) => [`--${kebab(k)}${s.type === 'boolean' ? '' : ` <${s.type}>`}`, s.help + (s.default !== undefined && s.default !== '' && s.type !== 'boolean' ? ` (default ${s.default})` : '')]);
    const w = Math.max(...rows.map(([f]) => f!.length));
    console.log(`Usage: npx tsx examples/${name}.ts [options]\n\n${description}\n\nOptions:\n${rows.map(([f, h]) => `  ${f!.padEnd(w)}  ${h}`).join('\n')}`);
    process.exit(0);
  }
  const out: Record<string, unknown> = {};
  for (const [k, s] of Object.entries(options)) {
    const v = values[kebab(k)];
    if (s.type === 'number') {
      const n = v === undefined ? s.default : Number(v);
      if (typeof v === 'string' && (v.trim() === '' || !Number.isFinite(n))) {
        console.error(`${name}: --${kebab(k)} expects a number, got '${v}'`);
        process.exit(2);
      }
      out[k] = n;
    } else out[k] = v ?? s.default ?? false;
  }
  return out as Parsed<O>;
}
