/**
 * @file Schedules for QAT: temperatures (relaxed/HESTIA), Hessian-trace temperature scales, and
 * full-precision → QAT phases (also fused with the LR cooldown).
 */
export * from './temperature.js';
export * from './hessian.js';
export * from './training.js';
