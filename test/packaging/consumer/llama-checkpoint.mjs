// A user's checkpoint for the `qgrad` bin: a tiny Llama saved as a Hugging Face directory
// (config.json + model.safetensors), which `npx qgrad export` then reads. Run by
// test/packaging/packaging.test.ts in a project outside the repository.
import { manualSeed } from '@qgrad/core';
import { Llama, savePretrained } from '@qgrad/nn';

manualSeed(0);
const llama = new Llama({ vocabSize: 64, dim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, hiddenDim: 64, maxSeqLen: 16, normEps: 1e-5, ropeTheta: 1e4, tieWordEmbeddings: false });
savePretrained(llama, process.argv[2] ?? 'llama-checkpoint');
