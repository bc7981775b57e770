/**
 * @file Convolution and pooling layers: Conv2d (PyTorch's kaiming-uniform init), MaxPool2d,
 * AvgPool2d, Flatten. The arithmetic is core's `conv2d` / pooling ops.
 */
import { avgPool2d, conv2d, maxPool2d, zeros, type AvgPool2dOptions, type Conv2dOptions, type Generator, type MaxPool2dOptions, type Pair, type Tensor } from '@qgrad/core';
import { calculateFanInAndFanOut, kaimingUniform_, uniform_ } from '../init.js';
import { Module } from '../module.js';
import type { LayerOptions } from './linear.js';

const pair = (p: Pair): [number, number] => (typeof p === 'number' ? [p, p] : [p[0], p[1]]);
const showPair = (p: Pair | string) => (typeof p === 'number' || typeof p === 'string' ? String(p) : `(${p[0]}, ${p[1]})`);

/** Options of `Conv2d`: the functional conv2d's (stride, padding, dilation, groups), the layer's, and whether it has a bias. */
export interface Conv2dLayerOptions extends LayerOptions, Conv2dOptions {
  bias?: boolean;
}

/**
 * 2-D convolution over [N, C, H, W] inputs, as `nn.Conv2d`: weight [out, in/groups, kh, kw],
 * kaiming-uniform (a = √5) and bias U(±1/√fan_in).
 * @example new Conv2d(1, 8, 3, { padding: 1 }).forward(randn([2, 1, 28, 28])).shape; // [2, 8, 28, 28]
 */
export class Conv2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  readonly kernelSize: [number, number];
  readonly conv: Conv2dOptions;
  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: Pair, opts: Conv2dLayerOptions = {}) {
    super();
    const groups = opts.groups ?? 1;
    if (!Number.isInteger(groups) || groups < 1 || inChannels % groups || outChannels % groups) {
      throw new Error(`Conv2d: inChannels ${inChannels} and outChannels ${outChannels} must both be divisible by groups ${groups}`);
    }
    this.kernelSize = pair(kernelSize);
    this.conv = { stride: opts.stride ?? 1, padding: opts.padding ?? 0, dilation: opts.dilation ?? 1, groups };
    const dtype = opts.dtype ?? 'float32';
    this.weight = this.registerParameter('weight', zeros([outChannels, inChannels / groups, ...this.kernelSize], { dtype }));
    this.bias = this.registerParameter('bias', opts.bias ?? true ? zeros([outChannels], { dtype }) : null);
    this.resetParameters(opts.generator);
  }
  resetParameters(generator?: Generator): void {
    kaimingUniform_(this.weight, { a: Math.sqrt(5), generator });
    if (this.bias) {
      const [fanIn] = calculateFanInAndFanOut(this.weight);
      const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
      uniform_(this.bias, -bound, bound, { generator });
    }
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, this.conv);
  }
  override extraRepr(): string {
    const c = this.conv;
    let s = `${this.inChannels}, ${this.outChannels}, kernelSize=${showPair(this.kernelSize)}, stride=${showPair(c.stride!)}`;
    if (c.padding !== 0) s += `, padding=${showPair(c.padding!)}`;
    if (c.dilation !== 1) s += `, dilation=${showPair(c.dilation!)}`;
    if (c.groups !== 1) s += `, groups=${c.groups}`;
    if (!this.bias) s += ', bias=false';
    return s;
  }
}

/**
 * Max pooling over [N, C, H, W] (`nn.MaxPool2d`); stride defaults to the kernel size.
 * @example new MaxPool2d(2).forward(zeros([1, 8, 28, 28])).shape; // [1, 8, 14, 14]
 */
export class MaxPool2d extends Module {
  constructor(readonly kernelSize: Pair, readonly opts: MaxPool2dOptions = {}) {
    super();
  }
  forward(x: Tensor): Tensor {
    return maxPool2d(x, this.kernelSize, this.opts);
  }
  override extraRepr(): string {
    return `kernelSize=${showPair(this.kernelSize)}, stride=${showPair(this.opts.stride ?? this.kernelSize)}`;
  }
}

/**
 * Average pooling over [N, C, H, W] (`nn.AvgPool2d`); stride defaults to the kernel size.
 * @example new AvgPool2d(2).forward(zeros([1, 8, 28, 28])).shape; // [1, 8, 14, 14]
 */
export class AvgPool2d extends Module {
  constructor(readonly kernelSize: Pair, readonly opts: AvgPool2dOptions = {}) {
    super();
  }
  forward(x: Tensor): Tensor {
    return avgPool2d(x, this.kernelSize, this.opts);
  }
  override extraRepr(): string {
    return `kernelSize=${showPair(this.kernelSize)}, stride=${showPair(this.opts.stride ?? this.kernelSize)}`;
  }
}

/**
 * Flattens dims startDim..endDim (`nn.Flatten`, default 1..-1: keeps the batch dim).
 * @example new Flatten().forward(zeros([32, 8, 7, 7])).shape; // [32, 392]
 */
export class Flatten extends Module {
  constructor(readonly startDim = 1, readonly endDim = -1) {
    super();
  }
  forward(x: Tensor): Tensor {
    return x.flatten(this.startDim, this.endDim);
  }
  override extraRepr(): string {
    return `startDim=${this.startDim}, endDim=${this.endDim}`;
  }
}
