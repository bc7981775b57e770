/**
 * @file Quantized diffusion: PTQ4DM's timestep-aware calibration (calibration.ts), EfficientDM's
 * TALSQ (talsq.ts) and its LoRA QAT with data-free distillation from the float teacher (efficientdm.ts).
 */
export * from './calibration.js';
export * from './talsq.js';
export * from './efficientdm.js';
