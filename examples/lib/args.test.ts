/**
 * @file The examples' flag parsing: every invalid numeric value (non-integer for an int flag,
 * out of range, NaN, ±Infinity, empty, garbage) is a CliError naming the flag, the value and the
 * range; every valid one parses to exactly its number. The subprocess checks live in
 * cli-exit.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CliError, checkFlag, describeBounds, helpText, parseCli } from './args.js';

const options = {
  steps: { type: 'int', default: 100, min: 1, help: 'training steps' },
  bits: { type: 'int', default: 4, min: 2, max: 16, help: 'bits' },
  lr: { type: 'number', default: 1e-3, exclusiveMin: 0, help: 'learning rate' },
  drop: { type: 'number', default: 0.1, min: 0, max: 1, help: 'a fraction' },
  shift: { type: 'number', default: 0, help: 'any finite number' },
  seeds: { type: 'ints', default: [0, 1], min: 0, max: 1000, help: 'seeds' },
  name: { type: 'string', default: 'x', help: 'a name' },
  fast: { type: 'boolean', help: 'a switch' },
} as const;
type Numeric = 'steps' | 'bits' | 'lr' | 'drop' | 'shift';
const NUMERIC: Numeric[] = ['steps', 'bits', 'lr', 'drop', 'shift'];
const flag = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** The parsed value, or the CliError thrown. */
function parse(argv: string[]): ReturnType<typeof parseCli<typeof options>> | CliError {
  try {
    return parseCli(options, argv);
  } catch (e) {
    if (e instanceof CliError) return e;
    throw e;
  }
}

/** Is `n` a value the spec of `k` accepts? (the oracle, written independently of args.ts) */
function valid(k: Numeric, n: number): boolean {
  if (!Number.isFinite(n)) return false;
  if (k === 'steps') return Number.isSafeInteger(n) && n >= 1;
  if (k === 'bits') return Number.isInteger(n) && n >= 2 && n <= 16;
  if (k === 'lr') return n > 0;
  if (k === 'drop') return n >= 0 && n <= 1;
  return true;
}

const garbage = fc.oneof(
  fc.constantFrom('', ' ', 'NaN', 'nan', 'Infinity', '-Infinity', '+Infinity', 'inf', '1e400', '-1e400', '0x10', '0b1', '1_000', '5abc', '1,5', '--5', '.', 'e5', '1e', ' 5', '5 ', 'null', 'true'),
  fc.string().filter((s) => Number.isNaN(Number(s))), // text Number() already rejects
);
// a written form of a number: decimal, exponent, leading +, trailing zeros
const spelled = (n: number) => fc.constantFrom(String(n), n.toExponential(), n >= 0 ? `+${n}` : String(n), /^-?\d+$/.test(String(n)) ? `${n}.0` : String(n));

describe('numeric flags', () => {
  it('reject every invalid value with a CliError naming the flag, the value and the range', () => {
    const value = fc.oneof(
      garbage,
      fc.double().map(String), // includes NaN, ±Infinity, non-integers, out-of-range values
      fc.integer({ min: -1_000_000, max: 1_000_000 }).map(String),
      fc.double({ min: -2, max: 20, noNaN: true }).filter((x) => !Number.isInteger(x)).map(String),
    );
    fc.assert(
      fc.property(fc.constantFrom(...NUMERIC), value, (k, v) => {
        const expectedOk = v.trim() === v && v !== '' && /^[+-]?[\d.]/.test(v) && !/^0[xb]/i.test(v) && !v.includes('_') && valid(k, Number(v));
        const r = parse([`--${flag(k)}=${v}`]);
        if (expectedOk) {
          expect(r).not.toBeInstanceOf(CliError);
          return;
        }
        expect(r).toBeInstanceOf(CliError);
        const e = r as CliError;
        expect(e.exitCode).toBe(2);
        expect(e.message).toContain(`--${flag(k)}`);
        expect(e.message).toContain(`'${v}'`);
        expect(e.message).toContain(describeBounds(options[k]));
      }),
      { numRuns: 2000 },
    );
  });

  it('parse every valid value to exactly its number, in both --flag=v and --flag v forms', () => {
    const pick = fc.oneof(
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }).map((n) => ['steps', n] as const),
      fc.integer({ min: 2, max: 16 }).map((n) => ['bits', n] as const),
      fc.double({ min: Number.MIN_VALUE, max: 1e300, noNaN: true }).map((n) => ['lr', n] as const),
      fc.double({ min: 0, max: 1, noNaN: true }).map((n) => ['drop', Object.is(n, -0) ? 0 : n] as const),
      fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => ['shift', n] as const),
    );
    fc.assert(
      fc.property(pick.chain(([k, n]) => spelled(n).map((text) => [k, n, text] as const)), fc.boolean(), ([k, n, text], joined) => {
        if (!joined && text.startsWith('-')) return; // '--shift -5' is ambiguous to parseArgs: '--shift=-5' is the way
        const r = parse(joined ? [`--${flag(k)}=${text}`] : [`--${flag(k)}`, text]);
        expect(r).not.toBeInstanceOf(CliError);
        const got = (r as { args: Record<string, unknown> }).args[k];
        expect(Object.is(got, n) || (n === 0 && got === 0)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('an integer list takes distinct in-range integers and nothing else', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 1000 }), { minLength: 1, maxLength: 6 }), (seeds) => {
        const r = parse([`--seeds=${seeds.join(',')}`]) as { args: { seeds: number[] } };
        expect(r.args.seeds).toEqual(seeds);
      }),
    );
    fc.assert(
      fc.property(
        fc.oneof(
          fc.constantFrom('', ',', '1,', ',1', '1,,2', '1,1', '0,1,0', '1.5', '-1', '1001', '1;2', 'a,b', 'NaN'),
          fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: 1, maxLength: 4 }).chain((a) => fc.integer({ min: 1001, max: 10 ** 9 }).map((x) => [...a, x].join(','))),
        ),
        (text) => {
          const r = parse([`--seeds=${text}`]);
          expect(r).toBeInstanceOf(CliError);
          expect((r as CliError).message).toContain(`--seeds must be comma-separated distinct integers in [0, 1000], got '${text}'`);
        },
      ),
    );
  });
});

describe('parseCli', () => {
  it('returns the defaults when no flag is given, and the values given otherwise', () => {
    expect(parse([])).toEqual({ help: false, args: { steps: 100, bits: 4, lr: 1e-3, drop: 0.1, shift: 0, seeds: [0, 1], name: 'x', fast: false } });
    const r = parse(['--steps', '20', '--name', 'y', '--fast', '--seeds', '3, 4']) as { args: Record<string, unknown> };
    expect(r.args).toMatchObject({ steps: 20, name: 'y', fast: true, seeds: [3, 4] });
  });

  it('reports --help without parsing values, and unknown or valueless flags as CliErrors', () => {
    expect(parse(['--help'])).toEqual({ help: true });
    expect(parse(['--stpes', '3'])).toBeInstanceOf(CliError);
    expect(parse(['--steps'])).toBeInstanceOf(CliError);
    expect(parse(['stray'])).toBeInstanceOf(CliError);
  });

  it('throws a plain Error, not a CliError, when a default breaks its own spec (a bug in the example)', () => {
    const bad = { batchSize: { type: 'int', default: 0, min: 1, help: '' } } as const;
    expect(() => parseCli(bad, [])).toThrow(/the default of --batch-size \(0\) is not an integer ≥ 1/);
    try {
      parseCli(bad, []);
    } catch (e) {
      expect(e).not.toBeInstanceOf(CliError);
    }
  });

  it('lists every flag with its type, range and default in the help page', () => {
    const text = helpText('demo', 'What it does.', options);
    expect(text).toContain('--steps <int>');
    expect(text).toContain('training steps (an integer ≥ 1; default 100)');
    expect(text).toContain('(a number > 0; default 0.001)');
    expect(text).toContain('(comma-separated distinct integers in [0, 1000]; default 0,1)');
    expect(text).toContain('--help');
  });
});

describe('checkFlag', () => {
  it('checks run-time limits with the same message, naming why', () => {
    expect(() => checkFlag('batchSize', 64, { type: 'int', min: 1, max: 8000 })).not.toThrow();
    expect(() => checkFlag('batchSize', 100000, { type: 'int', min: 1, max: 8000 }, 'there are 8000 training digits')).toThrow(
      new CliError('--batch-size must be an integer in [1, 8000] (there are 8000 training digits), got 100000'),
    );
    expect(() => checkFlag('lr', Number.NaN, { type: 'number', exclusiveMin: 0 })).toThrow(CliError);
  });

  it('describes ranges in words', () => {
    expect(describeBounds({ type: 'int', min: 1 })).toBe('an integer ≥ 1');
    expect(describeBounds({ type: 'int', max: 5 })).toBe('an integer ≤ 5');
    expect(describeBounds({ type: 'number', exclusiveMin: 0, max: 1 })).toBe('a number in (0, 1]');
    expect(describeBounds({ type: 'number' })).toBe('a finite number');
  });
});
