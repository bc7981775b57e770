/**
 * @file Distillation for QAT/LoRA training: logit KD losses (kd.ts), the teacher wrapper
 * `distill` with feature losses and Teacher Intervention (distill.ts, intervention.ts).
 */
export * from './kd.js';
export * from './distill.js';
export * from './intervention.js';
