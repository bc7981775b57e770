/**
 * @file LoRA on quantized weights: loraQuant / merge / loraParameters, the method layers (QLoRA,
 * QA-LoRA, L4Q, LR-QAT, LoQT), LoftQ / LQ-LoRA initialisation and PEFT-layout adapter files.
 */
export * from './layer.js';
export * from './fused.js';
export * from './qlora.js';
export * from './qa-lora.js';
export * from './l4q.js';
export * from './lr-qat.js';
export * from './loqt.js';
export * from './init.js';
export * from './apply.js';
export * from './peft.js';
export { truncatedSvd, type LowRank } from './svd.js';
export * from './allocate.js';
