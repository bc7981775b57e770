/**
 * @file QAT on the gpu backend as selection makes it in Node (webgpu in a worker thread, so the
 * synchronous reads of scale inits and of the loss work): a W4A8 LSQ MLP trained with the same
 * seed on gpu and on the CPU follows the same loss curve. Without a GPU the adapter is Dawn's
 * OpenGL ES over Mesa (software). Where webgpu does not open, one line says why and it is skipped.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { crossEntropy, Generator, randint, randn, withBackend } from '@qgrad/core';
import { backendEntry } from '@qgrad/kernels';
import { Adam, Linear, ReLU, Sequential, trainStep } from '@qgrad/nn';
import { prepareQAT } from '@qgrad/quant';

// auto selection (the test config sets headless-gl for the other suites; this file runs in its own worker)
delete process.env.QGRAD_GPU_MODE;
const gpu = backendEntry('gpu')!;
const info = gpu.available() ? (gpu.instance() as unknown as { info(): { mode: string | null; message: string } }).info() : null;
const webgpu = info?.mode === 'webgpu';
if (!webgpu) console.log(`gpu QAT training suite skipped: auto selection did not take webgpu in a worker (${info?.message ?? 'no gpu mode opens'})`);
// what the file opened, it releases (vitest ends the thread by terminating it; see gpu-remote.test.ts)
afterAll(() => {
  if (gpu.available()) gpu.instance().dispose();
});

/** 40 Adam steps of a 24-32-32-5 MLP, W4 LSQ weights and A8 LSQ inputs, on `backend`; the losses. */
function train(backend: 'gpu' | 'wasm'): number[] {
  return withBackend(backend, () => {
    const g = new Generator(7);
    const model = new Sequential(new Linear(24, 32, { generator: g }), new ReLU(), new Linear(32, 32, { generator: g }), new ReLU(), new Linear(32, 5, { generator: g }));
    prepareQAT(model, { default: { weight: { bits: 4, estimator: 'lsq' }, input: { bits: 8, signed: false } }, rules: [{ match: '0', weight: { bits: 4, estimator: 'lsq' }, input: { bits: 8 } }] });
    const opt = new Adam(model.parameters(), { lr: 3e-3 });
    const x = randn([64, 24], { generator: g });
    const y = randint(0, 5, [64], { generator: g });
    const losses: number[] = [];
    for (let s = 0; s < 40; s++) {
      losses.push(trainStep(model, opt, () => {
        const loss = crossEntropy(model.forward(x), y);
        opt.zeroGrad();
        loss.backward();
        opt.step();
        return loss.item();
      }));
    }
    return losses;
  });
}

describe.skipIf(!webgpu)('QAT on the gpu backend (webgpu in a worker thread)', () => {
  it('a W4A8 LSQ MLP follows the CPU run of the same seed', () => {
    const cpu = train('wasm');
    const dev = train('gpu');
    const diffs = dev.map((l, i) => Math.abs(l - cpu[i]!));
    const worst = Math.max(...diffs);
    console.log(`W4A8 LSQ MLP, 40 steps on ${info!.message}: loss ${cpu[0]!.toFixed(4)} → ${cpu.at(-1)!.toFixed(4)} (wasm) vs ${dev[0]!.toFixed(4)} → ${dev.at(-1)!.toFixed(4)} (gpu), max |Δloss| ${worst.toExponential(2)}`);
    expect(cpu.at(-1)!).toBeLessThan(cpu[0]! * 0.8);
    expect(worst).toBeLessThan(2e-2);
  }, 300_000);
});
