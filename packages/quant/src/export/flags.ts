/**
 * @file The flag reader of every `qgrad` subcommand: Node's `util.parseArgs` splits the command
 * line (`--k v`, `--k=v`, `--` ending the flags), and this file turns what it found into typed
 * values or one line naming what is wrong. `node:util` comes through `process.getBuiltinModule` at
 * call time, so a browser bundle of this package imports no Node module.
 */
import type { parseArgs as ParseArgs } from 'node:util';

/** What a flag takes: a number (`int`: a non-negative integer, `number`: a positive one), text, or nothing. */
export type FlagKind = 'int' | 'number' | 'string' | 'boolean';

/** The flags read, by name (without `--`), and the arguments that are not flags, in order. */
export interface Flags {
  values: Record<string, string | number | boolean>;
  positionals: string[];
}

/**
 * Reads `argv` against `spec` (flag name → kind); returns the flags and positionals, or a one-line
 * message: an unknown flag, a value missing or given to a flag that takes none, a number that is
 * not one, or (with `positionals` false) an argument that is not a flag.
 * @example parseFlags(['--steps', '10', 'out/'], { steps: 'int' }, true); // { values: { steps: 10 }, positionals: ['out/'] }
 */
export function parseFlags(argv: string[], spec: Record<string, FlagKind>, positionals: boolean): Flags | string {
  const util = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process?.getBuiltinModule?.('node:util') as { parseArgs: typeof ParseArgs } | undefined;
  if (!util) return 'the qgrad command line needs Node.js ≥ 20.16';
  const options = Object.fromEntries(Object.entries(spec).map(([k, kind]) => [k, { type: kind === 'boolean' ? ('boolean' as const) : ('string' as const) }]));
  // not strict: its errors are Node's sentences; the tokens say everything needed for ours
  const { tokens } = util.parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true });
  const out: Flags = { values: {}, positionals: [] };
  for (const t of tokens) {
    if (t.kind === 'option-terminator') continue;
    if (t.kind === 'positional') {
      if (!positionals) return `unexpected argument '${t.value}' (takes flags only)`;
      out.positionals.push(t.value);
      continue;
    }
    const kind = spec[t.name];
    if (!kind) return `unknown flag ${t.rawName}`;
    if (kind === 'boolean') {
      if (t.value !== undefined) return `flag ${t.rawName} takes no value`;
      out.values[t.name] = true;
      continue;
    }
    const v = t.value;
    if (v === undefined) return `flag ${t.rawName} needs a value`;
    if (kind === 'string') {
      out.values[t.name] = v;
      continue;
    }
    const n = Number(v);
    const ok = v.trim() !== '' && (kind === 'int' ? Number.isSafeInteger(n) && n >= 0 : Number.isFinite(n) && n > 0);
    if (!ok) return `${t.rawName} must be a ${kind === 'int' ? 'non-negative integer' : 'positive number'}, got '${v}'`;
    out.values[t.name] = n;
  }
  return out;
}
