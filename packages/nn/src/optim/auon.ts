/**
 * @file AuON (Maity, arXiv 2509.24320): Nesterov momentum normalised in linear time by its
 * cosh-RMS instead of Muon's Newton–Schulz orthogonalisation, for weight matrices; other parameters
 * get Muon's auxiliary Adam (muon.ts). Also the packaged repository's variant and Hybrid-AuON.
 */
import type { Tensor } from '@qgrad/core';
import { Muon, zeropowerViaNewtonSchulz5, type MuonOptions } from './muon.js';
import type { ParamGroupSpec } from './optimizer.js';

/** Options of `AuON`: Muon's, plus which variant of its cosh normalisation to use. */
export interface AuONOptions extends MuonOptions {
  /**
   * 'paper' (§3.1, default): U = X/(r + 1e−8), X = u/(‖u‖_F + 1e−7), r = √mean cosh²(X), times
   * √max(1, rows/cols). 'packaged' (the repository's optimizer.py): u/(r + 1e−8) with
   * r = √mean cosh²(γ·X), no shape factor.
   */
  variant: 'paper' | 'packaged';
  /** γ of the packaged variant (default 1.5). */
  gamma: number;
  /** Hybrid-AuON: Newton–Schulz steps before the normalisation (default 0: plain AuON; the paper's hybrid uses 1). */
  hybridSteps: number;
}

/** r = √(mean cosh²(x)) ≥ 1: larger for spiky x, ≈ 1 + 1/(2N) for dense unit-norm x. */
function coshRms(x: Tensor): Tensor {
  const c = x.exp().add(x.neg().exp()).mul(0.5); // cosh
  return c.square().mean().sqrt();
}

/**
 * The AuON direction of a momentum matrix u (no learning rate): see {@link AuONOptions.variant}.
 * O(mn) work unless `hybridSteps` > 0.
 * @example auonDirection(u, { variant: 'paper', gamma: 1.5, hybridSteps: 0 }).norm(); // ≤ 1
 */
export function auonDirection(u: Tensor, o: Pick<AuONOptions, 'variant' | 'gamma' | 'hybridSteps'>): Tensor {
  const m = u.reshape(u.shape[0]!, -1);
  const v = o.hybridSteps > 0 ? zeropowerViaNewtonSchulz5(m, o.hybridSteps) : m;
  const x = v.div(v.norm().add(1e-7));
  if (o.variant === 'packaged') return v.div(coshRms(x.mul(o.gamma)).add(1e-8));
  return x.div(coshRms(x).add(1e-8)).mul(Math.sqrt(Math.max(1, u.shape[u.ndim - 2]! / u.shape[u.ndim - 1]!)));
}

/**
 * AuON for weight matrices: m ← lerp(m, g, 1−β), u = lerp(g, m, β) (Nesterov) or m,
 * p ← p·(1 − lr·wd) − lr·auonDirection(u); vectors and groups with `useMuon: false` get Muon's
 * auxiliary Adam. Paper experiments used lr 0.055 (vs 0.01 for Muon).
 * @example
 * const opt = new AuON([{ params: hidden }, { params: [emb.weight, head.weight], useMuon: false }], { lr: 0.055 });
 */
export class AuON extends Muon {
  readonly auon: Pick<AuONOptions, 'variant' | 'gamma' | 'hybridSteps'>;
  constructor(params: Tensor[] | ParamGroupSpec<MuonOptions>[], opts: Partial<AuONOptions> = {}) {
    const { variant = 'paper', gamma = 1.5, hybridSteps = 0, ...muon } = opts;
    super(params, { lr: 0.055, ...muon });
    if (variant !== 'paper' && variant !== 'packaged') throw new Error(`AuON: unknown variant ${JSON.stringify(variant)}; 'paper' or 'packaged'`);
    this.auon = { variant, gamma, hybridSteps };
  }
  /** Muon's momentum and weight decay (muon.ts), with the AuON direction in place of Newton–Schulz. */
  protected override direction(u: Tensor): Tensor | null {
    if (this.auon.variant === 'packaged' && u.norm().item() === 0) return null; // the reference skips a zero update, after its decay
    return auonDirection(u, this.auon);
  }
}
