/**
 * @file Muon (Keller Jordan): momentum orthogonalised by a 5-step Newton–Schulz iteration for
 * weight matrices, with the AdamW-style auxiliary update of `MuonWithAuxAdam` for every other
 * parameter (gains, biases, and whatever groups mark `useMuon: false`).
 */
import { matmul, zerosLike, type Tensor } from '@qgrad/core';
import { lerp_, Optimizer, type ParamGroup, type ParamGroupSpec, type ParamState } from './optimizer.js';

/** Quintic Newton–Schulz coefficients (a, b, c) from Keller Jordan's Muon. */
export const NS_COEFFICIENTS = [3.4445, -4.775, 2.0315] as const;

/**
 * Approximately orthogonalises a matrix G [m, n] (≈ U·Vᵀ of its SVD, singular values pushed
 * into about [0.7, 1.2]): X ← G/‖G‖_F, then `steps` times X ← aX + (bA + cA²)X with A = XXᵀ,
 * working on the wide orientation. (The reference runs this in bfloat16; qgrad keeps G's dtype.)
 * @example zeropowerViaNewtonSchulz5(randn([4, 8])).matmul(...).shape; // [4, 8]
 */
export function zeropowerViaNewtonSchulz5(g: Tensor, steps = 5): Tensor {
  if (g.ndim !== 2) throw new Error(`zeropowerViaNewtonSchulz5: expected a matrix, got shape [${g.shape.join(', ')}]`);
  const [a, b, c] = NS_COEFFICIENTS;
  const tall = g.shape[0]! > g.shape[1]!;
  let x = tall ? g.t() : g;
  x = x.div(x.norm().add(1e-7));
  for (let i = 0; i < steps; i++) {
    const A = matmul(x, x.t());
    const B = A.mul(b).add(matmul(A, A).mul(c));
    x = x.mul(a).add(matmul(B, x));
  }
  return tall ? x.t() : x;
}

/** Options of `Muon`: learning rate, momentum and Nesterov, Newton–Schulz steps, weight decay, and the auxiliary Adam for parameters that are not matrices. */
export interface MuonOptions {
  /** Learning rate of the Muon update (default 0.02). */
  lr: number;
  /** Momentum β (default 0.95). */
  momentum: number;
  nesterov: boolean;
  nsSteps: number;
  /** Decoupled weight decay, p ← p·(1 − lr·wd) (default 0). */
  weightDecay: number;
  /** Use Muon for this group's parameters; unset means: parameters with ≥ 2 dims do. */
  useMuon?: boolean;
  /** Auxiliary Adam for the other parameters (defaults 3e-4, (0.9, 0.95), 1e-10, 0, as MuonWithAuxAdam). */
  adamLr: number;
  adamBetas: [number, number];
  adamEps: number;
  adamWeightDecay: number;
}

/**
 * Muon for weight matrices (conv kernels flattened to [out, in·kh·kw]): momentum m ← lerp(m, g, 1−β),
 * update u = lerp(g, m, β) (Nesterov) or m, orthogonalised by Newton–Schulz and scaled by
 * √max(1, size(−2)/size(−1)) of the gradient; p ← p·(1 − lr·wd) − lr·u. Other parameters get the auxiliary Adam of
 * Keller Jordan's `MuonWithAuxAdam`: p ← p·(1 − lr·wd) − lr·m̂/(√v̂ + ε). As the reference
 * advises, put embeddings and the output head in a group with `useMuon: false`.
 * @example
 * const opt = new Muon([{ params: hidden }, { params: [emb.weight, head.weight], useMuon: false }], { lr: 0.02 });
 */
export class Muon extends Optimizer<MuonOptions> {
  constructor(params: Tensor[] | ParamGroupSpec<MuonOptions>[], opts: Partial<MuonOptions> = {}) {
    super(params, {
      lr: 0.02, momentum: 0.95, nesterov: true, nsSteps: 5, weightDecay: 0,
      adamLr: 3e-4, adamBetas: [0.9, 0.95], adamEps: 1e-10, adamWeightDecay: 0, ...opts,
    });
  }
  protected update(p: Tensor, g: Tensor, s: ParamState, o: ParamGroup<MuonOptions>): void {
    if (o.useMuon ?? p.ndim >= 2) {
      if (p.ndim < 2) throw new Error(`${this.constructor.name}: parameter of shape [${p.shape.join(', ')}] is not a matrix; put it in a group with useMuon: false`);
      const m = (s.momentumBuffer ??= zerosLike(p)) as Tensor;
      lerp_(m, g, 1 - o.momentum);
      const u = o.nesterov ? g.add(m.sub(g).mul(o.momentum)) : m; // grad.lerp(m, β), out of place
      if (o.weightDecay) p.mul_(1 - o.lr * o.weightDecay);
      const d = this.direction(u, o);
      if (d) p.add_(d.reshape(p.shape), -o.lr);
    } else {
      const [b1, b2] = o.adamBetas;
      if (s.step === undefined) {
        s.step = 0;
        s.expAvg = zerosLike(p);
        s.expAvgSq = zerosLike(p);
      }
      const step = (s.step as number) + 1;
      s.step = step;
      lerp_(s.expAvg as Tensor, g, 1 - b1);
      lerp_(s.expAvgSq as Tensor, g.square(), 1 - b2);
      const mHat = (s.expAvg as Tensor).div(1 - b1 ** step);
      const vHat = (s.expAvgSq as Tensor).div(1 - b2 ** step);
      if (o.adamWeightDecay) p.mul_(1 - o.adamLr * o.adamWeightDecay);
      p.add_(mHat.div(vHat.sqrt().add(o.adamEps)), -o.adamLr);
    }
  }
  /**
   * The step direction of a matrix's momentum u (before −lr), or null to skip the step (the
   * weight decay is already applied). Muon: u orthogonalised by Newton–Schulz, scaled by
   * √max(1, rows/cols); AuON overrides it.
   */
  protected direction(u: Tensor, o: ParamGroup<MuonOptions>): Tensor | null {
    const d = zeropowerViaNewtonSchulz5(u.reshape(u.shape[0]!, -1), o.nsSteps); // [out, in·k…]
    // the reference scales by the last two dims of the unflattened gradient (kh/kw for conv)
    return d.mul(Math.sqrt(Math.max(1, u.shape[u.ndim - 2]! / u.shape[u.ndim - 1]!)));
  }
}
