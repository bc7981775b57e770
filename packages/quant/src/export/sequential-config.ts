/**
 * @file config.json for a Sequential of plain layers (the MNIST MLP and CNN of `qgrad train` and
 * examples/): `sequentialConfig` records its layers and input shape, `sequentialFromConfig` builds
 * the float model back, `saveSequentialCheckpoint` writes the directory `qgrad export` reads.
 * Llama and ViT directories use Hugging Face's config.json instead (nn's pretrained.ts).
 */
import { saveSafetensors, type Pair } from '@qgrad/core';
import { Conv2d, Dropout, Flatten, GELU, LeakyReLU, Linear, MaxPool2d, ReLU, Sequential, Sigmoid, SiLU, Tanh, type TensorModule } from '@qgrad/nn';
import { QuantizedConv2d, QuantizedLinear } from '../qat/convert.js';
import { nodeFs } from './bytes.js';
import { saveQuantized } from './safetensors.js';

/** config.json's `model_type` for a Sequential; no Hugging Face architecture uses it. */
export const SEQUENTIAL_MODEL_TYPE = 'qgrad-sequential';

/** One layer of a Sequential's config.json, in PyTorch's constructor argument names. */
export type SequentialLayerConfig =
  | { type: 'Linear'; in_features: number; out_features: number; bias: boolean }
  | { type: 'Conv2d'; in_channels: number; out_channels: number; kernel_size: Pair; stride: Pair; padding: Pair | 'same' | 'valid'; dilation: Pair; groups: number; bias: boolean }
  | { type: 'MaxPool2d'; kernel_size: Pair; stride?: Pair; padding?: Pair }
  | { type: 'Flatten'; start_dim: number; end_dim: number }
  | { type: 'GELU'; approximate: 'none' | 'tanh' }
  | { type: 'LeakyReLU'; negative_slope: number }
  | { type: 'Dropout'; p: number }
  | { type: 'ReLU' | 'SiLU' | 'Sigmoid' | 'Tanh' };

/** config.json of a Sequential checkpoint directory. */
export interface SequentialConfig {
  model_type: typeof SEQUENTIAL_MODEL_TYPE;
  /** One input's shape with its batch extent first (ONNX export makes that extent symbolic). */
  input_shape: number[];
  layers: SequentialLayerConfig[];
}

const PLAIN = { ReLU, SiLU, Sigmoid, Tanh } as const;
const pairJson = (p: number | readonly number[]): Pair => (typeof p === 'number' ? p : [p[0]!, p[1]!]);

/**
 * The config.json of `model`, a Sequential of Linear, Conv2d (float or converted), activations,
 * Flatten, MaxPool2d and Dropout; `inputShape` is one input's shape, batch extent first.
 * @example sequentialConfig(new Sequential(new Linear(784, 256), new ReLU(), new Linear(256, 10)), [1, 784]);
 */
export function sequentialConfig(model: Sequential, inputShape: number[]): SequentialConfig {
  const layers = [...model].map((m, i): SequentialLayerConfig => {
    if (m instanceof Linear || m instanceof QuantizedLinear) return { type: 'Linear', in_features: m.inFeatures, out_features: m.outFeatures, bias: m.bias !== null };
    if (m instanceof Conv2d || m instanceof QuantizedConv2d) {
      // a converted conv keeps the float weight's shape [O, C/groups, kh, kw]; its options are the float conv's
      const [o, cg, kh, kw] = m instanceof Conv2d ? m.weight.shape : m.weightShape;
      const c = m.conv;
      return {
        type: 'Conv2d', in_channels: cg! * (c.groups ?? 1), out_channels: o!, kernel_size: [kh!, kw!], stride: pairJson(c.stride ?? 1),
        padding: typeof c.padding === 'string' ? c.padding : pairJson(c.padding ?? 0), dilation: pairJson(c.dilation ?? 1), groups: c.groups ?? 1, bias: m.bias !== null,
      };
    }
    if (m instanceof MaxPool2d) {
      const { stride, padding } = m.opts;
      if (m.opts.ceilMode || (m.opts.dilation ?? 1) !== 1) throw new Error(`sequentialConfig: layer ${i} (MaxPool2d) uses ceilMode or dilation, which config.json does not record`);
      return { type: 'MaxPool2d', kernel_size: pairJson(m.kernelSize), ...(stride != null && { stride: pairJson(stride) }), ...(padding != null && { padding: pairJson(padding) }) };
    }
    if (m instanceof Flatten) return { type: 'Flatten', start_dim: m.startDim, end_dim: m.endDim };
    if (m instanceof GELU) return { type: 'GELU', approximate: m.approximate };
    if (m instanceof LeakyReLU) return { type: 'LeakyReLU', negative_slope: m.negativeSlope };
    if (m instanceof Dropout) return { type: 'Dropout', p: m.p };
    const plain = (Object.keys(PLAIN) as (keyof typeof PLAIN)[]).find((k) => m instanceof PLAIN[k]);
    if (plain) return { type: plain };
    throw new Error(`sequentialConfig: layer ${i} is a ${m.constructor.name}; config.json records Linear, Conv2d (float or converted), ReLU, GELU, SiLU, LeakyReLU, Sigmoid, Tanh, Flatten, MaxPool2d and Dropout`);
  });
  if (!inputShape.every((d) => Number.isSafeInteger(d) && d >= 1)) throw new Error(`sequentialConfig: inputShape [${inputShape.join(', ')}] must be positive integers`);
  return { model_type: SEQUENTIAL_MODEL_TYPE, input_shape: [...inputShape], layers };
}

/**
 * The float Sequential a config.json describes (weights freshly initialised: load a state dict or
 * `loadQuantized` into it). Errors name the layer index and the field that is wrong.
 * @example const model = sequentialFromConfig(JSON.parse(readFileSync('run/config.json', 'utf8')));
 */
export function sequentialFromConfig(config: Record<string, unknown>): Sequential {
  if (config.model_type !== SEQUENTIAL_MODEL_TYPE) throw new Error(`sequentialFromConfig: model_type is '${String(config.model_type)}', not '${SEQUENTIAL_MODEL_TYPE}'`);
  const shape = config.input_shape;
  if (!Array.isArray(shape) || !shape.length || !shape.every((d) => Number.isSafeInteger(d) && d >= 1)) throw new Error(`sequentialFromConfig: input_shape must be an array of positive integers, got ${JSON.stringify(shape)}`);
  if (!Array.isArray(config.layers)) throw new Error('sequentialFromConfig: layers must be an array');
  const layers = (config.layers as Record<string, unknown>[]).map((l, i): TensorModule => {
    const bad = (what: string): never => {
      throw new Error(`sequentialFromConfig: layer ${i} (${String(l?.type)}): ${what}`);
    };
    const int = (k: string): number => (Number.isSafeInteger(l[k]) && (l[k] as number) >= 0 ? (l[k] as number) : bad(`${k} must be a non-negative integer, got ${JSON.stringify(l[k])}`));
    const pair = (k: string): number | [number, number] => {
      const v = l[k];
      if (Number.isSafeInteger(v)) return v as number;
      return Array.isArray(v) && v.length === 2 && v.every(Number.isSafeInteger) ? [v[0], v[1]] : bad(`${k} must be an integer or a pair, got ${JSON.stringify(v)}`);
    };
    if (typeof l !== 'object' || l === null) return bad('not an object');
    switch (l.type) {
      case 'Linear':
        return new Linear(int('in_features'), int('out_features'), { bias: l.bias !== false });
      case 'Conv2d': {
        const padding = l.padding === 'same' || l.padding === 'valid' ? l.padding : pair('padding');
        return new Conv2d(int('in_channels'), int('out_channels'), pair('kernel_size'), { stride: pair('stride'), padding, dilation: pair('dilation'), groups: int('groups'), bias: l.bias !== false });
      }
      case 'MaxPool2d':
        return new MaxPool2d(pair('kernel_size'), { ...(l.stride !== undefined && { stride: pair('stride') }), ...(l.padding !== undefined && { padding: pair('padding') }) });
      case 'Flatten':
        return new Flatten(Number(l.start_dim ?? 1), Number(l.end_dim ?? -1));
      case 'GELU':
        return new GELU(l.approximate === 'tanh' ? 'tanh' : 'none');
      case 'LeakyReLU':
        return new LeakyReLU(Number(l.negative_slope ?? 0.01));
      case 'Dropout':
        return new Dropout(Number(l.p ?? 0.5));
      default:
        if (typeof l.type === 'string' && l.type in PLAIN) return new PLAIN[l.type as keyof typeof PLAIN]();
        return bad(`unknown type; known: Linear, Conv2d, MaxPool2d, Flatten, GELU, LeakyReLU, Dropout, ${Object.keys(PLAIN).join(', ')}`);
    }
  });
  return new Sequential(...layers);
}

/**
 * Writes `dir`/config.json (`sequentialConfig`) and `dir`/model.safetensors: the integer codes and
 * scales (`saveQuantized`) once the model is converted, its float state dict before. `qgrad export`
 * and `qgrad convert` read the directory.
 * @example saveSequentialCheckpoint(mlp, 'runs/mlp', [1, 784]); // then: npx qgrad export --format onnx runs/mlp mlp.onnx
 */
export function saveSequentialCheckpoint(model: Sequential, dir: string, inputShape: number[]): void {
  const config = sequentialConfig(model, inputShape);
  const fs = nodeFs('saveSequentialCheckpoint');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(`${dir}/config.json`, new TextEncoder().encode(`${JSON.stringify(config, null, 2)}\n`));
  const quantized = [...model].some((m) => m instanceof QuantizedLinear || m instanceof QuantizedConv2d);
  if (quantized) saveQuantized(model, `${dir}/model.safetensors`);
  else saveSafetensors(`${dir}/model.safetensors`, model.stateDict());
}
