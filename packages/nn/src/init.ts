/**
 * @file Parameter initialisers, like `torch.nn.init`: each fills a tensor in place (under
 * noGrad) from core's seeded generator and returns it. PyTorch's default layer inits are
 * built from these in the layer constructors.
 */
import { noGrad, rand, randn, tidy, type Generator, type Tensor } from '@qgrad/core';

/** Options every initialiser takes: the generator to draw from. */
export interface InitOptions {
  /** Random source (default: core's default generator, seeded by `manualSeed`). */
  generator?: Generator;
}

/** The nonlinearity after a layer, which sets the initialisers' gain (PyTorch `calculate_gain`). */
export type Nonlinearity = 'linear' | 'conv2d' | 'sigmoid' | 'tanh' | 'relu' | 'leaky_relu' | 'selu';

/**
 * fan_in and fan_out of a weight [out, in, *kernel] as PyTorch computes them.
 * @example init.calculateFanInAndFanOut(zeros([64, 32, 3, 3])); // [288, 576]
 */
export function calculateFanInAndFanOut(t: Tensor): [number, number] {
  if (t.ndim < 2) throw new Error(`init: fan in and fan out cannot be computed for a tensor of shape [${t.shape.join(', ')}] (fewer than 2 dims)`);
  const receptive = t.shape.slice(2).reduce((a, b) => a * b, 1);
  return [t.shape[1]! * receptive, t.shape[0]! * receptive];
}

/**
 * The recommended gain for a nonlinearity (`torch.nn.init.calculate_gain`).
 * @example init.calculateGain('relu'); // √2
 */
export function calculateGain(nonlinearity: Nonlinearity, param?: number): number {
  switch (nonlinearity) {
    case 'linear': case 'conv2d': case 'sigmoid': return 1;
    case 'tanh': return 5 / 3;
    case 'relu': return Math.SQRT2;
    case 'leaky_relu': { const a = param ?? 0.01; return Math.sqrt(2 / (1 + a * a)); }
    case 'selu': return 3 / 4;
    default: { const never: never = nonlinearity; throw new Error(`calculateGain: unknown nonlinearity ${String(never)}`); }
  }
}

/**
 * Copies `values()` into `t` outside the tape and releases its temporaries at once: left to the
 * garbage collector, a model's init holds several times the model's size in backend memory.
 */
function fill(t: Tensor, values: () => Tensor): Tensor {
  noGrad(() => tidy(() => void t.copy_(values())));
  return t;
}

/**
 * Fills `t` with U(a, b).
 * @example init.uniform_(layer.weight, -0.1, 0.1);
 */
export function uniform_(t: Tensor, a = 0, b = 1, opts: InitOptions = {}): Tensor {
  return fill(t, () => rand([...t.shape], { dtype: floatOf(t), generator: opts.generator }).mul(b - a).add(a));
}
/**
 * Fills `t` with N(mean, std²).
 * @example init.normal_(embedding.weight, 0, 0.02);
 */
export function normal_(t: Tensor, mean = 0, std = 1, opts: InitOptions = {}): Tensor {
  return fill(t, () => randn([...t.shape], { dtype: floatOf(t), generator: opts.generator }).mul(std).add(mean));
}
/**
 * Fills `t` with `value` in place, outside the tape; returns `t` (PyTorch `nn.init.constant_`).
 * @example init.constant_(layer.bias!, 0.1);
 */
export function constant_(t: Tensor, value: number): Tensor {
  return noGrad(() => t.fill_(value));
}
/**
 * Fills `t` with 0 in place; returns `t`.
 * @example init.zeros_(layer.bias!);
 */
export function zeros_(t: Tensor): Tensor {
  return constant_(t, 0);
}
/**
 * Fills `t` with 1 in place; returns `t`.
 * @example init.ones_(norm.weight);
 */
export function ones_(t: Tensor): Tensor {
  return constant_(t, 1);
}

/** Options of the Kaiming (He) initialisers: the rectifier slope, fan mode and nonlinearity, as PyTorch. */
export interface KaimingOptions extends InitOptions {
  /** Negative slope of the rectifier after this layer (PyTorch's layers pass √5). */
  a?: number;
  mode?: 'fanIn' | 'fanOut';
  nonlinearity?: Nonlinearity;
}

function kaimingStd(t: Tensor, opts: KaimingOptions): number {
  const [fanIn, fanOut] = calculateFanInAndFanOut(t);
  const gain = calculateGain(opts.nonlinearity ?? 'leaky_relu', opts.a ?? 0);
  return gain / Math.sqrt((opts.mode ?? 'fanIn') === 'fanIn' ? fanIn : fanOut);
}
/**
 * He uniform: U(−b, b) with b = gain·√(3 / fan). `Linear` and `Conv2d` use a = √5, which gives
 * b = 1/√fan_in.
 * @example kaimingUniform_(zeros([4, 3]), { a: Math.sqrt(5) }); // values in ±1/√3
 */
export function kaimingUniform_(t: Tensor, opts: KaimingOptions = {}): Tensor {
  const bound = Math.sqrt(3) * kaimingStd(t, opts);
  return uniform_(t, -bound, bound, opts);
}
/**
 * He normal: N(0, gain² / fan).
 * @example init.kaimingNormal_(conv.weight, { mode: 'fanOut', nonlinearity: 'relu' });
 */
export function kaimingNormal_(t: Tensor, opts: KaimingOptions = {}): Tensor {
  return normal_(t, 0, kaimingStd(t, opts), opts);
}
/**
 * Glorot uniform: U(−b, b) with b = gain·√(6 / (fan_in + fan_out)).
 * @example init.xavierUniform_(layer.weight);
 */
export function xavierUniform_(t: Tensor, gain = 1, opts: InitOptions = {}): Tensor {
  const [fanIn, fanOut] = calculateFanInAndFanOut(t);
  const bound = gain * Math.sqrt(6 / (fanIn + fanOut));
  return uniform_(t, -bound, bound, opts);
}
/**
 * Glorot normal: N(0, gain² · 2 / (fan_in + fan_out)).
 * @example init.xavierNormal_(layer.weight, init.calculateGain('tanh'));
 */
export function xavierNormal_(t: Tensor, gain = 1, opts: InitOptions = {}): Tensor {
  const [fanIn, fanOut] = calculateFanInAndFanOut(t);
  return normal_(t, 0, gain * Math.sqrt(2 / (fanIn + fanOut)), opts);
}

function floatOf(t: Tensor): 'float32' | 'float64' {
  if (t.dtype === 'float64') return 'float64';
  if (t.dtype === 'float32') return 'float32';
  throw new Error(`init: can only initialise floating-point tensors, got ${t.dtype} of shape [${t.shape.join(', ')}]`);
}
