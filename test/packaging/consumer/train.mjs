// A user's plain-Node ESM script: a W4A4 LSQ MLP trains a few steps, is converted to integer
// codes and saved. Run by test/packaging/packaging.test.ts in a project outside the repository.
import { randn, randint, manualSeed } from '@qgrad/core';
import { Sequential, Linear, ReLU, AdamW, crossEntropy } from '@qgrad/nn';
import { prepareQAT, convert, saveQuantized } from '@qgrad/quant';

manualSeed(0);
const model = new Sequential(new Linear(16, 32), new ReLU(), new Linear(32, 4));
const w4a4 = { grid: 'int', bits: 4, scale: 'learned', estimator: 'lsq' };
prepareQAT(model, { default: { weight: w4a4, input: w4a4 } });
const opt = new AdamW(model.parameters(), { lr: 1e-2 });
const x = randn([64, 16]);
const y = randint(0, 4, [64]);
const losses = [];
for (let step = 0; step < 5; step++) {
  const loss = crossEntropy(model.forward(x), y);
  loss.backward();
  opt.step();
  opt.zeroGrad();
  losses.push(loss.item());
}
convert(model);
saveQuantized(model, 'mlp-w4a4.safetensors');
console.log(JSON.stringify({ losses }));
