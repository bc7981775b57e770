/**
 * @file `prepareQAT(model, config)`: swaps Linear / Conv2d / Embedding submodules for their QAT
 * versions in place, by rules matched on the dotted module name (glob or RegExp) and the layer
 * type, with skip lists; returns a summary table of what was quantized how.
 */
import { Conv2d, Embedding, Linear, Module } from '@qgrad/nn';
import { QuantConv2d, QuantEmbedding, QuantLinear, type QuantLayerConfig } from './modules.js';
import { describePlan } from '../quantizer/config.js';
import type { ActQuantizer, WeightQuantizer } from './quantizers.js';

/** The layer types `prepareQAT` quantizes. */
export type LayerType = 'Linear' | 'Conv2d' | 'Embedding';
/** A pattern of dotted module names: a glob string or a RegExp. */
export type NamePattern = string | RegExp;

/** One rule of a QAT config: which layers (by name and type) it quantizes and how. */
export interface QATRule extends QuantLayerConfig {
  /** Dotted module names this rule applies to: a glob (`*` within a name part, `**` across parts, `?` one char) or a RegExp. Default: all. */
  match?: NamePattern | NamePattern[];
  /** Layer types it applies to (default all three). */
  types?: LayerType[];
}

/** What `prepareQAT` takes: rules tried in order and a default for the layers no rule matches. */
export interface QATConfig {
  /** Tried in order; the first rule whose match and types fit a layer decides its quantization. */
  rules?: QATRule[];
  /** Used for layers no rule matches (omit to leave them alone). */
  default?: QuantLayerConfig;
  /** Names never quantized (globs or RegExps), checked before the rules. */
  skip?: NamePattern[];
  /** Layer types considered at all (default all three). */
  types?: LayerType[];
}

/** One layer in `prepareQAT`'s summary: its name, type, whether it was quantized and by which rule. */
export interface QATSummaryRow {
  name: string;
  type: LayerType;
  /** Why it was left alone, or the rule index / 'default' that quantized it. */
  status: 'quantized' | 'skipped' | 'unmatched';
  rule?: number | 'default';
  weight: string;
  input: string;
  params: number;
}

/**
 * What prepareQAT did: one row per candidate layer; `toString()` prints the table.
 * @example console.log(prepareQAT(model, config).toString()); // one row per candidate layer
 */
export class QATSummary {
  constructor(readonly rows: QATSummaryRow[]) {}
  get quantized(): string[] {
    return this.rows.filter((r) => r.status === 'quantized').map((r) => r.name);
  }
  get skipped(): string[] {
    return this.rows.filter((r) => r.status !== 'quantized').map((r) => r.name);
  }
  toString(): string {
    const head = ['module', 'type', 'params', 'weight', 'input', 'rule'];
    const body = this.rows.map((r) => [r.name, r.type, String(r.params), r.weight, r.input, r.status === 'quantized' ? String(r.rule) : r.status]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
    const n = this.rows.filter((r) => r.status === 'quantized').length;
    return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line), `${n} of ${this.rows.length} layers quantized`].join('\n');
  }
}

/**
 * Compiles a glob over dotted names: `*` matches within one part, `**` across parts, `?` one character.
 * @example globToRegExp('**.mlp.*').test('model.layers.0.mlp.up_proj'); // true
 */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^.]*';
    else if (c === '?') re += '[^.]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/**
 * Whether a dotted module name matches a glob (`*` within a name part, `**` across parts, `?` one character) or RegExp, or any of a list.
 * @example matchesName('model.layers.0.mlp.up_proj', '**.mlp.*'); // true
 */
export function matchesName(name: string, pattern: NamePattern | NamePattern[]): boolean {
  const ps = Array.isArray(pattern) ? pattern : [pattern];
  return ps.some((p) => (typeof p === 'string' ? globToRegExp(p).test(name) : p.test(name)));
}

function layerType(m: Module): LayerType | null {
  if (m instanceof Linear) return 'Linear';
  if (m instanceof Conv2d) return 'Conv2d';
  if (m instanceof Embedding) return 'Embedding';
  return null;
}

/**
 * 'int4 channel lsq learned' style description of a layer's quantizer ('fp' when none).
 * @example describeQuantizer(layer.weightQuantizer); // e.g. 'int4 channel lsq learned'
 */
export function describeQuantizer(q: WeightQuantizer | ActQuantizer | null | undefined): string {
  return q ? `${describePlan(q.plan)}${'soft' in q && q.soft ? ' soft' : ''}` : 'fp';
}

/**
 * Replaces matching Linear / Conv2d / Embedding submodules of `model` with QuantLinear /
 * QuantConv2d / QuantEmbedding, in place (weights and biases are shared, not copied). The model
 * itself is never replaced (wrap a bare layer in a Sequential). Returns the summary.
 * @example
 * const summary = prepareQAT(model, {
 *   rules: [{ match: 'head', weight: { grid: 'int', bits: 8 } }],
 *   default: { weight: { grid: 'nf4' }, input: { grid: 'e4m3' } },
 *   skip: ['embed'],
 * });
 * console.log(summary.toString());
 */
export function prepareQAT(model: Module, config: QATConfig): QATSummary {
  const types = config.types ?? ['Linear', 'Conv2d', 'Embedding'];
  const rows: QATSummaryRow[] = [];
  const targets: [string, Module, LayerType][] = [];
  for (const [name, m] of model.namedModules()) {
    const t = layerType(m);
    if (t && types.includes(t) && name !== '') targets.push([name, m, t]);
  }
  for (const [name, m, t] of targets) {
    const params = m.numParameters();
    const row: QATSummaryRow = { name, type: t, status: 'unmatched', weight: 'fp', input: 'fp', params };
    rows.push(row);
    if (config.skip && matchesName(name, config.skip)) {
      row.status = 'skipped';
      continue;
    }
    const idx = (config.rules ?? []).findIndex((r) => (r.match === undefined || matchesName(name, r.match)) && (!r.types || r.types.includes(t)));
    const rule: QuantLayerConfig | undefined = idx >= 0 ? config.rules![idx] : config.default;
    if (!rule || (!rule.weight && !rule.input)) continue;
    const cfg: QuantLayerConfig = { weight: rule.weight ?? null, input: t === 'Embedding' ? null : rule.input ?? null };
    const who = `prepareQAT: layer '${name}' (${t}${idx >= 0 ? `, rule ${idx}` : ', default'})`;
    const q = t === 'Linear' ? QuantLinear.from(m as Linear, cfg, who) : t === 'Conv2d' ? QuantConv2d.from(m as Conv2d, cfg, who) : QuantEmbedding.from(m as Embedding, cfg, who);
    q.train(m.training);
    replaceSubmodule(model, name, q);
    Object.assign(row, { status: 'quantized', rule: idx >= 0 ? idx : 'default', weight: describeQuantizer(q.weightQuantizer), input: describeQuantizer(q.inputQuantizer) });
  }
  return new QATSummary(rows);
}

/**
 * Sets the submodule at a dotted path (its parent's field, which the registry reads).
 * @example replaceSubmodule(model, 'layers.0.mlp', new Identity());
 */
export function replaceSubmodule(model: Module, path: string, m: Module): void {
  const i = path.lastIndexOf('.');
  const parent = model.getSubmodule(i < 0 ? '' : path.slice(0, i));
  const key = path.slice(i + 1);
  if (!(parent as unknown as Record<string, unknown>)[key]) throw new Error(`replaceSubmodule: ${parent.constructor.name} has no submodule '${key}' (path '${path}')`);
  (parent as unknown as Record<string, Module>)[key] = m;
}
