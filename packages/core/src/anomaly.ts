/**
 * @file Where an anomaly-mode error points: the stack of module labels that @qgrad/nn keeps while
 * a module's forward runs, and the stack-frame finder that tells user code from qgrad's sources.
 * The switch and the checks themselves live in tape.ts (backward) and function.ts (forward).
 */

// Pushed and popped only while anomaly mode is on, so normal runs never touch it.
const moduleLabels: string[] = [];

/**
 * Marks the start of a module's forward for anomaly messages; @qgrad/nn's `Module` calls this
 * (only in anomaly mode) with a label such as `'model.layers.2.input_layernorm' (RMSNorm in Llama)`.
 * Every push must be matched by `popModulePath()`, in a `finally`.
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function pushModulePath(label: string): void {
  moduleLabels.push(label);
}

/**
 * Ends the scope opened by the last `pushModulePath`.
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function popModulePath(): void {
  moduleLabels.pop();
}

/**
 * The label of the innermost module whose forward is running, or null outside any module (and
 * always with anomaly mode off, when nothing is recorded).
 * @example detectAnomaly(() => model.forward(x)); // inside a layer: "'layers.0.mlp' (MLP in Net)"
 */
export function currentModulePath(): string | null {
  return moduleLabels.length ? moduleLabels[moduleLabels.length - 1]! : null;
}

// core and kernels run the op; nn and quant are library code too, but the layer that called the
// op is the most precise line to show, so frames there are kept as the op's site.
const ENGINE = /packages[\\/](core|kernels)[\\/]src[\\/]/;
const LIBRARY = /packages[\\/](core|kernels|nn|quant)[\\/]src[\\/]/;
const RUNTIME = /node:internal|node_modules|\(native\)/;
// nn layers nest deeply (Llama → decoder layer → attention → Linear → op → apply), so the
// default limit of 10 frames often ends before the user's line
const FRAMES = 200;

/**
 * Describes the current call for an anomaly message: the first frame outside core and kernels
 * (the line that called the op, often an nn layer), the module running (see `pushModulePath`)
 * and the first frame outside every qgrad package (the user's own line), leaving out repeats.
 * @internal Capturing the stack is slow: call it only in anomaly mode.
 */
export function anomalySite(): string {
  const prevLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = FRAMES;
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = prevLimit;
  let op: string | undefined;
  let user: string | undefined;
  for (const line of stack.split('\n').slice(1)) {
    if (RUNTIME.test(line)) continue;
    if (op === undefined && !ENGINE.test(line)) op = line.trim().replace(/^at /, '');
    if (!LIBRARY.test(line)) {
      user = line.trim().replace(/^at /, '');
      break;
    }
  }
  const module = currentModulePath();
  let site = op ?? 'an unknown call site';
  if (module !== null) site += ` in module ${module}`;
  if (user !== undefined && user !== op) site += `, called from user code at ${user}`;
  return site;
}
