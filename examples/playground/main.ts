/**
 * @file The playground page: controls for grid, bits, estimator, steps, seed and learning rate; a
 * Train button that runs train.ts a step at a time, drawing the loss as it goes; then the held-out
 * accuracy, a layer's weight histogram against the grid, and a Download button for the converted
 * model's safetensors bytes. `globalThis.qgradPlayground` holds the run's state for tests.
 */
// type-checked with the DOM's types by examples/playground/tsconfig.json (the root config excludes this file)
import { backendInfo, listEstimators } from '@qgrad/core';
import { GRID_NAMES, type GridName } from '@qgrad/quant';
import { histogramChart, lossChart } from './charts.js';
import { decodeSlice, SLICE_FILE, type MnistSlice } from './data.js';
import { DEFAULTS, GRIDS_WITH_BITS, Training, type PlaygroundOptions, type PlaygroundState } from './train.js';

const state: PlaygroundState = { phase: 'loading', backend: '', options: null, losses: [], accuracy: null, msPerStep: null, download: null, error: null };
Object.assign(globalThis, { qgradPlayground: state });

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const form = $<HTMLFormElement>('controls');
const gridSelect = $<HTMLSelectElement>('grid');
const estimatorSelect = $<HTMLSelectElement>('estimator');
const bitsInput = $<HTMLInputElement>('bits');
const trainButton = $<HTMLButtonElement>('train');
const downloadButton = $<HTMLButtonElement>('download');
const statusLine = $<HTMLParagraphElement>('status');
const lossSvg = $<HTMLElement>('loss');
const histogramSvg = $<HTMLElement>('histogram');

// a codebook grid needs its levels, which a form field cannot give
for (const g of GRID_NAMES.filter((g) => g !== 'codebook')) {
  const option = new Option(g, g);
  // MX scales blocks of 32 inputs and the first layer has 784 = 24.5 × 32: prepareQAT refuses it
  if (g.startsWith('mx')) Object.assign(option, { disabled: true, text: `${g} (784 inputs are not blocks of 32)` });
  gridSelect.add(option);
}
estimatorSelect.add(new Option("grid's default", ''));
for (const e of listEstimators()) estimatorSelect.add(new Option(e, e));
const fields: Record<'grid' | 'bits' | 'input-bits' | 'estimator' | 'steps' | 'seed' | 'lr', keyof PlaygroundOptions> = {
  grid: 'grid', bits: 'bits', 'input-bits': 'inputBits', estimator: 'estimator', steps: 'steps', seed: 'seed', lr: 'lr',
};
for (const [id, key] of Object.entries(fields)) $<HTMLInputElement>(id).value = String(DEFAULTS[key]);
$('model').textContent = `model: a 784-${DEFAULTS.hidden}-10 MLP (ReLU), every Linear's weight on the chosen grid and its input on an int grid, Adam, batches of ${DEFAULTS.batchSize}; the converted file holds the integer codes and scales.`;
const syncBits = () => (bitsInput.disabled = !GRIDS_WITH_BITS.includes(gridSelect.value as GridName));
gridSelect.addEventListener('change', syncBits);
syncBits();

function readOptions(): PlaygroundOptions {
  const value = (id: string) => $<HTMLInputElement>(id).value;
  const int = (id: string, min: number) => {
    const v = Number(value(id));
    if (!Number.isInteger(v) || v < min) throw new Error(`${id} must be an integer ≥ ${min}, got '${value(id)}'`);
    return v;
  };
  const lr = Number(value('lr'));
  if (!(lr > 0)) throw new Error(`the learning rate must be > 0, got '${value('lr')}'`);
  return { ...DEFAULTS, grid: value('grid') as GridName, bits: int('bits', 1), inputBits: int('input-bits', 0), estimator: value('estimator'), steps: int('steps', 1), seed: int('seed', 0), lr };
}

function say(text: string, error = false): void {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', error);
}

function showBackend(): void {
  state.backend = backendInfo();
  $('backend').textContent = `backend: ${state.backend}; page ${crossOriginIsolated ? 'is' : 'is not'} cross-origin isolated`;
}

/** Lets the page draw and the wasm backend's Web Workers start (a browser starts them between tasks). */
const yieldToPage = () => new Promise<void>((done) => setTimeout(done, 0));

let slice: MnistSlice | null = null;
let download: { url: string; name: string } | null = null;

async function train(): Promise<void> {
  const o = readOptions();
  trainButton.disabled = true;
  downloadButton.disabled = true;
  if (download) URL.revokeObjectURL(download.url);
  download = null;
  Object.assign(state, { phase: 'training', options: o, losses: [], accuracy: null, msPerStep: null, download: null, error: null });
  histogramSvg.innerHTML = '';
  const t = new Training(slice!, o);
  const start = performance.now();
  let drawn = start;
  while (t.losses.length < o.steps) {
    state.losses.push(t.step());
    // redraw (and yield) every ~50 ms of training: live, without a frame per step
    if (performance.now() - drawn > 50 || t.losses.length === o.steps) {
      lossSvg.innerHTML = lossChart(t.losses, o.steps);
      say(`step ${t.losses.length} / ${o.steps}: loss ${t.losses.at(-1)!.toFixed(4)}`);
      await yieldToPage();
      drawn = performance.now();
    }
  }
  state.msPerStep = (performance.now() - start) / o.steps;
  state.accuracy = t.accuracy();
  const layer = $<HTMLSelectElement>('layer').value as '0' | '2';
  const h = t.histogram(layer);
  histogramSvg.innerHTML = histogramChart(h);
  $('histogram-caption').textContent = `Layer ${layer}'s weights in grid units (${o.grid}${GRIDS_WITH_BITS.includes(o.grid) ? `, ${o.bits} bits` : ''}), its ${h.levels.length} levels in red; ${(100 * h.clippedFraction).toFixed(2)} % beyond the outer levels.`;
  const bytes = t.exportBytes();
  const name = `qgrad-mnist-${o.grid}${GRIDS_WITH_BITS.includes(o.grid) ? o.bits : ''}-a${o.inputBits}-${o.estimator || 'default'}-seed${o.seed}.safetensors`;
  download = { url: URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'application/octet-stream' })), name };
  state.download = { name, bytes: bytes.byteLength };
  downloadButton.disabled = false;
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  say(`${o.steps} steps, ${state.msPerStep.toFixed(1)} ms/step: loss ${mean(t.losses.slice(0, 20)).toFixed(3)} (first 20) → ${mean(t.losses.slice(-20)).toFixed(3)} (last 20); test accuracy ${(100 * state.accuracy).toFixed(1)} % on ${slice!.test.labels.length} held-out digits; model ${(bytes.byteLength / 1024).toFixed(1)} KiB`);
  showBackend();
  state.phase = 'done';
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  train().catch((err: Error) => {
    Object.assign(state, { phase: 'error', error: err.message });
    say(`error: ${err.message}`, true);
  }).finally(() => (trainButton.disabled = false));
});

downloadButton.addEventListener('click', () => {
  if (!download) return;
  const a = document.createElement('a');
  a.href = download.url;
  a.download = download.name;
  a.click();
});

showBackend();
fetch(SLICE_FILE)
  .then((r) => {
    if (!r.ok) throw new Error(`fetching ${SLICE_FILE}: HTTP ${r.status}`);
    return r.arrayBuffer();
  })
  .then((buffer) => {
    slice = decodeSlice(new Uint8Array(buffer));
    Object.assign(state, { phase: 'ready' });
    trainButton.disabled = false;
    say(`${slice.train.labels.length} training and ${slice.test.labels.length} held-out MNIST digits loaded; choose and press Train.`);
    // the backend's workers have started by now (the fetch yielded)
    showBackend();
  })
  .catch((err: Error) => {
    Object.assign(state, { phase: 'error', error: err.message });
    say(`error: ${err.message}`, true);
  });
