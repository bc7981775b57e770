/**
 * @file The model zoo: Llama (Hugging Face-compatible names and loading), ViT, and DDPM/DDIM
 * diffusion with a small UNet noise predictor; plus next-token sampling.
 */
export {
  Llama, LlamaModel, LlamaDecoderLayer, LlamaAttention, LlamaMLP, tinyLlamaConfig, configFromHf, configToHf,
  type LlamaConfig, type GenerateOptions, type ModelInitOptions,
} from './llama.js';
export { ViT, ViTBlock, PatchEmbed, mnistViTConfig, type ViTConfig } from './vit.js';
export { UNet, ResBlock, timestepEmbedding, mnistUNetConfig, type UNetConfig } from './unet.js';
export { DiT, DiTBlock, mnistDiTConfig, type DiTConfig } from './dit.js';
export { Diffusion, betaSchedule, type BetaSchedule, type DiffusionOptions, type NoisePredictor, type PredictionType, type SamplerOptions } from './diffusion.js';
export { sampleLogits, type SampleOptions } from './sampling.js';
