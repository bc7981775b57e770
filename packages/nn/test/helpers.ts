/** Test helpers shared by the nn tests: gradcheck of a module over its input and parameters, scratch directories. */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { gradcheck } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';
import type { Module } from '@qgrad/nn';

/** Puts `t` into the field that holds the parameter at dotted `path` (the registry reads fields). */
export function setParameter(m: Module, path: string, t: Tensor): void {
  const i = path.lastIndexOf('.');
  const owner = m.getSubmodule(i < 0 ? '' : path.slice(0, i));
  (owner as unknown as Record<string, Tensor>)[path.slice(i + 1)] = t;
}

/**
 * gradcheck of `forward(...inputs)` with respect to the inputs and every parameter of `m`
 * (which must already be float64); the parameters are restored afterwards.
 */
export function gradcheckModule(m: Module, forward: (...xs: Tensor[]) => Tensor, inputs: Tensor[]): void {
  const named = [...m.namedParameters()];
  try {
    gradcheck(
      (...xs) => {
        named.forEach(([n], i) => setParameter(m, n, xs[inputs.length + i]!));
        return forward(...xs.slice(0, inputs.length));
      },
      [...inputs, ...named.map(([, p]) => p)],
    );
  } finally {
    for (const [n, p] of named) setParameter(m, n, p);
  }
}

/** Runs forward + backward of sum(output²) and returns the names of parameters left without a gradient. */
export function paramsWithoutGrad(m: Module, out: Tensor): string[] {
  m.zeroGrad();
  out.square().sum().backward();
  return [...m.namedParameters()].filter(([, p]) => !p.grad || p.grad.abs().sum().item() === 0).map(([n]) => n);
}

/**
 * A temporary root `qgrad-<prefix>-…` removed after the file's tests, and a function that makes
 * a new empty directory under it for each case.
 */
export function scratchDirs(prefix: string): () => string {
  const root = mkdtempSync(join(tmpdir(), `qgrad-${prefix}-`));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;
  return () => {
    const d = join(root, `case${n++}`);
    mkdirSync(d);
    return d;
  };
}
