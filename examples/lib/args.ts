/**
 * @file Command-line flags for the examples: `node:util` parseArgs with typed defaults, validated
 * numbers (integer-ness and ranges), a generated `--help` page, and `CliError`, the one error the
 * examples print as a plain message (no stack trace) before exiting with its code (nn's
 * NonFiniteLossError, a diverged run, is printed the same way).
 */
import { parseArgs } from 'node:util';
import { NonFiniteLossError } from '@qgrad/nn';

/**
 * Bounds of a numeric flag: `min`/`max` are inclusive, `exclusiveMin` strict (as in JSON Schema).
 * Every numeric flag is finite; an `int` flag is also a safe integer.
 */
export interface Bounds {
  min?: number;
  max?: number;
  exclusiveMin?: number;
}
type NumberSpec = Bounds & { type: 'number'; default: number; help: string };
type IntSpec = Bounds & { type: 'int'; default: number; help: string };
/** A comma-separated list of distinct integers (seeds, say), each within the bounds. */
type IntsSpec = Bounds & { type: 'ints'; default: readonly number[]; help: string };
type Spec = NumberSpec | IntSpec | IntsSpec | { type: 'string'; default: string; help: string } | { type: 'boolean'; default?: boolean; help: string };
type Value<S extends Spec> = S extends { type: 'number' | 'int' } ? number : S extends { type: 'ints' } ? number[] : S extends { type: 'string' } ? string : boolean;
export type Parsed<O extends Record<string, Spec>> = { [K in keyof O]: Value<O[K]> };

/**
 * A mistake the user of a command line can fix (a bad flag, a diverged run): `cli()` prints
 * `<example>: <message>` without a stack trace and exits with `exitCode`, whether the error is
 * thrown while parsing or later in the example.
 */
export class CliError extends Error {
  constructor(message: string, readonly exitCode = 2) {
    super(message);
    this.name = 'CliError';
  }
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
// decimal notation only: Number() would also take '', ' ', '0x1f', '0b1' and 'Infinity'
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** What a value of this spec must be, as a phrase: "an integer in [1, 8000]", "a number > 0". */
export function describeBounds(spec: Bounds & { type: 'number' | 'int' | 'ints' }): string {
  const { min, max, exclusiveMin } = spec;
  const lo = exclusiveMin !== undefined && (min === undefined || exclusiveMin >= min) ? { v: exclusiveMin, open: true } : min !== undefined ? { v: min, open: false } : null;
  const what = spec.type === 'number' ? 'a number' : spec.type === 'int' ? 'an integer' : 'comma-separated distinct integers';
  if (lo && max !== undefined) return `${what} in ${lo.open ? '(' : '['}${lo.v}, ${max}]`;
  if (lo) return `${what} ${lo.open ? '>' : '≥'} ${lo.v}`;
  if (max !== undefined) return `${what} ≤ ${max}`;
  return spec.type === 'number' ? 'a finite number' : what;
}

function inBounds(n: number, int: boolean, b: Bounds): boolean {
  if (!Number.isFinite(n) || (int && !Number.isSafeInteger(n))) return false;
  return !(b.min !== undefined && n < b.min) && !(b.max !== undefined && n > b.max) && !(b.exclusiveMin !== undefined && n <= b.exclusiveMin);
}

/** The number `text` stands for under `spec`, or a CliError naming the flag, the value and the allowed range. */
function parseNumber(flag: string, text: string, spec: NumberSpec | IntSpec): number {
  const n = DECIMAL.test(text) ? Number(text) : NaN;
  if (!inBounds(n, spec.type === 'int', spec)) throw new CliError(`--${flag} must be ${describeBounds(spec)}, got '${text}'`);
  return n;
}

function parseInts(flag: string, text: string, spec: IntsSpec): number[] {
  const parts = text.split(',').map((s) => s.trim());
  const values = parts.map((p) => (DECIMAL.test(p) ? Number(p) : NaN));
  if (!values.every((n) => inBounds(n, true, spec)) || new Set(values).size !== values.length) throw new CliError(`--${flag} must be ${describeBounds(spec)}, got '${text}'`);
  return values;
}

/**
 * Checks a flag's value against bounds known only at run time (batch size ≤ training examples):
 * throws a CliError such as "--batch-size must be an integer in [1, 8000] (the training digits), got 100000".
 * @example checkFlag('batchSize', args.batchSize, { type: 'int', min: 1, max: data.trainX.shape[0]! }, 'the training digits');
 */
export function checkFlag(key: string, value: number, spec: Bounds & { type: 'number' | 'int' }, why?: string): void {
  if (!inBounds(value, spec.type === 'int', spec)) throw new CliError(`--${kebab(key)} must be ${describeBounds(spec)}${why ? ` (${why})` : ''}, got ${value}`);
}

/** The `--help` page of `options` (plus `--help` itself). */
export function helpText(name: string, description: string, options: Record<string, Spec>): string {
  const all: Record<string, Spec> = { ...options, help: { type: 'boolean', help: 'show this help and exit' } };
  const rows = Object.entries(all).map(([k, s]) => {
    if (s.type === 'boolean') return [`--${kebab(k)}`, s.help];
    const numeric = s.type === 'number' || s.type === 'int' || s.type === 'ints';
    const dflt = s.type === 'ints' ? s.default.join(',') : s.default;
    const notes = [...(numeric ? [describeBounds(s)] : []), ...(dflt !== '' ? [`default ${dflt}`] : [])];
    return [`--${kebab(k)} <${s.type}>`, `${s.help}${notes.length ? ` (${notes.join('; ')})` : ''}`];
  });
  const w = Math.max(...rows.map(([f]) => f!.length));
  return `Usage: npx tsx examples/${name}.ts [options]\n\n${description}\n\nOptions:\n${rows.map(([f, h]) => `  ${f!.padEnd(w)}  ${h}`).join('\n')}`;
}

/**
 * Parses `argv` against `options` without exiting: returns `{ help: true }` for `--help`, else
 * the values; throws a CliError for unknown, malformed or out-of-range flags, and a plain Error
 * when a default breaks its own spec (a bug in the example, not a user mistake).
 * @example parseCli({ steps: { type: 'int', default: 300, min: 1, help: 'training steps' } }, ['--steps', '20']); // { help: false, args: { steps: 20 } }
 */
export function parseCli<O extends Record<string, Spec>>(options: O, argv: string[]): { help: true } | { help: false; args: Parsed<O> } {
  for (const [k, s] of Object.entries(options)) {
    const ok = s.type === 'number' || s.type === 'int' ? inBounds(s.default, s.type === 'int', s) : s.type === 'ints' ? s.default.every((n) => inBounds(n, true, s)) : true;
    if (!ok) throw new Error(`cli: the default of --${kebab(k)} (${String(s.default)}) is not ${describeBounds(s as IntSpec)}`);
  }
  const config: Record<string, { type: 'string' | 'boolean' }> = { help: { type: 'boolean' } };
  for (const [k, s] of Object.entries(options)) config[kebab(k)] = { type: s.type === 'boolean' ? 'boolean' : 'string' };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options: config, strict: true, allowPositionals: false }) as { values: Record<string, string | boolean | undefined> });
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  if (values.help) return { help: true };
  const out: Record<string, unknown> = {};
  for (const [k, s] of Object.entries(options)) {
    const v = values[kebab(k)];
    if (s.type === 'boolean') out[k] = v ?? s.default ?? false;
    else if (typeof v !== 'string') out[k] = s.type === 'ints' ? [...s.default] : s.default;
    else if (s.type === 'number' || s.type === 'int') out[k] = parseNumber(kebab(k), v, s);
    else if (s.type === 'ints') out[k] = parseInts(kebab(k), v, s);
    else out[k] = v;
  }
  return { help: false, args: out as Parsed<O> };
}

/**
 * Parses `process.argv` against `options` (camelCase keys become `--kebab-case` flags); prints
 * the help and exits 0 on `--help`; on a bad flag prints `<name>: <what is wrong>` and exits 2.
 * From then on, a CliError thrown anywhere in the example (synchronously or from top-level
 * await) is printed the same way and exits with its code, instead of as a stack trace.
 * @example const args = cli('mnist-mlp', 'Trains an MLP on MNIST.', { steps: { type: 'int', default: 300, min: 1, help: 'training steps' } });
 */
export function cli<O extends Record<string, Spec>>(name: string, description: string, options: O, argv = process.argv.slice(2)): Parsed<O> {
  // the monitor runs before Node's default report of an uncaught error, so exiting here replaces it
  process.on('uncaughtExceptionMonitor', (e) => {
    // a diverged run (nn's NonFiniteLossError, exit code 3) is the user's to fix too
    if (!(e instanceof CliError) && !(e instanceof NonFiniteLossError)) return;
    console.error(`${name}: ${e.message}`);
    process.exit(e.exitCode);
  });
  let parsed: ReturnType<typeof parseCli<O>>;
  try {
    parsed = parseCli(options, argv);
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    console.error(`${name}: ${e.message}\nRun with --help for the options.`);
    process.exit(e.exitCode);
  }
  if (parsed.help) {
    console.log(helpText(name, description, options));
    process.exit(0);
  }
  return parsed.args;
}
