/**
 * @file The autograd engine: grad mode, tape nodes, the reverse walk behind `backward()` and
 * `grad()`, gradient hooks, the saved-tensor version check and anomaly mode.
 * Ops and their derivative rules live in ops/; the custom-function API in function.ts.
 */
import type { DType } from '@qgrad/kernels';
import type { Storage, Tensor } from './tensor.js';

// ---------------------------------------------------------------- grad mode
let gradEnabled = true;

/**
 * Whether ops record on the autograd tape right now (false inside `noGrad`).
 * @example noGrad(() => isGradEnabled()); // false
 */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` with gradient recording switched to `enabled`, restoring the mode afterwards. */
export function withGradMode<T>(enabled: boolean, fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = enabled;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/**
 * Runs `fn` without recording the tape, like `torch.no_grad()`.
 * @example const y = noGrad(() => w.mul(2)); // y.requiresGrad === false
 */
export function noGrad<T>(fn: () => T): T {
  return withGradMode(false, fn);
}

/**
 * Runs `fn` with recording on even inside `noGrad`, like `torch.enable_grad()`.
 * @example noGrad(() => enableGrad(() => x.mul(2))).requiresGrad; // true
 */
export function enableGrad<T>(fn: () => T): T {
  return withGradMode(true, fn);
}

// ---------------------------------------------------------------- anomaly mode
let anomaly = typeof process !== 'undefined' && /^(1|true|yes)$/i.test(process.env?.QGRAD_DETECT_ANOMALY ?? '');

/**
 * Whether anomaly detection is on (`setDetectAnomaly`, `detectAnomaly`, or QGRAD_DETECT_ANOMALY=1 in the environment).
 * @example setDetectAnomaly(true); isAnomalyEnabled(); // true
 */
export function isAnomalyEnabled(): boolean {
  return anomaly;
}

// while a backward rule runs, its inner ops are not checked one by one: the rule is blamed as a whole
let checkingForward = true;
/** @internal whether forward outputs are checked right now (anomaly mode, outside backward rules). */
export function anomalyChecksForward(): boolean {
  return anomaly && checkingForward;
}

/**
 * Switches anomaly mode on or off (also on when the environment variable
 * QGRAD_DETECT_ANOMALY=1). While on, the first op whose forward output or backward gradient
 * holds NaN or Inf throws an `AnomalyError` naming the op and the call site that created it.
 * @example setDetectAnomaly(true); // the next NaN gradient throws an AnomalyError naming its op
 */
export function setDetectAnomaly(on: boolean): void {
  anomaly = on;
}

/**
 * Runs `fn` with anomaly mode on, like `torch.autograd.detect_anomaly()`.
 * @example detectAnomaly(() => loss.backward());
 */
export function detectAnomaly<T>(fn: () => T): T {
  const prev = anomaly;
  anomaly = true;
  try {
    return fn();
  } finally {
    anomaly = prev;
  }
}

/**
 * Thrown under anomaly detection when a backward produces a NaN or infinite gradient; the message names the op and the module path that created it.
 * @example try { detectAnomaly(() => loss.backward()); } catch (e) { if (e instanceof AnomalyError) console.error(e.message); }
 */
export class AnomalyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AnomalyError';
  }
}

// ---------------------------------------------------------------- tape
/** Where the gradient of one input goes: an earlier node's output or a leaf tensor. */
export interface Edge {
  node: Node | null;
  index: number;
  leaf: Tensor | null;
  shape: number[];
  dtype: DType;
}

/** A tensor's gradient hook (`x.registerHook`): sees the gradient flowing into the tensor and may return a replacement. */
export type GradHook = (grad: Tensor) => Tensor | void;

/** What a node calls to map output gradients to one gradient (or null) per edge. */
export interface BackwardRule {
  backward(grads: Tensor[]): (Tensor | null | undefined)[];
}

/**
 * Sets the grad mode, returning the previous one (hot paths use this instead of a closure).
 * @example const prev = setGradEnabled(false); try { evaluate(); } finally { setGradEnabled(prev); }
 */
export function setGradEnabled(on: boolean): boolean {
  const prev = gradEnabled;
  gradEnabled = on;
  return prev;
}

/** One recorded op application. */
export class Node {
  /** Per output: hooks registered on the non-leaf tensor. */
  hooks: (GradHook[] | undefined)[] = [];
  saved: Tensor[] | null = null;
  savedVersions: number[] = [];
  callSite: string | null = null;

  constructor(
    readonly name: string,
    /** Maps output gradients to input gradients; null once the graph is freed. */
    public rule: BackwardRule | null,
    readonly edges: (Edge | null)[],
    readonly outputs: { shape: number[]; dtype: DType }[],
    readonly onceDifferentiable = false,
  ) {}

  checkSaved(): void {
    if (this.saved === null) {
      if (this.rule === null) throw new Error(`${this.name}: trying to backward through the graph a second time; its saved tensors were freed (pass retainGraph: true to the first backward)`);
      return;
    }
    for (let i = 0; i < this.saved.length; i++) {
      const t = this.saved[i]!;
      if (t.version !== this.savedVersions[i]) {
        throw new Error(
          `${this.name}: a tensor of shape [${t.shape.join(', ')}] needed for its gradient was modified by an in-place operation (version ${t.version}, expected ${this.savedVersions[i]})`,
        );
      }
    }
  }

  release(): void {
    this.saved = null;
    this.rule = null;
  }
}

/** Options of `backward()` and `grad()`: record the backward pass for double backward, or keep the graph for another backward. */
export interface BackwardOptions {
  /** Record the backward pass so gradients are differentiable again (double backward). */
  createGraph?: boolean;
  /** Keep saved tensors so backward can run again through the same graph. */
  retainGraph?: boolean;
}

/** Ops the engine needs, injected by tensor.ts to keep this file free of op imports. */
export interface EngineOps {
  add(a: Tensor, b: Tensor): Tensor;
  sumToShape(g: Tensor, shape: number[]): Tensor;
  zeros(shape: number[], dtype: DType, like: Tensor): Tensor;
  cast(g: Tensor, dtype: DType): Tensor;
  onceGuard(g: Tensor, name: string): Tensor;
  hasNonFinite(t: Tensor): boolean;
  startRecording(): Storage[] | null;
  stopRecording(prev: Storage[] | null): Storage[];
  record(storages: Iterable<Storage>): void;
  release(storage: Storage): void;
  keep(t: Tensor): void;
}

let ops: EngineOps;
export function setEngineOps(o: EngineOps): void {
  ops = o;
}

/** Reverse topological order of the nodes reachable from `roots`. */
function topoOrder(roots: Node[]): Node[] {
  const order: Node[] = [];
  const seen = new Set<Node>();
  const stack: [Node, number][] = [];
  for (const r of roots) {
    if (seen.has(r)) continue;
    seen.add(r);
    stack.push([r, 0]);
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [node, i] = top;
      if (i < node.edges.length) {
        top[1] = i + 1;
        const next = node.edges[i]?.node;
        if (next && !seen.has(next)) {
          seen.add(next);
          stack.push([next, 0]);
        }
      } else {
        stack.pop();
        order.push(node);
      }
    }
  }
  return order.reverse();
}

function accumulate(prev: Tensor | undefined | null, g: Tensor): Tensor {
  return prev ? ops.add(prev, g) : g;
}


/**
 * One reverse walk. With `targets`, gradients of those tensors are returned and no `.grad` is
 * touched (functional `grad`); without, leaf gradients accumulate into `.grad`. Written with
 * loops and methods rather than per-node closures: it runs once per recorded op.
 */
class BackwardPass {
  readonly nodeGrads = new Map<Node, (Tensor | undefined)[]>();
  readonly leafGrads = new Map<Tensor, Tensor>();
  readonly targetNodes = new Map<Node, Map<number, number>>();
  readonly targetLeaves = new Map<Tensor, number>();
  readonly results: (Tensor | null)[] = [];
  readonly recycling: boolean;
  /** Pending-slot references to each storage. */
  readonly refs = new Map<Storage, number>();
  /** Storages allocated during this pass and not yet recycled. */
  readonly made = new Set<Storage>();
  readonly escaped = new Set<Storage>();
  /** Storages whose last reference may just have gone. */
  readonly dead: Storage[] = [];

  constructor(
    readonly createGraph: boolean,
    readonly retainGraph: boolean,
    readonly targets: Tensor[] | undefined,
  ) {
    this.recycling = !createGraph;
    if (!targets) return;
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i]!;
      this.results.push(null);
      if (t.gradFn) {
        let m = this.targetNodes.get(t.gradFn);
        if (!m) this.targetNodes.set(t.gradFn, (m = new Map()));
        m.set(t.outputIndex, i);
      } else this.targetLeaves.set(t, i);
    }
  }

  toNode(node: Node, index: number, g: Tensor): void {
    let gs = this.nodeGrads.get(node);
    if (!gs) this.nodeGrads.set(node, (gs = []));
    const prev = gs[index];
    const sum = accumulate(prev, g);
    gs[index] = sum;
    if (this.recycling) {
      if (prev) this.drop(prev);
      this.hold(sum);
    }
  }

  /**
   * Adds one partial gradient of a leaf. Hooks wait for the sum (`finishLeaves`), as PyTorch runs
   * a leaf's hooks once on its whole gradient, not once per use of the leaf.
   */
  toLeaf(leaf: Tensor, g: Tensor): void {
    let prev: Tensor | null | undefined;
    let sum: Tensor;
    if (this.targets) {
      const ti = this.targetLeaves.get(leaf);
      if (ti === undefined) {
        // reached a leaf nobody asked for: dies with the pass
        if (this.recycling) this.dead.push(g.storage);
        return;
      }
      prev = this.results[ti];
      sum = this.results[ti] = accumulate(prev, g);
    } else {
      prev = this.leafGrads.get(leaf);
      this.leafGrads.set(leaf, (sum = accumulate(prev, g)));
    }
    // a partial that only fed a sum (tied weights) dies; the running sum is held, since the same
    // gradient object may also be another leaf's
    if (this.recycling) {
      if (prev) this.drop(prev);
      this.hold(sum);
    }
  }

  /** Runs each leaf's hooks on its summed gradient; what they see and return escapes. */
  finishLeaves(): void {
    const hooked = (leaf: Tensor, g: Tensor): Tensor => {
      if (!leaf.hooks) return g;
      if (this.recycling) this.escape(g);
      const r = this.runHooks(leaf.hooks, g);
      if (this.recycling) this.escape(r);
      return r;
    };
    if (this.targets) {
      for (const [leaf, ti] of this.targetLeaves) {
        const g = this.results[ti];
        if (g) this.results[ti] = hooked(leaf, g);
        if (g && this.recycling) this.escape(g);
      }
      return;
    }
    for (const [leaf, sum] of this.leafGrads) {
      if (this.recycling) this.escape(sum);
      const g = hooked(leaf, sum);
      const d = this.createGraph ? g : g.detach();
      leaf.grad = leaf.grad ? (this.createGraph ? ops.add(leaf.grad, d) : ops.add(leaf.grad, d).detach()) : d;
      // a leaf's .grad is reachable through the leaf: no enclosing scope (tidy) may release it
      ops.keep(leaf.grad);
    }
  }

  /**
   * Runs user hooks. Whatever they allocate is the user's (kept in a list, a retained grad, a
   * replacement gradient): a nested recording hides it from this pass's sweep and from any
   * enclosing scope, so no such tensor is ever recycled.
   */
  runHooks(hooks: GradHook[] | undefined, g: Tensor): Tensor {
    if (!hooks) return g;
    const prev = this.recycling ? ops.startRecording() : null;
    try {
      for (const h of hooks) {
        const r = h(g);
        if (r) g = r;
      }
    } finally {
      if (this.recycling) ops.stopRecording(prev);
    }
    return g;
  }

  // ---- recycling (see dispatch.ts): without createGraph, the gradients this pass makes and the
  // temporaries of each backward rule are dead once no pending gradient slot refers to them, unless
  // they escaped (became a result or a leaf's .grad, or went through a user hook)
  hold(t: Tensor): void {
    this.refs.set(t.storage, (this.refs.get(t.storage) ?? 0) + 1);
  }
  drop(t: Tensor): void {
    const n = (this.refs.get(t.storage) ?? 0) - 1;
    if (n > 0) this.refs.set(t.storage, n);
    else this.refs.delete(t.storage);
    this.dead.push(t.storage);
  }
  escape(t: Tensor): void {
    this.escaped.add(t.storage);
  }
  /** Recycles the storages made in this pass that nothing refers to any more. */
  sweep(made: Storage[]): void {
    for (let i = 0; i < made.length; i++) this.made.add(made[i]!);
    const dead = this.dead;
    for (let i = 0; i < made.length; i++) dead.push(made[i]!);
    for (let i = 0; i < dead.length; i++) {
      const st = dead[i]!;
      if (this.made.has(st) && !this.escaped.has(st) && !this.refs.has(st)) {
        this.made.delete(st);
        ops.release(st);
      }
    }
    dead.length = 0;
  }

  run(roots: Tensor[], rootGrads: Tensor[]): void {
    const starts: Node[] = [];
    for (let i = 0; i < roots.length; i++) {
      const r = roots[i]!;
      if (r.gradFn) {
        this.toNode(r.gradFn, r.outputIndex, rootGrads[i]!);
        starts.push(r.gradFn);
      } else if (r.requiresGrad) this.toLeaf(r, rootGrads[i]!);
    }
    const order = topoOrder(starts);
    for (let k = 0; k < order.length; k++) this.visit(order[k]!);
    this.finishLeaves();
    // each node recorded in a nested recording, hidden from any enclosing scope: what this pass
    // made and did not recycle (the results it returns) is that scope's to release, as a forward
    // op's output is. Left out, `tidy(() => gradOf(…))` leaked its gradients to the collector.
    if (this.recycling) ops.record(this.made);
  }

  visit(node: Node): void {
    const gs = this.nodeGrads.get(node);
    if (!gs) return;
    this.nodeGrads.delete(node);
    node.checkSaved();
    const recycling = this.recycling;
    const prevRecorder = recycling ? ops.startRecording() : null;
    try {
      this.backwardOf(node, gs);
    } finally {
      if (recycling) this.sweep(ops.stopRecording(prevRecorder));
    }
  }

  backwardOf(node: Node, gs: (Tensor | undefined)[]): void {
    const outs = node.outputs;
    let some: Tensor | undefined;
    for (let i = 0; i < outs.length && !some; i++) some = gs[i];
    const full = new Array<Tensor>(outs.length);
    for (let i = 0; i < outs.length; i++) {
      const g = gs[i];
      if (g && this.recycling) this.drop(g);
      const hooks = node.hooks[i];
      if (hooks && g && this.recycling) this.escape(g);
      full[i] = this.runHooks(hooks, g ?? ops.zeros(outs[i]!.shape, outs[i]!.dtype, some!));
      if (hooks && this.recycling) this.escape(full[i]!);
    }
    const tn = this.targetNodes.get(node);
    if (tn) {
      for (const [oi, ti] of tn) {
        this.results[ti] = full[oi]!;
        if (this.recycling) this.escape(full[oi]!);
      }
    }
    checkingForward = false;
    let inGrads: (Tensor | null | undefined)[];
    try {
      inGrads = node.rule!.backward(full);
    } finally {
      checkingForward = true;
    }
    if (anomaly) checkGrads(node, inGrads);
    const edges = node.edges;
    for (let i = 0; i < edges.length; i++) {
      const e = edges[i];
      let g = inGrads[i];
      if (!e || !g) continue;
      if (this.createGraph && node.onceDifferentiable) g = ops.onceGuard(g, node.name);
      if (!sameShape(g.shape, e.shape)) g = ops.sumToShape(g, e.shape);
      if (g.dtype !== e.dtype) g = ops.cast(g, e.dtype);
      if (e.node) this.toNode(e.node, e.index, g);
      else if (e.leaf) this.toLeaf(e.leaf, g);
    }
    if (!this.retainGraph) node.release();
  }
}

export function runBackward(roots: Tensor[], rootGrads: Tensor[], opts: BackwardOptions, targets?: Tensor[]): (Tensor | null)[] {
  const createGraph = opts.createGraph ?? false;
  const pass = new BackwardPass(createGraph, opts.retainGraph ?? createGraph, targets);
  const prev = setGradEnabled(createGraph);
  try {
    pass.run(roots, rootGrads);
  } finally {
    setGradEnabled(prev);
  }
  return pass.results;
}

function checkGrads(node: Node, grads: (Tensor | null | undefined)[]): void {
  grads.forEach((g, i) => {
    if (g && ops.hasNonFinite(g)) {
      throw new AnomalyError(
        `backward of '${node.name}' returned NaN or Inf in the gradient of input ${i} (shape [${g.shape.join(', ')}]); the op was created at ${node.callSite ?? 'an unknown call site'}`,
      );
    }
  });
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
